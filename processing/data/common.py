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
- Text files are read as UTF-8 (a BOM is accepted); an invalid byte is an error naming file and line.

Identifiers (privacy): a real patient's key (MRN, NIH prefix, MIMIC ``pNNNNNNNN``, RSNA ``patientId``) is
published only as ``keyed_id(key, secret)``, an HMAC-SHA256 with a secret that never leaves the machine
(``resolve_id_secret``): the ``id_secret`` argument of a builder, else the environment variable
``MEDRG_ID_SECRET``, else a random secret generated once and stored beside the private data in
``<data_dir>/.medrg_id_secret`` (mode 0600), or, when the data folder is read-only, in a per-user file
``~/.cache/medrg/id_secrets/<hash of the data folder>`` (the log says which). Without the secret an id
cannot be brute-forced back to a short MRN; with the same secret the same patient always gets the same id.
Keep the secret private and back it up if ids must stay stable across machines. Published ids never contain
paths or directory names.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import logging
import math
import os
import secrets
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

# Public salt of ``anonymise_id``: only for SYNTHETIC ids (SynthCXR), never for a real patient's key (a public
# salt lets anyone brute-force a short MRN back from the hash; real builders use ``keyed_id``).
ID_SALT = "medrg-v1"
ID_SECRET_ENV = "MEDRG_ID_SECRET"
ID_SECRET_FILE = ".medrg_id_secret"


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
    """``prefix`` + 16 hex digits of a publicly salted SHA-256: for synthetic ids only (see ``keyed_id``)."""
    digest = hashlib.sha256(f"{salt}:{raw}".encode()).hexdigest()
    return prefix + digest[:16]


def keyed_id(raw: str, secret: bytes, prefix: str = "p_") -> str:
    """``prefix`` + the first 16 hex digits of HMAC-SHA256(``secret``, ``raw``): the published id of a real
    patient (or image) key."""
    if not isinstance(secret, bytes) or not secret:
        raise TypeError(f"keyed_id: secret must be non-empty bytes, got {type(secret).__name__}")
    return prefix + hmac.new(secret, raw.encode("utf-8"), hashlib.sha256).hexdigest()[:16]


def secret_fingerprint(secret: bytes) -> str:
    """A value that changes with the secret (part of cache fingerprints) and does not reveal it."""
    return hmac.new(secret, b"medrg-cache-fingerprint", hashlib.sha256).hexdigest()[:16]


def _user_secret_path(data_dir: Path) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "medrg" / "id_secrets" / hashlib.sha256(str(data_dir).encode()).hexdigest()[:24]


def _writable(folder: Path) -> bool:
    """False for a folder marked read-only (no write bit: also for root, who could write anyway) or not
    writable by this user."""
    try:
        return bool(folder.stat().st_mode & 0o222) and os.access(folder, os.W_OK)
    except OSError:
        return False


def _read_secret(path: Path) -> bytes:
    value = path.read_bytes().strip()
    if not value:
        raise DataFormatError(f"{path}: id secret file is empty; delete it to generate a new secret")
    return value


def _create_secret(path: Path) -> bytes:
    """Write a new random secret to ``path`` (mode 0600, never overwriting); returns the secret on disk."""
    value = secrets.token_hex(32).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # written concurrently by another build: use that one
        return _read_secret(path)
    with os.fdopen(fd, "wb") as f:
        f.write(value + b"\n")
    return value


def resolve_id_secret(id_secret: str | bytes | None, data_dir: str | os.PathLike | None) -> bytes:
    """The secret for ``keyed_id``: ``id_secret``, else ``$MEDRG_ID_SECRET``, else a stored secret.

    The stored secret is ``<data_dir>/.medrg_id_secret``, generated once (random 256 bits, mode 0600). If the
    data folder is read-only (no write permission bit, or not writable) it is kept in a per-user file under
    ``~/.cache/medrg/id_secrets/`` (``$XDG_CACHE_HOME`` if set) keyed by the data folder's absolute path, and
    the log says so. Raises ``ValueError`` for an empty ``id_secret``.
    """
    if id_secret is not None:
        if isinstance(id_secret, str):
            id_secret = id_secret.encode("utf-8")
        if not isinstance(id_secret, bytes) or not id_secret:
            raise ValueError(f"id_secret must be a non-empty str or bytes, got {id_secret!r:.40}")
        return id_secret
    env = os.environ.get(ID_SECRET_ENV, "")
    if env:
        return env.encode("utf-8")
    folder = Path(data_dir if data_dir is not None else ".").resolve()
    local, user = folder / ID_SECRET_FILE, _user_secret_path(folder)
    for path in (local, user):
        if path.is_file():
            return _read_secret(path)
    try:
        if not _writable(folder):
            raise PermissionError(folder)
        value = _create_secret(local)
        logger.info("generated the patient-id secret %s (keep it private; ids depend on it)", local)
        return value
    except OSError:
        user.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        value = _create_secret(user)
        logger.warning(
            "data folder %s is read-only: the patient-id secret is stored per user in %s (set %s or pass "
            "id_secret= for ids that are the same on every machine)",
            folder,
            user,
            ID_SECRET_ENV,
        )
        return value


