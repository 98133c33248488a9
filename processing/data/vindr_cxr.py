"""VinDr-CXR (PhysioNet): ``annotations_{train,test}.csv`` + ``{train,test}/<image_id>.dicom`` (or PNG/JPEG).

CSV columns ``image_id, rad_id, class_name, x_min, y_min, x_max, y_max`` (``class_id`` optional). Rows of
class ``No finding`` have empty box fields. Several radiologists (``rad_id``) annotate each training image:

- ``readers="keep"`` (default): boxes of one class are clustered across readers (IoU >= ``fuse_iou``); a
  cluster is one finding holding every reader's box.
- ``readers="fuse"``: each cluster becomes one finding with one box, the coordinate-wise mean.

Policy for mixed readers: an image is "no finding" only if it has no box at all; "No finding" rows of some
readers next to boxes of others are counted in the log. Boxes are pixels of the original DICOM; when the
images are downscaled PNG/JPEG copies give ``image_meta_file`` (CSV ``image_id, dim0, dim1`` = original
height, width, the Kaggle convention). VinDr-CXR publishes no patient ids (one image per study, ids are
hashes), so ``patient_id`` is the anonymised image id and splits are disjoint per image. ``validation`` is
carved from train by ``val_fraction``. There are no reports: one is written from label + position.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from .common import BuildStats, DataFormatError, file_signature, hash_split, parse_float, read_csv_rows
from .records import BoxAnnotation, ImageRecord, build_from_records, check_images_exist, check_records

SOURCE = "vindr-cxr"
COLUMNS = ("image_id", "rad_id", "class_name", "x_min", "y_min", "x_max", "y_max")
CLASSES = (
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture", "Consolidation",
    "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung Opacity", "Lung cavity", "Lung cyst",
    "Mediastinal shift", "Nodule/Mass", "Other lesion", "Pleural effusion", "Pleural thickening",
    "Pneumothorax", "Pulmonary fibrosis", "Rib fracture", "No finding",
)  # fmt: skip
IMAGE_SUFFIXES = (".dicom", ".dcm", ".png", ".jpg", ".jpeg")


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def cluster_boxes(boxes: list[list[float]], iou_threshold: float) -> list[list[list[float]]]:
    """Greedy single-link clustering of boxes (of one class, several readers) by IoU."""
    clusters: list[list[list[float]]] = []
    for b in boxes:
        for c in clusters:
            if any(_iou(b, o) >= iou_threshold for o in c):
                c.append(b)
                break
        else:
            clusters.append([b])
    return clusters


def _find_image(split_dir: Path, image_id: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        p = split_dir / f"{image_id}{suffix}"
        if p.is_file():
            return p
    return split_dir / f"{image_id}.dicom"


def build_vindr_cxr(
    data_dir: str | os.PathLike,
    readers: str = "keep",
    fuse_iou: float = 0.4,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    image_meta_file: str | os.PathLike | None = None,
    clip_tolerance_px: float = 2.0,
    cache_dir: str | None = None,
    progress: bool | None = None,
):
    """Build VinDr-CXR as a ``DatasetDict`` (see the module docstring)."""
    if readers not in ("keep", "fuse"):
        raise ValueError(f"readers must be 'keep' or 'fuse', got {readers!r}")
    data_dir = Path(data_dir)
    ann_dir = data_dir / "annotations" if (data_dir / "annotations").is_dir() else data_dir
    meta: dict[str, tuple[float, float]] = {}
    meta_files = []
    if image_meta_file is not None:
        meta_files.append(Path(image_meta_file))
        _, mrows = read_csv_rows(image_meta_file, ("image_id", "dim0", "dim1"))
        for line, r in mrows:
            where = f"{image_meta_file}, row {line}"
            meta[r["image_id"]] = (
                parse_float(r["dim1"], where, "dim1"),
                parse_float(r["dim0"], where, "dim0"),
            )
    stats = BuildStats(SOURCE)
    records: list[ImageRecord] = []
    csv_files = []
    for part in ("train", "test"):
        csv_path = ann_dir / f"annotations_{part}.csv"
        if not csv_path.is_file():
            continue
        csv_files.append(csv_path)
        _, rows = read_csv_rows(csv_path, COLUMNS)
        recs: dict[str, ImageRecord] = {}
        seen: dict[tuple, int] = {}
        no_finding_rows: dict[str, int] = defaultdict(int)
        for line, row in rows:
            where = f"{csv_path}, row {line}"
            iid, cls = row["image_id"], row["class_name"]
            if cls not in CLASSES:
                raise DataFormatError(
                    f"{where}: field 'class_name' = {cls!r} is not a known class {list(CLASSES)}"
                )
            key = (iid, row["rad_id"], cls, row["x_min"], row["y_min"], row["x_max"], row["y_max"])
            if key in seen:
                raise DataFormatError(
                    f"{where}: duplicate of row {seen[key]} (same image_id, rad_id, class_name, box)"
                )
            seen[key] = line
            rec = recs.get(iid)
            if rec is None:
                split = (
                    "test"
                    if part == "test"
                    else hash_split(iid, {"train": 1 - val_fraction, "validation": val_fraction}, split_seed)
                )
                rec = ImageRecord(
                    image_path=_find_image(data_dir / part, iid),
                    image_id=iid,
                    patient_key=iid,
                    split=split,
                    where=where,
                    frame=meta.get(iid),
                )
                recs[iid] = rec
            if cls == "No finding":
                if any(row[k].strip() for k in ("x_min", "y_min", "x_max", "y_max")):
                    raise DataFormatError(
                        f"{where}: field 'x_min..y_max' must be empty for class 'No finding'"
                    )
                no_finding_rows[iid] += 1
                continue
            box = [parse_float(row[k], where, k) for k in ("x_min", "y_min", "x_max", "y_max")]
            rec.boxes.append(BoxAnnotation(cls, box, where, "x_min,y_min,x_max,y_max"))
        mixed = sum(1 for iid, n in no_finding_rows.items() if recs[iid].boxes)
        if mixed:
            stats.skip("'No finding' reader rows on images with other readers' boxes (boxes kept)", mixed)
        records.extend(recs.values())
    if not csv_files:
        raise DataFormatError(f"{ann_dir}: no annotations_train.csv or annotations_test.csv found")
    # cluster each class's boxes across readers into lesions: one finding per cluster
    for rec in records:
        by_class: dict[str, list[BoxAnnotation]] = defaultdict(list)
        for ann in rec.boxes:
            by_class[ann.label].append(ann)
        for cls, anns in by_class.items():
            clusters = cluster_boxes([a.box for a in anns], fuse_iou)
            lookup = {id(a.box): a for a in anns}
            for k, cluster in enumerate(clusters):
                for b in cluster:
                    lookup[id(b)].group = f"{cls}#{k}"
    check_records(records)
    check_images_exist(records, "image_id")

    def fuse(boxes: list[list[float]]) -> list[list[float]]:
        return [[sum(b[i] for b in boxes) / len(boxes) for i in range(4)]]

    return build_from_records(
        records,
        SOURCE,
        fingerprint_parts=(
            readers,
            fuse_iou,
            val_fraction,
            split_seed,
            file_signature(csv_files + meta_files),
            file_signature(r.image_path for r in records),
        ),
        clip_tolerance_px=clip_tolerance_px,
        cache_dir=cache_dir,
        progress=progress,
        fuse=fuse if readers == "fuse" else None,
        stats=stats,
    )
