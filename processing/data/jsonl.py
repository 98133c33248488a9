"""Generic JSON-lines source: one record per line.

``{"image": "relative/or/absolute/path.png", "report": "...", "findings": [{"phrase": "...",
"category": "...", "boxes": [[xmin, ymin, xmax, ymax], ...]}, ...], "image_id": "...",
"patient_id": "..."}``. Boxes are absolute pixels of that image file (numbers; booleans are refused).
``phrase`` and ``report`` are non-empty strings; ``category`` an optional string.

Files: ``{split}.jsonl`` in ``data_dir`` (train/training, validation/val/valid/dev, test/testing; two files
naming the same split are an error naming both), a single ``*.jsonl`` of any other name (e.g.
``data.jsonl``) becomes the ``train`` split, or the ``data_files`` option ``{split: path}`` / one path. A
record's own ``"split"`` field overrides its file's split (needed for a single path in ``data_files``).
Files are UTF-8 (a BOM and CRLF line endings are accepted); an empty file is an error.

Images: a relative path is relative to the JSONL file; the resolved path must lie inside the data folder
(``data_dir``, else the JSONL file's folder): ``..`` or an absolute path leading outside is a
``DataFormatError`` naming the row unless ``allow_outside_data_dir=True``.

Published ids (no paths, ever): ``image_id`` is the record's ``"image_id"`` (which must not contain ``/`` or
``\\``), else by default (``image_ids="hash"``) a keyed hash ``img_<16 hex>`` of the image path relative to
the data folder, or with ``image_ids="stem"`` the image file's stem only (e.g. ``a`` for ``x/y/a.png``: only
when file names carry no identifier). ``patient_id`` is the keyed hash of the record's ``"patient_id"`` (else
of its image: one patient per image). The key is a secret (HMAC-SHA256) from ``id_secret``, else
``$MEDRG_ID_SECRET``, else ``<data folder>/.medrg_id_secret`` generated once (mode 0600; see
``common.resolve_id_secret``).
"""

from __future__ import annotations

import os
from pathlib import Path

from .common import (
    SPLIT_ALIASES,
    DataFormatError,
    file_signature,
    iter_json_lines,
    keyed_id,
    normalise_split,
    resolve_id_secret,
)
from .records import BuildOptions, ImageRecord, build_from_records

SOURCE = "jsonl"
REQUIRED_FIELDS = ("image", "report", "findings")
IMAGE_ID_MODES = ("hash", "stem")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _string(obj: dict, name: str, where: str, required: bool = True, field: str | None = None) -> str | None:
    """``obj[name]`` as a non-empty string; ``None`` when absent/null and not ``required``."""
    value = obj.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        shown = "is empty" if isinstance(value, str) else f"= {value!r:.60}"
        raise DataFormatError(f"{where}: field {(field or name)!r} {shown}, expected a non-empty string")
    return value


def _box(b, where: str, field: str) -> list[float]:
    if not isinstance(b, list) or len(b) != 4 or not all(_is_number(v) or v is None for v in b):
        raise DataFormatError(
            f"{where}: field {field!r} = {b!r:.80}, expected [xmin, ymin, xmax, ymax] numbers"
        )
    return [float("nan") if v is None else float(v) for v in b]


def _findings(value, where: str) -> list[dict]:
    if not isinstance(value, list):
        raise DataFormatError(f"{where}: field 'findings' must be a list")
    findings = []
    for k, f in enumerate(value):
        if not isinstance(f, dict):
            raise DataFormatError(f"{where}: field 'findings[{k}]' = {f!r:.60}, expected an object")
        for name in ("phrase", "boxes"):
            if name not in f:
                raise DataFormatError(f"{where}: field 'findings[{k}].{name}' is missing")
        phrase = _string(f, "phrase", where, field=f"findings[{k}].phrase")
        category = f.get("category")
        if category is not None and not isinstance(category, str):
            raise DataFormatError(
                f"{where}: field 'findings[{k}].category' = {category!r:.60}, expected a string"
            )
        if not isinstance(f["boxes"], list) or not f["boxes"]:
            raise DataFormatError(f"{where}: field 'findings[{k}].boxes' must be a non-empty list of boxes")
        boxes = [_box(b, where, f"findings[{k}].boxes[{j}]") for j, b in enumerate(f["boxes"])]
        findings.append({"phrase": phrase.strip(), "category": category or "", "boxes": boxes})
    return findings


def _image_path(value: str, path: Path, root: Path, where: str, allow_outside: bool) -> tuple[Path, str]:
    """(path to read, path relative to ``root`` as posix); outside ``root`` is an error unless allowed."""
    image = Path(os.path.normpath((path.parent / value).absolute()))
    try:
        rel = image.relative_to(Path(os.path.normpath(root.absolute())))
    except ValueError:
        if not allow_outside:
            raise DataFormatError(
                f"{where}: field 'image' = {value!r} lies outside the data folder {root}; move the image into "
                "it or pass allow_outside_data_dir=True"
            ) from None
        return image, image.as_posix()
    return image, rel.as_posix()


