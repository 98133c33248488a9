"""Helpers every builder shares: checked CSV reading, box validation, anonymised ids, split checks,
and turning records into a ``datasets.DatasetDict`` with the one schema.

Policies (documented once, used by every real-data builder):

- A box coordinate that is NaN/inf, a box with zero or negative width/height, or a box that sticks out of
  the image by more than ``clip_tolerance_px`` (default 2 px, in the annotation's own pixel frame) is an error naming file, row and field.
  A box that sticks out by at most ``clip_tolerance_px`` is clipped to the image; the number of clipped
  boxes is logged per build.
- A duplicate annotation row (same image, label and box; same reader where readers exist) is an error.
- A patient in two splits is an error naming the split pair and the image.
- A missing or unreadable image is an error naming the image file and the annotation row.
- An unknown label is an error naming the row and the known labels.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger("medrg.processing.data")

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
}

# Salt for anonymised ids; stable so ids are reproducible across builds (ids are not meant to be secret
# from someone holding the source data, only to keep source identifiers out of published rows).
ID_SALT = "medrg-v1"


class DataFormatError(ValueError):
    """Bad input data: the message names the file, the row (1-based line in the file) and the field."""


@dataclass
class BuildStats:
    """Counts of everything a build changed or left out, logged at the end of a build."""

    source: str
    clipped_boxes: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    def log(self) -> None:
        logger.info("%s: clipped %d box(es) sticking out by <= tolerance", self.source, self.clipped_boxes)
        for reason, n in sorted(self.skipped.items()):
            logger.info("%s: left out %d item(s): %s", self.source, n, reason)


def anonymise_id(raw: str, prefix: str = "p_", salt: str = ID_SALT) -> str:
    """A stable, non-reversible id: ``prefix`` + the first 16 hex digits of a salted SHA-256."""
    digest = hashlib.sha256(f"{salt}:{raw}".encode()).hexdigest()
    return prefix + digest[:16]


def normalise_split(name: str, where: str) -> str:
    key = str(name).strip().lower()
    if key not in SPLIT_ALIASES:
        raise DataFormatError(
            f"{where}: unknown split {name!r}; expected one of {sorted(set(SPLIT_ALIASES))}"
        )
    return SPLIT_ALIASES[key]


def read_csv_rows(
    path: str | os.PathLike, required: Sequence[str]
) -> tuple[list[str], list[tuple[int, dict]]]:
    """Read a CSV with a header. Returns (header, [(line_number, row_dict)]).

    Raises ``DataFormatError`` naming the file and the missing column(s) when a required column is absent,
    and naming file and line when a row has fewer cells than the header's named columns.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: annotation file not found")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise DataFormatError(
                f"{path}: empty file, expected a header with columns {list(required)}"
            ) from None
        missing = [c for c in required if c not in header]
        if missing:
            raise DataFormatError(f"{path}: missing column(s) {missing}; found columns {header}")
        rows = []
        for line_no, cells in enumerate(reader, start=2):
            if not any(c.strip() for c in cells):
                continue
            row = {}
            for i, name in enumerate(header):
                if name == "":
                    continue
                if i >= len(cells):
                    if name in required:
                        raise DataFormatError(
                            f"{path}, row {line_no}: field {name!r} is missing (row too short)"
                        )
                    row[name] = ""
                else:
                    row[name] = cells[i].strip()
            rows.append((line_no, row))
    return header, rows


def parse_float(value: Any, where: str, field_name: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DataFormatError(f"{where}: field {field_name!r} is {value!r}, expected a number") from None
    if not math.isfinite(x):
        raise DataFormatError(f"{where}: field {field_name!r} is {value!r}, expected a finite number")
    return x


def check_box(
    box: Sequence[float],
    width: int,
    height: int,
    where: str,
    field_name: str,
    stats: BuildStats | None = None,
    clip_tolerance_px: float = 2.0,
) -> list[float]:
    """Validate an ``[xmin, ymin, xmax, ymax]`` pixel box against an image of ``width`` x ``height``.

    Clips a box sticking out by at most ``clip_tolerance_px`` (counted in ``stats``); raises
    ``DataFormatError`` naming ``where`` and ``field_name`` for NaN, zero/negative area or a box further out.
    """
    if len(box) != 4:
        raise DataFormatError(f"{where}: field {field_name!r} has {len(box)} values, expected 4")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise DataFormatError(f"{where}: field {field_name!r} = {list(box)} contains NaN/inf")
    if x1 <= x0 or y1 <= y0:
        raise DataFormatError(
            f"{where}: field {field_name!r} = {[x0, y0, x1, y1]} has zero or negative width/height"
        )
    tol = clip_tolerance_px
    if x0 < -tol or y0 < -tol or x1 > width + tol or y1 > height + tol:
        raise DataFormatError(
            f"{where}: field {field_name!r} = {[round(v, 2) for v in (x0, y0, x1, y1)]} lies outside the "
            f"{width}x{height} image by more than {tol} px"
        )
    clipped = [max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1)]
    if clipped != [x0, y0, x1, y1]:
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            raise DataFormatError(
                f"{where}: field {field_name!r} = {[x0, y0, x1, y1]} has no area inside the image"
            )
        if stats is not None:
            stats.clipped_boxes += 1
    return clipped


