"""The intermediate record every real-data builder parses its annotations into, and its conversion to a row.

A builder reads its annotation files into ``ImageRecord`` objects (no pixels yet, labels checked), and
``build_from_records`` is the one path from there to a ``DatasetDict``: it checks the records (duplicate
image ids, patients in two splits, missing image files), reads each image, maps boxes from the annotation
frame to the image actually read, validates them, groups boxes into findings, writes a report from label +
position where the source has none, and publishes the patient key only as a keyed hash (``keyed_id``).
"""

from __future__ import annotations

import os
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .common import (
    BuildStats,
    DataFormatError,
    build_dataset_dict,
    check_box,
    check_patient_disjoint,
    keyed_id,
    schema_row,
    secret_fingerprint,
)
from .report_text import CENTRAL_CATEGORIES, location_phrase, side_of_box, write_report, zone_of_box


@dataclass
class BoxAnnotation:
    """One annotated box in the annotation frame (``frame`` = (width, height) or None = the image's frame)."""

    label: str
    box: list[float]  # [xmin, ymin, xmax, ymax]
    where: str  # "file, row N" for error messages
    field_name: str
    phrase: str | None = None  # given phrase (MS-CXR label_text, JSONL); None = write one from position
    group: str | None = None  # boxes with the same group (and label) form one finding


@dataclass
class ImageRecord:
    image_path: Path
    image_id: str
    patient_key: str  # raw patient key; stored only anonymised
    split: str
    where: str  # first annotation row naming this image
    boxes: list[BoxAnnotation] = field(default_factory=list)
    report: str | None = None
    frame: tuple[float, float] | None = None  # annotation frame (width, height); None = image frame
    keep_findings: list[dict] | None = None  # findings given verbatim (JSONL), boxes in image frame
    source: str | None = None  # the row's ``source`` (e.g. "chestxray8:gpt"); None = the build's source
    report_key: str | None = None  # seed key of a written report; None = "<source>:<image_id>"


# categories a written report may deny when the image has no finding of them (substring match)
DEFAULT_NEGATABLE = ("pneumothorax", "effusion", "cardiomegaly", "consolidation")


def check_records(records: Sequence[ImageRecord]) -> None:
    """Duplicate image ids and patients in two splits are errors naming the rows."""
    seen: dict[str, str] = {}
    for r in records:
        if r.image_id in seen:
            raise DataFormatError(f"{r.where}: duplicate image {r.image_id!r} (also at {seen[r.image_id]})")
        seen[r.image_id] = r.where
    by_split: dict[str, list] = defaultdict(list)
    for r in records:
        by_split[r.split].append((r.patient_key, f"image {r.image_id} ({r.where})"))
    check_patient_disjoint(by_split)


def check_images_exist(records: Sequence[ImageRecord], field_name: str) -> None:
    for r in records:
        if not r.image_path.is_file():
            raise DataFormatError(f"{r.where}: image file {r.image_path} (field {field_name!r}) not found")


def unique_phrases(keys: Sequence[tuple[str, str, str]], rng: random.Random) -> list[str]:
    """One phrase per (label, side, zone) key, distinct within an image."""
    out: list[str] = []
    for label, side, zone in keys:
        phrase = location_phrase(label, side, zone, rng)
        if phrase in out and side in ("right", "left") and zone:
            phrase = f"{label} in the {side} {zone.replace('middle', 'mid')} zone"
        k = 2
        base = phrase
        while phrase in out:
            phrase = f"{base} ({k})"
            k += 1
        out.append(phrase)
    return out


def _read_image(rec: ImageRecord):
    from PIL import Image

    from .images import load_image_gray8

    try:
        return load_image_gray8(rec.image_path, rec.where)
    except Image.DecompressionBombError as e:
        raise DataFormatError(f"{rec.where}: image file {rec.image_path} is refused: {e}") from None


def _verbatim_findings(rec: ImageRecord, w: int, h: int, stats: BuildStats, tol: float) -> list[dict]:
    findings = []
    for k, f in enumerate(rec.keep_findings or []):
        boxes = [
            check_box(b, w, h, rec.where, f"findings[{k}].boxes[{j}]", stats, tol)
            for j, b in enumerate(f["boxes"])
        ]
        findings.append({"phrase": f["phrase"], "category": f["category"], "boxes": boxes})
    return findings


def _box_groups(rec: ImageRecord, w: int, h: int, stats: BuildStats, tol: float, fuse) -> dict[tuple, list]:
    """(label, group, given phrase) -> boxes in the image frame; ungrouped boxes are separate lesions."""
    sx, sy = (1.0, 1.0) if rec.frame is None else (w / rec.frame[0], h / rec.frame[1])
    groups: dict[tuple, list] = defaultdict(list)
    for i, ann in enumerate(rec.boxes):
        x0, y0, x1, y1 = ann.box
        box = check_box(
            [x0 * sx, y0 * sy, x1 * sx, y1 * sy], w, h, ann.where, ann.field_name, stats, tol * max(sx, sy)
        )
        groups[(ann.label, ann.group if ann.group is not None else f"#{i}", ann.phrase)].append(box)
    return groups if fuse is None else {k: fuse(v) for k, v in groups.items()}