def _image_id(obj: dict, rel: str, where: str, mode: str, secret: bytes) -> str:
    given = _string(obj, "image_id", where, required=False)
    if given is not None:
        if "/" in given or "\\" in given:
            raise DataFormatError(
                f"{where}: field 'image_id' contains a path separator; ids are published, paths never are "
                "(drop the field for a keyed hash)"
            )
        return given
    return Path(rel).stem if mode == "stem" else keyed_id(f"image:{rel}", secret, prefix="img_")


def _record(path: Path, line: int, obj: dict, split: str | None, root: Path, opts: dict) -> ImageRecord:
    where = f"{path}, row {line}"
    for name in REQUIRED_FIELDS:
        if name not in obj:
            raise DataFormatError(
                f"{where}: field {name!r} is missing; required fields {list(REQUIRED_FIELDS)}"
            )
    image, rel = _image_path(_string(obj, "image", where), path, root, where, opts["allow_outside"])
    report, findings = _string(obj, "report", where), _findings(obj["findings"], where)
    if "split" in obj:
        split = normalise_split(_string(obj, "split", where), f"{where}: field 'split'")
    if split is None:
        raise DataFormatError(f"{where}: field 'split' is missing and the file is not named after a split")
    patient = obj.get("patient_id")
    if isinstance(patient, bool) or not isinstance(patient, (str, int, type(None))) or patient == "":
        raise DataFormatError(
            f"{where}: field 'patient_id' = {patient!r:.60}, expected a string or an integer"
        )
    patient_key = f"patient:{patient}" if patient is not None else f"image:{rel}"
    image_id = _image_id(obj, rel, where, opts["image_ids"], opts["secret"])
    return ImageRecord(image, image_id, patient_key, split, where, report=report, keep_findings=findings)


def _split_files(data_dir, data_files) -> dict[str | None, Path]:
    """split (None: from each record) -> file; two files of one split are an error naming both."""
    if data_files is None:
        if data_dir is None:
            raise ValueError(
                "jsonl: give data_dir (with train.jsonl, validation.jsonl, test.jsonl) or data_files"
            )
        paths = sorted(Path(data_dir).glob("*.jsonl"))
        if not paths:
            raise DataFormatError(f"{data_dir}: no *.jsonl file")
        if len(paths) == 1 and paths[0].stem.strip().lower() not in SPLIT_ALIASES:
            return {"train": paths[0]}  # one file of any name: the train split (as `datasets` does)
        pairs = [(normalise_split(p.stem, str(p)), p) for p in paths]
    elif isinstance(data_files, dict):
        pairs = [(normalise_split(k, "data_files"), Path(v)) for k, v in data_files.items()]
    else:
        return {None: Path(data_files)}
    files: dict[str | None, Path] = {}
    for split, p in pairs:
        if split in files:
            raise DataFormatError(f"split {split!r} is given by two files: {files[split]} and {p}")
        files[split] = p
    return files


def build_jsonl(
    data_dir: str | os.PathLike | None = None,
    data_files: dict[str, str | os.PathLike] | str | os.PathLike | None = None,
    clip_tolerance_px: float = 2.0,
    image_ids: str = "hash",
    allow_outside_data_dir: bool = False,
    id_secret: str | bytes | None = None,
    cache_dir: str | None = None,
    progress: bool | None = None,
    streaming: bool = False,
):
    """Build a ``DatasetDict`` from JSON-lines files (format, ids and path policy: the module docstring)."""
    if image_ids not in IMAGE_ID_MODES:
        raise ValueError(f"image_ids={image_ids!r}: expected one of {list(IMAGE_ID_MODES)}")
    files = _split_files(data_dir, data_files)
    secret = resolve_id_secret(
        id_secret, data_dir if data_dir is not None else next(iter(files.values())).parent
    )
    opts = {"allow_outside": allow_outside_data_dir, "image_ids": image_ids, "secret": secret}
    records = []
    for split, path in files.items():
        root = Path(data_dir) if data_dir is not None else path.parent
        n = len(records)
        records += [_record(path, line, obj, split, root, opts) for line, obj in iter_json_lines(path)]
        if len(records) == n:
            raise DataFormatError(f"{path}: empty file, expected one JSON record per line")
    return build_from_records(
        records,
        SOURCE,
        fingerprint_parts=(
            file_signature(files.values()),
            file_signature(r.image_path for r in records),
            image_ids,
        ),
        options=BuildOptions(clip_tolerance_px, cache_dir, progress, streaming),
        id_secret=secret,
        image_field="image",
    )
