"""The intermediate record every real-data builder parses its annotations into, and its conversion to a row.

A builder reads its annotation files into ``ImageRecord`` objects (no pixels yet), checks them (duplicates,
labels, patient leaks), and ``build_from_records`` turns them into a ``DatasetDict``: it reads each image,
maps boxes from the annotation frame to the image actually read, validates them, groups boxes into
findings and writes a report from label + position where the source has none.
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
    anonymise_id,
    build_dataset_dict,
    check_box,
    check_patient_disjoint,
    schema_row,
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


def record_to_row(
    rec: ImageRecord,
    source: str,
    stats: BuildStats,
    clip_tolerance_px: float,
    report_seed: int,
    fuse=None,
) -> dict:
    from .images import load_image_gray8, to_png_bytes

    img = load_image_gray8(rec.image_path, rec.where)
    w, h = img.size
    sx, sy = (1.0, 1.0) if rec.frame is None else (w / rec.frame[0], h / rec.frame[1])
    tol = clip_tolerance_px * max(sx, sy)
    rng = random.Random(f"{report_seed}:{source}:{rec.image_id}")
    findings: list[dict] = []
    if rec.keep_findings is not None:
        for k, f in enumerate(rec.keep_findings):
            boxes = [
                check_box(b, w, h, rec.where, f"findings[{k}].boxes[{j}]", stats, clip_tolerance_px)
                for j, b in enumerate(f["boxes"])
            ]
            findings.append({"phrase": f["phrase"], "category": f["category"], "boxes": boxes})
    else:
        groups: dict[tuple, list] = defaultdict(list)
        for i, ann in enumerate(rec.boxes):
            x0, y0, x1, y1 = ann.box
            box = check_box([x0 * sx, y0 * sy, x1 * sx, y1 * sy], w, h, ann.where, ann.field_name, stats, tol)
            # ungrouped boxes are separate lesions until position words merge them below
            groups[(ann.label, ann.group if ann.group is not None else f"#{i}", ann.phrase)].append(box)
        if fuse is not None:
            groups = {k: fuse(v) for k, v in groups.items()}
        # boxes without a given phrase: phrase from label + position; merge same (label, side, zone)
        positioned: dict[tuple, list] = defaultdict(list)
        given: list[tuple[str, str, list]] = []
        for (label, _group, phrase), boxes in groups.items():
            if phrase is not None:
                given.append((phrase, label, boxes))
                continue
            xs0 = sum(b[0] for b in boxes) / len(boxes)
            xs1 = sum(b[2] for b in boxes) / len(boxes)
            ys0 = sum(b[1] for b in boxes) / len(boxes)
            ys1 = sum(b[3] for b in boxes) / len(boxes)
            mean_box = [xs0, ys0, xs1, ys1]
            central = label.lower() in CENTRAL_CATEGORIES
            side = "" if central else side_of_box(mean_box, w)
            zone = "" if central else zone_of_box(mean_box, h)
            positioned[(label, side, zone)].extend(boxes)
        # merge given phrases: several rows of one phrase form one finding
        merged: dict[tuple[str, str], list] = defaultdict(list)
        for phrase, label, boxes in given:
            merged[(phrase, label)].extend(boxes)
        for (phrase, label), boxes in merged.items():
            findings.append({"phrase": phrase, "category": label.lower(), "boxes": boxes})
        keys = [(k[0].lower(), k[1], k[2]) for k in positioned]
        for key, phrase, boxes in zip(keys, unique_phrases(keys, rng), positioned.values()):
            findings.append({"phrase": phrase, "category": key[0], "boxes": boxes})
    report = rec.report
    if report is None:
        present = {f["category"] for f in findings}
        absent = [
            k
            for k in ("pneumothorax", "effusion", "cardiomegaly", "consolidation")
            if not any(k in p for p in present)
        ]
        report = write_report([f["phrase"] for f in findings], absent, rng)
    return schema_row(
        to_png_bytes(img), report, findings, rec.image_id, anonymise_id(f"{source}:{rec.patient_key}"), source
    )


def build_from_records(
    records: Sequence[ImageRecord],
    source: str,
    fingerprint_parts: Sequence,
    clip_tolerance_px: float = 2.0,
    report_seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    progress: bool | None = None,
    fuse=None,
    stats: BuildStats | None = None,
):
    stats = stats or BuildStats(source)
    by_split: dict[str, list[ImageRecord]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r.image_id):
        by_split[r.split].append(r)
    order = [s for s in ("train", "validation", "test") if s in by_split]
    dd = build_dataset_dict(
        {s: by_split[s] for s in order},
        lambda rec: record_to_row(rec, source, stats, clip_tolerance_px, report_seed, fuse),
        fingerprint_parts=(source, clip_tolerance_px, report_seed, *fingerprint_parts),
        cache_dir=None if cache_dir is None else str(cache_dir),
        desc=source,
        progress=progress,
    )
    stats.log()
    return dd