def read_text_checked(path: str | os.PathLike) -> str:
    """The text of a UTF-8 file (a leading BOM is dropped). An invalid byte is a ``DataFormatError`` naming
    the file, the 1-based line and the byte; a missing file one naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataFormatError(
            f"{path}, row {line}: not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}); "
            "save the file as UTF-8"
        ) from None


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
    with io.StringIO(read_text_checked(path), newline="") as f:
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


def iter_json_lines(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """(1-based line, object) of each non-blank line of a JSON-lines file (UTF-8, BOM and CRLF accepted).

    Invalid UTF-8, invalid JSON, nesting too deep for the parser and a line that is not a JSON object are
    ``DataFormatError`` naming file and line. Lines are split on ``\\n`` only, so a U+2028 inside a string
    (valid JSON) does not split a record.
    """
    path = Path(path)
    for line_no, text in enumerate(read_text_checked(path).split("\n"), start=1):
        if not text.strip():
            continue
        where = f"{path}, row {line_no}"
        try:
            obj = json.loads(text)
        except RecursionError:
            raise DataFormatError(f"{where}: JSON nested too deeply to read") from None
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        except ValueError as e:  # e.g. an integer with more digits than Python converts
            raise DataFormatError(f"{where}: not valid JSON ({e})") from None
        if not isinstance(obj, dict):
            raise DataFormatError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        yield line_no, obj


def parse_float(value: Any, where: str, field_name: str) -> float:
    if isinstance(value, bool):
        raise DataFormatError(
            f"{where}: field {field_name!r} is {value!r}, expected a number (not a boolean)"
        )
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
    streaming: bool = False,
):
    """Build a ``DatasetDict`` with ``GROUNDING_FEATURES`` via ``Dataset.from_generator``.

    ``split_items``: split -> items; ``make_row(item)`` returns a schema row (image as ``{"bytes": png}``).
    The cache fingerprint is derived from ``fingerprint_parts`` (all options + input file signatures) and
    the split, so a build with other options or edited inputs never returns a stale cached result.
    ``streaming``: an ``IterableDatasetDict`` instead, nothing written or held: each row is made when it is read
    (see ``stream_dataset_dict``).
    """
    import datasets
    from tqdm.auto import tqdm

    from .schema import GROUNDING_FEATURES

    if streaming:
        return stream_dataset_dict(split_items, make_row, desc)
    out = {}
    for split, items in split_items.items():
        fp = fingerprint_of("medrg-data-v1", desc, split, len(items), *fingerprint_parts)

        def gen(fp: str, _items=items, _split=split) -> Iterator[dict]:
            # ``fp`` is unused here but part of gen_kwargs, hence of the builder's config hash / cache path.
            disable = None if progress is None else not progress
            for i, item in enumerate(tqdm(_items, desc=f"{desc} {_split}", disable=disable, leave=False)):
                try:
                    row = make_row(item)
                except DataFormatError:
                    raise
                except Exception as e:  # a reader's raw error: name the item (its annotation row when known)
                    where = getattr(item, "where", None) or f"{desc} split {_split!r}, item {i}"
                    raise DataFormatError(f"{where}: {type(e).__name__}: {e}") from e
                yield row

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
            raise unwrap_generation_error(e, f"{desc} split {split!r}") from None
        out[split] = ds
    return datasets.DatasetDict(out)


# a stream of up to this many items is cut into this many shards (one item each when fewer): 240 splits evenly
# over 1-6, 8, 10, 12, 15, 16, 20, 24, 30, 40, 48, 60, 80, 120 and 240 processes, so that
# `datasets.distributed.split_dataset_by_node` hands each node whole shards and no node makes the rows of another
STREAM_SHARDS = 240


def stream_shards(items: Sequence[Any], count: int = STREAM_SHARDS) -> list[list[Any]]:
    """``items`` cut into ``min(count, len(items))`` contiguous shards of near-equal size, in order."""
    count = max(1, min(count, len(items)))
    size, extra = divmod(len(items), count)
    shards, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        shards.append(list(items[start:end]))
        start = end
    return shards


def stream_dataset_dict(
    split_items: Mapping[str, Sequence[Any]], make_row: Callable[[Any], dict], desc: str = ""
):
    """An ``IterableDatasetDict`` with ``GROUNDING_FEATURES``: ``make_row(item)`` runs when the row is read, one
    row at a time (memory stays flat however many rows pass); images are decoded by ``datasets`` as each row is
    formatted. Each split has ``STREAM_SHARDS`` shards (fewer for fewer items) for per-node splitting."""
    import datasets

    from .schema import GROUNDING_FEATURES

    def rows(shards: list[list[Any]], split: str) -> Iterator[dict]:
        for item in (item for shard in shards for item in shard):
            try:
                yield make_row(item)
            except DataFormatError:
                raise
            except Exception as e:  # a reader's raw error: name the item (its annotation row when known)
                where = getattr(item, "where", None) or f"{desc} split {split!r}, item {item!r}"
                raise DataFormatError(f"{where}: {type(e).__name__}: {e}") from e

    return datasets.IterableDatasetDict(
        {
            split: datasets.IterableDataset.from_generator(
                rows,
                features=GROUNDING_FEATURES,
                gen_kwargs={"shards": stream_shards(items), "split": split},
                split=datasets.NamedSplit(split),
            )
            for split, items in split_items.items()
        }
    )


def unwrap_generation_error(error: BaseException, where: str) -> DataFormatError:
    """The ``DataFormatError`` inside ``datasets``' opaque ``DatasetGenerationError`` (file, row, field), or
    a ``DataFormatError`` naming ``where`` and the innermost cause when there is none."""
    seen, cause, last = set(), error, error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, DataFormatError):
            return cause
        seen.add(id(cause))
        last = cause
        cause = cause.__cause__ or cause.__context__
    return DataFormatError(f"{where}: could not write the rows: {type(last).__name__}: {last}")


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
