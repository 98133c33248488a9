"""ChestX-ray8 (NIH) boxes: the official ``BBox_List_2017.csv`` + an image folder -> the MedRG schema.

- Boxes are given in the original 1024 x 1024 frame (``original_size``); they are mapped to the size of the
  image actually read (downscaled copies are common).
- There are no reports: one is written per image from label + box position, with varied templates and the
  radiological convention (patient right = image left). Boxes of one label in the same side/zone form one
  finding (one phrase, several boxes).
- Splits: ``{split}_images.txt`` / ``{split}_list.txt`` files in ``data_dir`` (``train``, ``val``/``validation``,
  ``test``) or the ``split_files`` option; otherwise patient-disjoint hash splits (``split_fractions``).
  The patient id is the image-name prefix before ``_`` (already de-identified by NIH), stored anonymised.
- Images that are listed in a split file but have no box are not included (count logged): ChestX-ray8's
  split lists cover all 112k images while boxes exist for 880.
"""

from __future__ import annotations

import logging
import os
import random
from collections import defaultdict
from pathlib import Path

from .common import (
    BuildStats,
    DataFormatError,
    anonymise_id,
    build_dataset_dict,
    check_box,
    check_patient_disjoint,
    file_signature,
    hash_split,
    normalise_split,
    parse_float,
    schema_row,
)
from .report_text import location_phrase, side_of_box, write_report, zone_of_box

logger = logging.getLogger(__name__)

SOURCE = "chestxray8"
LABELS = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltrate",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
)
ANNOTATION_FILE = "BBox_List_2017.csv"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _read_bbox_csv(path: Path) -> list[tuple[int, str, str, list[float]]]:
    """(line, image_name, label, [x, y, w, h]) rows. The official header is
    ``Image Index,Finding Label,Bbox [x,y,w,h],,,`` (the box header is split by its own commas)."""
    import csv

    if not path.is_file():
        raise DataFormatError(f"{path}: annotation file not found")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        for col in ("Image Index", "Finding Label"):
            if col not in header:
                raise DataFormatError(f"{path}: missing column {col!r}; found columns {header}")
        box_start = next((i for i, h in enumerate(header) if h.lower().startswith("bbox")), None)
        if box_start is None:
            raise DataFormatError(f"{path}: missing column 'Bbox [x,y,w,h]'; found columns {header}")
        i_img, i_lab = header.index("Image Index"), header.index("Finding Label")
        rows = []
        for line, cells in enumerate(reader, start=2):
            if not any(c.strip() for c in cells):
                continue
            where = f"{path}, row {line}"
            if len(cells) < box_start + 4:
                raise DataFormatError(f"{where}: field 'Bbox [x,y,w,h]' has fewer than 4 values")
            box = [parse_float(cells[box_start + k], where, f"Bbox {'xywh'[k]}") for k in range(4)]
            rows.append((line, cells[i_img].strip(), cells[i_lab].strip(), box))
    return rows


def _find_split_files(data_dir: Path) -> dict[str, Path]:
    found = {}
    for name in ("train", "training", "val", "valid", "validation", "test"):
        for pattern in (f"{name}_images.txt", f"{name}_list.txt"):
            p = data_dir / pattern
            if p.is_file():
                found[normalise_split(name, str(p))] = p
    return found


