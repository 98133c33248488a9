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
hashes), so ``patient_id`` is the keyed hash of the image id (HMAC-SHA256, secret from ``id_secret`` /
``$MEDRG_ID_SECRET`` / ``<data_dir>/.medrg_id_secret``) and splits are disjoint per image. ``validation`` is
carved from train by ``val_fraction``. There are no reports: one is written from label + position.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from .common import (
    BuildStats,
    DataFormatError,
    file_signature,
    hash_split,
    parse_float,
    read_csv_rows,
    resolve_id_secret,
)
from .records import BoxAnnotation, BuildOptions, ImageRecord, build_from_records

SOURCE = "vindr-cxr"
COLUMNS = ("image_id", "rad_id", "class_name", "x_min", "y_min", "x_max", "y_max")
CLASSES = (
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture", "Consolidation",
    "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung Opacity", "Lung cavity", "Lung cyst",
    "Mediastinal shift", "Nodule/Mass", "Other lesion", "Pleural effusion", "Pleural thickening",
    "Pneumothorax", "Pulmonary fibrosis", "Rib fracture", "No finding",
)  # fmt: skip
IMAGE_SUFFIXES = (".dicom", ".dcm", ".png", ".jpg", ".jpeg")


def cluster_boxes(boxes: list[list[float]], iou_threshold: float) -> list[list[list[float]]]:
    """Greedy single-link clustering of boxes (of one class, several readers) by IoU (xyxy pixels).

    A box joins the first cluster holding a box with IoU >= ``iou_threshold``, else starts a new cluster.
    The IoU is transformers' ``box_iou``, as in the processor's per-phrase box suppression (0 for two boxes
    of zero area).
    """
    import torch
    from transformers.loss.loss_for_object_detection import box_iou  # on use: that module imports scipy

    clusters: list[list[list[float]]] = []
    for b in boxes:
        for c in clusters:
            iou, _ = box_iou(torch.tensor([b], dtype=torch.float64), torch.tensor(c, dtype=torch.float64))
            if bool((iou.nan_to_num(0.0) >= iou_threshold).any()):
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


def _read_meta(image_meta_file: str | os.PathLike | None) -> dict[str, tuple[float, float]]:
    """image_id -> original (width, height) from a Kaggle-style ``image_id, dim0, dim1`` CSV."""
    if image_meta_file is None:
        return {}
    _, rows = read_csv_rows(image_meta_file, ("image_id", "dim0", "dim1"))
    return {
        r["image_id"]: (
            parse_float(r["dim1"], f"{image_meta_file}, row {line}", "dim1"),
            parse_float(r["dim0"], f"{image_meta_file}, row {line}", "dim0"),
        )
        for line, r in rows
    }


def _read_part(data_dir: Path, csv_path: Path, part: str, meta: dict, split_of, stats: BuildStats):
    """The records of one ``annotations_{part}.csv`` (one per image, every reader's boxes)."""
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
        if iid not in recs:
            image = _find_image(data_dir / part, iid)
            recs[iid] = ImageRecord(image, iid, iid, split_of(part, iid), where, frame=meta.get(iid))
        if cls == "No finding":
            if any(row[k].strip() for k in ("x_min", "y_min", "x_max", "y_max")):
                raise DataFormatError(f"{where}: field 'x_min..y_max' must be empty for class 'No finding'")
            no_finding_rows[iid] += 1
            continue
        box = [parse_float(row[k], where, k) for k in ("x_min", "y_min", "x_max", "y_max")]
        recs[iid].boxes.append(BoxAnnotation(cls, box, where, "x_min,y_min,x_max,y_max"))
    mixed = sum(1 for iid in no_finding_rows if recs[iid].boxes)
    if mixed:
        stats.skip("'No finding' reader rows on images with other readers' boxes (boxes kept)", mixed)
    return list(recs.values())


def _group_lesions(records: list[ImageRecord], fuse_iou: float) -> None:
    """Cluster each class's boxes across readers into lesions: one finding (group) per cluster."""
    for rec in records:
        by_class: dict[str, list[BoxAnnotation]] = defaultdict(list)
        for ann in rec.boxes:
            by_class[ann.label].append(ann)
        for cls, anns in by_class.items():
            lookup = {id(a.box): a for a in anns}
            for k, cluster in enumerate(cluster_boxes([a.box for a in anns], fuse_iou)):
                for b in cluster:
                    lookup[id(b)].group = f"{cls}#{k}"


def _collect(data_dir: Path, val_fraction: float, split_seed: int, image_meta_file, stats: BuildStats):
    """(records of annotations_train.csv and annotations_test.csv, the annotation files read)."""
    ann_dir = data_dir / "annotations" if (data_dir / "annotations").is_dir() else data_dir
    csv_files = [
        p for p in (ann_dir / f"annotations_{part}.csv" for part in ("train", "test")) if p.is_file()
    ]
    if not csv_files:
        raise DataFormatError(f"{ann_dir}: no annotations_train.csv or annotations_test.csv found")
    meta = _read_meta(image_meta_file)
    fractions = {"train": 1 - val_fraction, "validation": val_fraction}

    def split_of(part: str, iid: str) -> str:
        return "test" if part == "test" else hash_split(iid, fractions, split_seed)

    records = [
        r for p in csv_files for r in _read_part(data_dir, p, p.stem.split("_")[1], meta, split_of, stats)
    ]
    return records, csv_files


def _check_options(readers: str, fuse_iou: float, val_fraction: float) -> None:
    if readers not in ("keep", "fuse"):
        raise ValueError(f"readers must be 'keep' or 'fuse', got {readers!r}")
    if (
        isinstance(val_fraction, bool)
        or not isinstance(val_fraction, (int, float))
        or not 0 <= val_fraction < 1
    ):
        raise ValueError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}")
    if isinstance(fuse_iou, bool) or not isinstance(fuse_iou, (int, float)) or not 0 < fuse_iou <= 1:
        raise ValueError(f"fuse_iou must be a number in (0, 1], got {fuse_iou!r}")


def _mean_box(boxes: list[list[float]]) -> list[list[float]]:
    return [[sum(b[i] for b in boxes) / len(boxes) for i in range(4)]]


def build_vindr_cxr(
    data_dir: str | os.PathLike,
    readers: str = "keep",
    fuse_iou: float = 0.4,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    image_meta_file: str | os.PathLike | None = None,
    clip_tolerance_px: float = 2.0,
    id_secret: str | bytes | None = None,
    cache_dir: str | None = None,
    progress: bool | None = None,
    streaming: bool = False,
):
    """Build VinDr-CXR as a ``DatasetDict`` (see the module docstring; ``id_secret``: key of the ids)."""
    _check_options(readers, fuse_iou, val_fraction)
    data_dir, stats = Path(data_dir), BuildStats(SOURCE)
    records, csv_files = _collect(data_dir, val_fraction, split_seed, image_meta_file, stats)
    _group_lesions(records, fuse_iou)
    return build_from_records(
        records,
        SOURCE,
        fingerprint_parts=(
            readers,
            fuse_iou,
            val_fraction,
            split_seed,
            file_signature(r.image_path for r in records),
            file_signature(csv_files + ([Path(image_meta_file)] if image_meta_file else [])),
        ),  # fmt: skip
        options=BuildOptions(clip_tolerance_px, cache_dir, progress, streaming),
        id_secret=resolve_id_secret(id_secret, data_dir),
        image_field="image_id",
        fuse=_mean_box if readers == "fuse" else None,
        stats=stats,
    )
