"""Generic JSON-lines source: one record per line.

``{"image": "relative/or/absolute/path.png", "report": "...", "findings": [{"phrase": "...",
"category": "...", "boxes": [[xmin, ymin, xmax, ymax], ...]}, ...], "image_id": "...",
"patient_id": "..."}`` -- ``image_id`` defaults to the image path, ``patient_id`` to the image id (stored
anonymised). Boxes are absolute pixels of that image file. Split files: ``{split}.jsonl`` in
``data_dir`` (train/validation/val/test) or the ``data_files`` option ``{split: path}``; a record may carry
a ``"split"`` field instead when a single file is given. Relative image paths are relative to the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .common import DataFormatError, file_signature, normalise_split
from .records import ImageRecord, build_from_records, check_images_exist, check_records

SOURCE = "jsonl"
REQUIRED_FIELDS = ("image", "report", "findings")


def _parse_line(path: Path, line_no: int, text: str, split: str | None) -> ImageRecord:
    where = f"{path}, row {line_no}"
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{where}: not valid JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise DataFormatError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for name in REQUIRED_FIELDS:
        if name not in obj:
            raise DataFormatError(
                f"{where}: field {name!r} is missing; required fields {list(REQUIRED_FIELDS)}"
            )
    if not isinstance(obj["report"], str):
        raise DataFormatError(f"{where}: field 'report' must be a string")
    if not isinstance(obj["findings"], list):
        raise DataFormatError(f"{where}: field 'findings' must be a list")
    findings = []
    for k, f in enumerate(obj["findings"]):
        for name in ("phrase", "boxes"):
            if not isinstance(f, dict) or name not in f:
                raise DataFormatError(f"{where}: field 'findings[{k}].{name}' is missing")
        if not isinstance(f["boxes"], list) or not f["boxes"]:
            raise DataFormatError(f"{where}: field 'findings[{k}].boxes' must be a non-empty list of boxes")
        boxes = []
        for j, b in enumerate(f["boxes"]):
            if (
                not isinstance(b, list)
                or len(b) != 4
                or not all(isinstance(v, (int, float)) or v is None for v in b)
            ):
                raise DataFormatError(
                    f"{where}: field 'findings[{k}].boxes[{j}]' = {b!r}, expected [xmin, ymin, xmax, ymax]"
                )
            boxes.append([float("nan") if v is None else float(v) for v in b])
        findings.append({"phrase": str(f["phrase"]), "category": str(f.get("category", "")), "boxes": boxes})
    rec_split = split
    if "split" in obj:
        rec_split = normalise_split(obj["split"], f"{where}: field 'split'")
    if rec_split is None:
        raise DataFormatError(f"{where}: field 'split' is missing and the file is not named after a split")
    image_path = Path(obj["image"])
    if not image_path.is_absolute():
        image_path = path.parent / image_path
    image_id = str(obj.get("image_id") or obj["image"])
    return ImageRecord(
        image_path=image_path,
        image_id=image_id,
        patient_key=str(obj.get("patient_id") or image_id),
        split=rec_split,
        where=where,
        report=obj["report"],
        keep_findings=findings,
    )


def build_jsonl(
    data_dir: str | os.PathLike | None = None,
    data_files: dict[str, str | os.PathLike] | str | os.PathLike | None = None,
    clip_tolerance_px: float = 2.0,
    cache_dir: str | None = None,
    progress: bool | None = None,
):
    """Build a ``DatasetDict`` from JSON-lines files (see the module docstring for the format)."""
    files: dict[str | None, Path] = {}
    if data_files is None:
        if data_dir is None:
            raise ValueError(
                "jsonl: give data_dir (with train.jsonl, validation.jsonl, test.jsonl) or data_files"
            )
        for p in sorted(Path(data_dir).glob("*.jsonl")):
            files[normalise_split(p.stem, str(p))] = p
        if not files:
            raise DataFormatError(f"{data_dir}: no *.jsonl files named after a split (train/validation/test)")
    elif isinstance(data_files, dict):
        files = {normalise_split(k, "data_files"): Path(v) for k, v in data_files.items()}
    else:
        files = {None: Path(data_files)}
    records = []
    for split, path in files.items():
        if not path.is_file():
            raise DataFormatError(f"{path}: file not found")
        with open(path, encoding="utf-8") as f:
            for line_no, text in enumerate(f, start=1):
                if text.strip():
                    records.append(_parse_line(path, line_no, text, split))
    check_records(records)
    check_images_exist(records, "image")
    return build_from_records(
        records,
        SOURCE,
        fingerprint_parts=(file_signature(files.values()), file_signature(r.image_path for r in records)),
        clip_tolerance_px=clip_tolerance_px,
        cache_dir=cache_dir,
        progress=progress,
    )
