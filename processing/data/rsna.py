"""RSNA Pneumonia Detection Challenge: ``stage_2_train_labels.csv`` + ``stage_2_train_images/*.dcm``.

CSV columns ``patientId, x, y, width, height, Target``. ``Target = 1`` rows carry one box of a lung opacity
suggestive of pneumonia; ``Target = 0`` rows have empty box fields and mean no such opacity (an image with
empty ``findings``). A patient with both kinds of rows is an error. Boxes are pixels of the DICOM (1024 px).
There are no reports: one is written from the boxes' positions. ``patientId`` (one image per patient) is
also the DICOM PatientID, so ``image_id`` and ``patient_id`` store it only as keyed hashes (HMAC-SHA256,
``img_...`` / ``p_...``; secret from ``id_secret`` / ``$MEDRG_ID_SECRET`` / ``<data_dir>/.medrg_id_secret``,
see ``common.resolve_id_secret``); splits are patient-disjoint hash splits (``split_fractions``).
"""

from __future__ import annotations

import os
from pathlib import Path

from .common import (
    DataFormatError,
    file_signature,
    hash_split,
    keyed_id,
    parse_float,
    read_csv_rows,
    resolve_id_secret,
)
from .records import BoxAnnotation, BuildOptions, ImageRecord, build_from_records

SOURCE = "rsna-pneumonia"
COLUMNS = ("patientId", "x", "y", "width", "height", "Target")
LABEL = "opacity"


def _target_of(where: str, row: dict, target_of: dict[str, tuple[str, int]], line: int) -> str:
    """The row's ``Target`` ("0"/"1"); contradicting an earlier row of the same patient is an error."""
    pid, target = row["patientId"], row["Target"]
    if not pid:
        raise DataFormatError(f"{where}: field 'patientId' is empty")
    if target not in ("0", "1"):
        raise DataFormatError(f"{where}: field 'Target' = {target!r}, expected 0 or 1")
    if pid in target_of and target_of[pid][0] != target:
        raise DataFormatError(
            f"{where}: field 'Target' = {target} contradicts row {target_of[pid][1]} of the same patientId"
        )
    target_of.setdefault(pid, (target, line))
    return target


def _records(csv_path: Path, images_root: Path, split_of, secret: bytes) -> list[ImageRecord]:
    _, rows = read_csv_rows(csv_path, COLUMNS)
    records: dict[str, ImageRecord] = {}
    target_of: dict[str, tuple[str, int]] = {}
    seen: dict[tuple, int] = {}
    for line, row in rows:
        where = f"{csv_path}, row {line}"
        target = _target_of(where, row, target_of, line)
        pid = row["patientId"]
        key = (pid, row["x"], row["y"], row["width"], row["height"], target)
        if key in seen:
            raise DataFormatError(f"{where}: duplicate of row {seen[key]} (same patientId, box and Target)")
        seen[key] = line
        if pid not in records:
            # patientId is also the DICOM PatientID tag: published only as a keyed hash
            image_id = keyed_id(f"rsna-image:{pid}", secret, prefix="img_")
            records[pid] = ImageRecord(images_root / f"{pid}.dcm", image_id, pid, split_of(pid), where)
        if target == "0":
            if any(row[k].strip() for k in ("x", "y", "width", "height")):
                raise DataFormatError(f"{where}: field 'x,y,width,height' must be empty when Target = 0")
            continue
        x, y, w, h = (parse_float(row[k], where, k) for k in ("x", "y", "width", "height"))
        if w <= 0 or h <= 0:
            raise DataFormatError(f"{where}: field 'width/height' = {w}x{h} must be positive")
        records[pid].boxes.append(BoxAnnotation(LABEL, [x, y, x + w, y + h], where, "x,y,width,height"))
    return list(records.values())


def build_rsna(
    data_dir: str | os.PathLike,
    annotation_file: str | os.PathLike | None = None,
    images_dir: str | os.PathLike | None = None,
    split_fractions: dict[str, float] | None = None,
    split_seed: int = 0,
    clip_tolerance_px: float = 2.0,
    id_secret: str | bytes | None = None,
    cache_dir: str | None = None,
    progress: bool | None = None,
    streaming: bool = False,
):
    """Build RSNA Pneumonia as a ``DatasetDict`` (see the module docstring; ``id_secret``: key of the ids)."""
    data_dir = Path(data_dir)
    csv_path = Path(annotation_file) if annotation_file else data_dir / "stage_2_train_labels.csv"
    images_root = Path(images_dir) if images_dir else data_dir / "stage_2_train_images"
    fractions = split_fractions or {"train": 0.8, "validation": 0.1, "test": 0.1}
    secret = resolve_id_secret(id_secret, data_dir)
    recs = _records(csv_path, images_root, lambda pid: hash_split(pid, fractions, split_seed), secret)
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
        options=BuildOptions(clip_tolerance_px, cache_dir, progress, streaming),
        id_secret=secret,
        image_field="patientId",
    )