def _findings_from_boxes(groups: dict[tuple, list], w: int, h: int, rng: random.Random) -> list[dict]:
    """Given phrases first (rows of one phrase merged), then one written phrase per (label, side, zone)."""
    given: dict[tuple[str, str], list] = defaultdict(list)
    positioned: dict[tuple, list] = defaultdict(list)
    for (label, _group, phrase), boxes in groups.items():
        if phrase is not None:
            given[(phrase, label)].extend(boxes)
            continue
        mean_box = [sum(b[i] for b in boxes) / len(boxes) for i in range(4)]
        central = label.lower() in CENTRAL_CATEGORIES
        side = "" if central else side_of_box(mean_box, w)
        zone = "" if central else zone_of_box(mean_box, h)
        positioned[(label, side, zone)].extend(boxes)
    findings = [{"phrase": p, "category": label.lower(), "boxes": b} for (p, label), b in given.items()]
    keys = [(k[0].lower(), k[1], k[2]) for k in positioned]
    for key, phrase, boxes in zip(keys, unique_phrases(keys, rng), positioned.values()):
        findings.append({"phrase": phrase, "category": key[0], "boxes": boxes})
    return findings


def _written_report(findings: list[dict], negatable: Sequence[str], rng: random.Random) -> str:
    present = {f["category"] for f in findings}
    absent = [k for k in negatable if not any(k in p for p in present)]
    return write_report([f["phrase"] for f in findings], absent, rng)


def record_to_row(
    rec: ImageRecord,
    source: str,
    stats: BuildStats,
    clip_tolerance_px: float,
    report_seed: int,
    id_secret: bytes,
    fuse=None,
    negatable: Sequence[str] = DEFAULT_NEGATABLE,
) -> dict:
    """One schema row: the image as PNG bytes, boxes in its pixel frame, the patient key as ``keyed_id``."""
    from .images import to_png_bytes

    img = _read_image(rec)
    w, h = img.size
    rng = random.Random(f"{report_seed}:{rec.report_key or f'{source}:{rec.image_id}'}")
    if rec.keep_findings is not None:
        findings = _verbatim_findings(rec, w, h, stats, clip_tolerance_px)
    else:
        findings = _findings_from_boxes(_box_groups(rec, w, h, stats, clip_tolerance_px, fuse), w, h, rng)
    report = rec.report if rec.report is not None else _written_report(findings, negatable, rng)
    patient_id = keyed_id(f"{source}:{rec.patient_key}", id_secret)
    return schema_row(to_png_bytes(img), report, findings, rec.image_id, patient_id, rec.source or source)


def _check_tolerance(clip_tolerance_px) -> None:
    ok = isinstance(clip_tolerance_px, (int, float)) and not isinstance(clip_tolerance_px, bool)
    if not ok or not clip_tolerance_px >= 0:
        raise ValueError(f"clip_tolerance_px must be a number >= 0, got {clip_tolerance_px!r}")


@dataclass(frozen=True)
class BuildOptions:
    """The options every real-data builder takes and hands on unchanged to ``build_from_records``.

    ``clip_tolerance_px``: how far (pixels) a box may stand outside the image before it is an error (closer
    boxes are clipped); ``cache_dir``: the ``datasets`` cache; ``progress``: a progress bar (None: when a
    terminal); ``streaming``: an ``IterableDatasetDict`` whose rows are made as they are read.
    """

    clip_tolerance_px: float = 2.0
    cache_dir: str | os.PathLike | None = None
    progress: bool | None = None
    streaming: bool = False


def build_from_records(
    records: Sequence[ImageRecord],
    source: str,
    fingerprint_parts: Sequence,
    options: BuildOptions,
    *,
    id_secret: bytes,
    image_field: str = "image",
    report_seed: int = 0,
    negatable: Sequence[str] = DEFAULT_NEGATABLE,
    fuse=None,
    stats: BuildStats | None = None,
):
    """The one path from records to a ``DatasetDict`` (splits train / validation / test, rows sorted by id).

    Checks duplicates, patient-disjoint splits and image files (``image_field`` names the annotation field
    in the error), then builds the rows lazily through ``datasets``' cache. ``id_secret``: the key of the
    published patient ids (``common.resolve_id_secret``). ``fuse``: boxes -> boxes of one finding
    (e.g. the mean of several readers). ``negatable``: categories a written report may deny. ``options``: the
    builder's ``BuildOptions`` (with ``streaming``, rows are made as they are read; the checks above still run
    first).
    """
    if not records:
        raise DataFormatError(f"{source}: the annotations hold no image to build")
    clip_tolerance_px, cache_dir = options.clip_tolerance_px, options.cache_dir
    _check_tolerance(clip_tolerance_px)
    check_records(records)
    check_images_exist(records, image_field)
    stats = stats or BuildStats(source)
    by_split: dict[str, list[ImageRecord]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r.image_id):
        by_split[r.split].append(r)
    order = [s for s in ("train", "validation", "test") if s in by_split]
    dd = build_dataset_dict(
        {s: by_split[s] for s in order},
        lambda rec: record_to_row(
            rec, source, stats, clip_tolerance_px, report_seed, id_secret, fuse, negatable
        ),
        fingerprint_parts=(
            source,
            clip_tolerance_px,
            report_seed,
            tuple(negatable),
            secret_fingerprint(id_secret),
            *fingerprint_parts,
        ),  # fmt: skip
        cache_dir=None if cache_dir is None else str(cache_dir),
        desc=source,
        progress=options.progress,
        streaming=options.streaming,
    )
    if not options.streaming:  # a stream makes its rows (and counts what it skips) only when it is read
        stats.log()
    return dd