def check_patient_disjoint(split_patients: Mapping[str, Iterable[tuple[str, str]]]) -> None:
    """``split_patients``: split -> iterable of (patient_key, item_description). Raises on any shared patient."""
    owner: dict[str, tuple[str, str]] = {}
    for split, items in split_patients.items():
        for patient, item in items:
            if patient in owner and owner[patient][0] != split:
                other_split, other_item = owner[patient]
                raise DataFormatError(
                    f"patient leak: the patient of {item} (split {split!r}) is also in split {other_split!r} "
                    f"({other_item}); splits must be patient-disjoint"
                )
            owner.setdefault(patient, (split, item))


def hash_split(key: str, fractions: Mapping[str, float], seed: int = 0) -> str:
    """Deterministic split assignment of a (patient) key by a salted hash; keeps patients together."""
    total = sum(fractions.values())
    u = int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:12], 16) / 16**12
    acc = 0.0
    for split, frac in fractions.items():
        acc += frac / total
        if u < acc:
            return split
    return list(fractions)[-1]


def file_signature(paths: Iterable[str | os.PathLike]) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of each existing file: part of the cache fingerprint, so edits rebuild."""
    sig = []
    for p in paths:
        p = Path(p)
        if p.is_file():
            st = p.stat()
            sig.append((str(p.resolve()), st.st_size, st.st_mtime_ns))
    return sig


def fingerprint_of(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def build_dataset_dict(
    split_items: Mapping[str, Sequence[Any]],
    make_row: Callable[[Any], dict],
    fingerprint_parts: Sequence[Any],
    cache_dir: str | None = None,
    desc: str = "",
    progress: bool | None = None,
):
    """Build a ``DatasetDict`` with ``GROUNDING_FEATURES`` via ``Dataset.from_generator``.

    ``split_items``: split -> items; ``make_row(item)`` returns a schema row (image as ``{"bytes": png}``).
    The cache fingerprint is derived from ``fingerprint_parts`` (all options + input file signatures) and
    the split, so a build with other options or edited inputs never returns a stale cached result.
    """
    import datasets
    from tqdm.auto import tqdm

    from .schema import GROUNDING_FEATURES

    out = {}
    for split, items in split_items.items():
        fp = fingerprint_of("medrg-data-v1", desc, split, len(items), *fingerprint_parts)

        def gen(fp: str, _items=items, _split=split) -> Iterator[dict]:
            # ``fp`` is unused here but part of gen_kwargs, hence of the builder's config hash / cache path.
            disable = None if progress is None else not progress
            for item in tqdm(_items, desc=f"{desc} {_split}", disable=disable, leave=False):
                yield make_row(item)

        try:
            ds = datasets.Dataset.from_generator(
                gen,
                features=GROUNDING_FEATURES,
                cache_dir=cache_dir,
                gen_kwargs={"fp": fp},
                split=datasets.NamedSplit(split),
                fingerprint=fp,
            )
        except datasets.exceptions.DatasetGenerationError as e:
            # surface our own error (file, row, field) instead of the generic wrapper
            cause = e.__cause__
            while cause is not None and not isinstance(cause, DataFormatError):
                cause = cause.__cause__ or cause.__context__
            if cause is not None:
                raise cause from None
            raise
        out[split] = ds
    return datasets.DatasetDict(out)


def schema_row(
    image_png: bytes, report: str, findings: list[dict], image_id: str, patient_id: str, source: str
) -> dict:
    return {
        "image": {"bytes": image_png, "path": None},
        "report": report,
        "findings": findings,
        "image_id": image_id,
        "patient_id": patient_id,
        "source": source,
    }
