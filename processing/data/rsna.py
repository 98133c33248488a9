"""RSNA Pneumonia Detection Challenge: ``stage_2_train_labels.csv`` + ``stage_2_train_images/*.dcm``.

CSV columns ``patientId, x, y, width, height, Target``. ``Target = 1`` rows carry one box of a lung opacity
suggestive of pneumonia; ``Target = 0`` rows have empty box fields and mean no such opacity (an image with
empty ``findings``). A patient with both kinds of rows is an error. Boxes are pixels of the DICOM (1024 px).
There are no reports: one is written from the boxes' positions. ``patientId`` (one image per patient) is
also the DICOM PatientID, so ``image_id`` and ``patient_id`` store it only anonymised; splits are patient-disjoint hash splits (``split_fractions``).
"""

from __future__ import annotations

import os
from pathlib import Path

from .common import DataFormatError, anonymise_id, file_signature, hash_split, parse_float, read_csv_rows
from .records import BoxAnnotation, ImageRecord, build_from_records, check_images_exist, check_records

SOURCE = "rsna-pneumonia"
COLUMNS = ("patientId", "x", "y", "width", "height", "Target")
LABEL = "opacity"


def build_rsna(
    data_dir: str | os.PathLike,
    annotation_file: str | os.PathLike | None = None,
    images_dir: str | os.PathLike | None = None,
    split_fractions: dict[str, float] | None = None,
    split_seed: int = 0,
    clip_tolerance_px: float = 2.0,
    cache_dir: str | None = None,
    progress: bool | None = None,
):
    """Build RSNA Pneumonia as a ``DatasetDict`` (see the module docstring)."""
    data_dir = Path(data_dir)
    csv_path = Path(annotation_file) if annotation_file else data_dir / "stage_2_train_labels.csv"
    images_root = Path(images_dir) if images_dir else data_dir / "stage_2_train_images"
    fractions = split_fractions or {"train": 0.8, "validation": 0.1, "test": 0.1}
    _, rows = read_csv_rows(csv_path, COLUMNS)
    records: dict[str, ImageRecord] = {}
    target_of: dict[str, tuple[str, int]] = {}
    seen: dict[tuple, int] = {}
    for line, row in rows:
        where = f"{csv_path}, row {line}"
        pid = row["patientId"]
        if not pid:
            raise DataFormatError(f"{where}: field 'patientId' is empty")
        if row["Target"] not in ("0", "1"):
            raise DataFormatError(f"{where}: field 'Target' = {row['Target']!r}, expected 0 or 1")
        target = row["Target"]
        key = (pid, row["x"], row["y"], row["width"], row["height"], target)
        if key in seen:
            raise DataFormatError(f"{where}: duplicate of row {seen[key]} (same patientId, box and Target)")
        seen[key] = line
        if pid in target_of and target_of[pid][0] != target:
            raise DataFormatError(
                f"{where}: field 'Target' = {target} contradicts row {target_of[pid][1]} of the same patientId"
            )
        target_of.setdefault(pid, (target, line))
        rec = records.get(pid)
        if rec is None:
            rec = ImageRecord(
                image_path=images_root / f"{pid}.dcm",
                # patientId is also the DICOM PatientID tag: store it only anonymised
                image_id=anonymise_id(f"rsna-image:{pid}", prefix="img_"),
                patient_key=pid,
                split=hash_split(pid, fractions, split_seed),
                where=where,
            )
            records[pid] = rec
        box_fields = [row[k] for k in ("x", "y", "width", "height")]
        if target == "0":
            if any(v.strip() for v in box_fields):
                raise DataFormatError(f"{where}: field 'x,y,width,height' must be empty when Target = 0")
            continue
        x, y, w, h = (parse_float(row[k], where, k) for k in ("x", "y", "width", "height"))
        if w <= 0 or h <= 0:
            raise DataFormatError(f"{where}: field 'width/height' = {w}x{h} must be positive")
        rec.boxes.append(BoxAnnotation(LABEL, [x, y, x + w, y + h], where, "x,y,width,height"))
    recs = list(records.values())
    check_records(recs)
    check_images_exist(recs, "patientId")
    return build_from_records(
        recs,
        SOURCE,
        fingerprint_parts=(
            file_signature([csv_path]),
            str(images_root),
            sorted(fractions.items()),
            split_seed,
            file_signature(r.image_path for r in recs),
        ),
        clip_tolerance_px=clip_tolerance_px,
        cache_dir=cache_dir,
        progress=progress,
    )