def _index_images(data_dir: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for root, _dirs, files in os.walk(data_dir):
        for name in files:
            if name.lower().endswith(IMAGE_SUFFIXES):
                index.setdefault(name, Path(root) / name)
    return index


def build_chestxray8(
    data_dir: str | os.PathLike,
    split_files: dict[str, str | os.PathLike] | None = None,
    split_fractions: dict[str, float] | None = None,
    split_seed: int = 0,
    original_size: int = 1024,
    clip_tolerance_px: float = 2.0,
    report_seed: int = 0,
    cache_dir: str | None = None,
    progress: bool | None = None,
):
    """Build ChestX-ray8 boxes as a ``DatasetDict`` (see the module docstring for the policies)."""
    from PIL import Image

    from .images import _to_gray8, to_png_bytes

    data_dir = Path(data_dir)
    csv_path = data_dir / ANNOTATION_FILE
    rows = _read_bbox_csv(csv_path)
    stats = BuildStats(SOURCE)

    seen: dict[tuple, int] = {}
    per_image: dict[str, list[tuple[int, str, list[float]]]] = defaultdict(list)
    for line, name, label, box in rows:
        where = f"{csv_path}, row {line}"
        if label not in LABELS:
            raise DataFormatError(
                f"{where}: field 'Finding Label' = {label!r} is not a known label {list(LABELS)}"
            )
        key = (name, label, tuple(round(v, 3) for v in box))
        if key in seen:
            raise DataFormatError(
                f"{where}: duplicate of row {seen[key]} (same 'Image Index', 'Finding Label', 'Bbox')"
            )
        seen[key] = line
        per_image[name].append((line, label, box))

    # splits
    if split_files is None:
        split_paths = _find_split_files(data_dir)
    else:
        split_paths = {normalise_split(k, "split_files"): Path(v) for k, v in split_files.items()}
    image_split: dict[str, str] = {}
    if split_paths:
        for split, p in split_paths.items():
            if not p.is_file():
                raise DataFormatError(f"split file {p} (split {split!r}) not found")
            for line, raw in enumerate(p.read_text().splitlines(), start=1):
                name = raw.strip()
                if not name:
                    continue
                if name in image_split and image_split[name] != split:
                    raise DataFormatError(
                        f"{p}, row {line}: image {name} is also listed in split {image_split[name]!r}"
                    )
                image_split[name] = split
        unlisted = [n for n in per_image if n not in image_split]
        if unlisted:
            raise DataFormatError(
                f"{csv_path}: {len(unlisted)} boxed image(s) are in no split file (first: {unlisted[0]}); "
                f"split files: {[str(p) for p in split_paths.values()]}"
            )
        n_no_box = sum(1 for n in image_split if n not in per_image)
        if n_no_box:
            stats.skip("listed in a split file but without a box in BBox_List_2017.csv", n_no_box)
    else:
        fractions = split_fractions or {"train": 0.8, "validation": 0.1, "test": 0.1}
        for name in per_image:
            image_split[name] = hash_split(name.split("_")[0], fractions, split_seed)

    by_split: dict[str, list[str]] = defaultdict(list)
    for name in sorted(per_image):
        by_split[image_split[name]].append(name)
    check_patient_disjoint(
        {s: [(n.split("_")[0], f"image {n}") for n in names] for s, names in by_split.items()}
    )

    index = _index_images(data_dir)
    missing = [n for n in per_image if n not in index]
    if missing:
        line = per_image[missing[0]][0][0]
        raise DataFormatError(
            f"{csv_path}, row {line}: image file {missing[0]} (field 'Image Index') not found under {data_dir}"
            + (f" ({len(missing)} missing in all)" if len(missing) > 1 else "")
        )

    def make_row(name: str) -> dict:
        path = index[name]
        where = f"{csv_path}, row {per_image[name][0][0]}"
        try:
            with Image.open(path) as im:
                im.load()
                img = _to_gray8(im)
        except (OSError, SyntaxError, ValueError) as e:
            raise DataFormatError(f"{where}: image file {path} is unreadable: {e}") from None
        w, h = img.size
        sx, sy = w / original_size, h / original_size
        groups: dict[tuple, list[list[float]]] = defaultdict(list)
        for line, label, (x, y, bw, bh) in per_image[name]:
            box = check_box(
                [x * sx, y * sy, (x + bw) * sx, (y + bh) * sy],
                w,
                h,
                f"{csv_path}, row {line}",
                "Bbox [x,y,w,h]",
                stats,
                clip_tolerance_px * max(sx, sy),
            )
            side = "" if label.lower() == "cardiomegaly" else side_of_box(box, w)
            zone = "" if label.lower() == "cardiomegaly" else zone_of_box(box, h)
            groups[(label, side, zone)].append(box)
        rng = random.Random(f"{report_seed}:{name}")
        findings = []
        for (label, side, zone), boxes in groups.items():
            phrase = location_phrase(label.lower(), side, zone, rng)
            findings.append({"phrase": phrase, "category": label.lower(), "boxes": boxes})
        absent = [
            k
            for k in ("pneumothorax", "effusion", "cardiomegaly", "mass", "nodule", "atelectasis")
            if k not in {f["category"] for f in findings}
        ]
        report = write_report([f["phrase"] for f in findings], absent, rng)
        return schema_row(
            to_png_bytes(img), report, findings, name, anonymise_id(f"nih:{name.split('_')[0]}"), SOURCE
        )

    dd = build_dataset_dict(
        dict(by_split),
        make_row,
        fingerprint_parts=(
            "chestxray8",
            original_size,
            clip_tolerance_px,
            report_seed,
            split_seed,
            sorted((split_fractions or {}).items()),
            file_signature([csv_path, *split_paths.values()]),
            sorted((k, str(v)) for k, v in index.items() if k in per_image),
        ),
        cache_dir=cache_dir,
        desc="ChestX-ray8",
        progress=progress,
    )
    stats.log()
    return dd
