"""ChestX-ray8 (NIH) boxes: the official ``BBox_List_2017.csv`` + an image folder -> the MedRG schema.

- Boxes are given in the original 1024 x 1024 frame (``original_size``); they are mapped to the size of the
  image actually read (downscaled copies are common).
- Reports (``reports=``):

  * ``"template"`` (default): one sample per image with a report written from label + box position, with
    varied templates and the radiological convention (patient right = image left). Boxes of one label in
    the same side/zone form one finding (one phrase, several boxes). Row ``source``: ``"chestxray8"``.
  * ``"gpt"`` / ``"llama"``: the narrative reports of ``reports/{split}_{writer}.jsonl`` (published with
    the MedRG/uMedGround paper: one report per box, written from its label and position). ONE SAMPLE PER
    REPORT ROW: an image with 2+ boxes gives one sample per box, each with its own report and exactly one
    finding (that row's label and box); the other boxes of the image are not in that sample because its
    report does not state them. The finding's phrase is the label the report reader gives that finding
    (``reading_medrg.ReportReader``: a contiguous span of the report with its size, severity and location words,
    e.g. "small layering right pleural effusion"; where the side stands apart from the finding, the side word of
    its sentence goes before the span, "right pneumothorax"), the finding of the row's label on the row's side
    where the report states several; only when the reader finds none does it fall back to a phrase composed from
    label and position (``reading_medrg.key_phrase``). Row ``source``: ``"chestxray8:gpt"`` /
    ``"chestxray8:llama"``; ``image_id``: ``"<image name>#<writer>:<label>"`` (unique per sample; the part
    before ``#`` is the image file name). Every split the build has must have its file for that writer.
  * ``"all"``: each image once per available source, all in the same splits: the template sample plus, for
    each writer whose ``{split}_{writer}.jsonl`` exists, one sample per report row (on the shared copy:
    train 599 + 667 + 667 = 1933 samples, validation 88 + 99 + 99 = 286). Validation/test rows keep the
    writer in ``source`` so scores can be reported per writer.
  * a list of these names (e.g. ``["template", "gpt"]``) mixes exactly those sources.

  A report row must name an image of its split, one of the 8 labels and a box of ``BBox_List_2017.csv``
  (same image and label, within 1 px in the 1024 frame; the CSV box is used), else ``DataFormatError``
  naming the file, row and field; two rows of one image and label in one file are a duplicate-image error.
- Splits: ``{split}_images.txt`` / ``{split}_list.txt`` files in ``data_dir`` (``train``, ``val``/``validation``,
  ``test``) or the ``split_files`` option; otherwise patient-disjoint hash splits (``split_fractions``).
  The patient key is the image-name prefix before ``_``; it is published only as a keyed hash (HMAC-SHA256,
  secret from ``id_secret`` / ``$MEDRG_ID_SECRET`` / a secret file beside the data, see
  ``common.resolve_id_secret``; for the read-only shared copy the secret lives under
  ``~/.cache/medrg/id_secrets/``). ``image_id`` is the image file name (NIH's de-identified name, no path).
- Images that are listed in a split file but have no box are not included (count logged): ChestX-ray8's
  split lists cover all 112k images while boxes exist for 880.
"""

from __future__ import annotations

import io
import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from .common import (
    BuildStats,
    DataFormatError,
    file_signature,
    hash_split,
    iter_json_lines,
    normalise_split,
    parse_float,
    read_text_checked,
    resolve_id_secret,
)
from .records import BoxAnnotation, BuildOptions, ImageRecord, build_from_records

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
REPORT_WRITERS = ("gpt", "llama")
REPORT_OPTIONS = ("template", *REPORT_WRITERS, "all")
NEGATABLE = ("pneumothorax", "effusion", "cardiomegaly", "mass", "nodule", "atelectasis")
# split name -> name used in the report files (``val_gpt.jsonl``)
REPORT_FILE_SPLIT = {"train": "train", "validation": "val", "test": "test"}
BOX_MATCH_PX = 1.0  # a report row's box must equal a CSV box within this many px of the 1024 frame

Row = tuple[int, str, list[float]]  # (csv line, label, [x, y, w, h])


def _read_bbox_csv(path: Path) -> list[tuple[int, str, str, list[float]]]:
    """(line, image_name, label, [x, y, w, h]) rows. The official header is
    ``Image Index,Finding Label,Bbox [x,y,w,h],,,`` (the box header is split by its own commas)."""
    import csv

    if not path.is_file():
        raise DataFormatError(f"{path}: annotation file not found")
    reader = csv.reader(io.StringIO(read_text_checked(path), newline=""))
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


def _boxes_per_image(csv_path: Path) -> dict[str, list[Row]]:
    """Image name -> its CSV rows; unknown labels and duplicate rows are errors naming the row."""
    seen: dict[tuple, int] = {}
    per_image: dict[str, list[Row]] = defaultdict(list)
    for line, name, label, box in _read_bbox_csv(csv_path):
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
    if not per_image:
        raise DataFormatError(f"{csv_path}: no annotation rows")
    return per_image


def _find_split_files(data_dir: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for name in ("train", "training", "val", "valid", "validation", "test"):
        for pattern in (f"{name}_images.txt", f"{name}_list.txt"):
            p = data_dir / pattern
            if p.is_file():
                split = normalise_split(name, str(p))
                if split in found:
                    raise DataFormatError(f"split {split!r} is given by two files: {found[split]} and {p}")
                found[split] = p
    return found


def _read_split_files(split_paths: dict[str, Path]) -> dict[str, str]:
    image_split: dict[str, str] = {}
    for split, p in split_paths.items():
        if not p.is_file():
            raise DataFormatError(f"split file {p} (split {split!r}) not found")
        for line, raw in enumerate(read_text_checked(p).splitlines(), start=1):
            name = raw.strip()
            if name and image_split.setdefault(name, split) != split:
                raise DataFormatError(
                    f"{p}, row {line}: image {name} is also listed in split {image_split[name]!r}"
                )
    return image_split


def _assign_splits(data_dir, per_image, csv_path, split_files, split_fractions, split_seed, stats):
    """(image -> split for every boxed image, the split files used); the split options are the builder's."""
    if split_files is None:
        split_paths = _find_split_files(data_dir)
    else:
        split_paths = {normalise_split(k, "split_files"): Path(v) for k, v in split_files.items()}
    if not split_paths:
        fractions = split_fractions or {"train": 0.8, "validation": 0.1, "test": 0.1}
        return {n: hash_split(n.split("_")[0], fractions, split_seed) for n in per_image}, []
    image_split = _read_split_files(split_paths)
    unlisted = [n for n in per_image if n not in image_split]
    if unlisted:
        raise DataFormatError(
            f"{csv_path}: {len(unlisted)} boxed image(s) are in no split file (first: {unlisted[0]}); "
            f"split files: {[str(p) for p in split_paths.values()]}"
        )
    n_no_box = sum(1 for n in image_split if n not in per_image)
    if n_no_box:
        stats.skip("listed in a split file but without a box in BBox_List_2017.csv", n_no_box)
    return {n: image_split[n] for n in per_image}, list(split_paths.values())


def _index_images(data_dir: Path, per_image: dict[str, list[Row]], csv_path: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for root, _dirs, files in os.walk(data_dir):
        for name in files:
            if name.lower().endswith(IMAGE_SUFFIXES):
                index.setdefault(name, Path(root) / name)
    missing = [n for n in per_image if n not in index]
    if missing:
        raise DataFormatError(
            f"{csv_path}, row {per_image[missing[0]][0][0]}: image file {missing[0]} (field 'Image Index') "
            f"not found under {data_dir}" + (f" ({len(missing)} missing in all)" if len(missing) > 1 else "")
        )
    return index


def _report_sources(reports: str | Sequence[str]) -> tuple[str, ...]:
    names = (
        [reports]
        if isinstance(reports, str)
        else list(reports)
        if isinstance(reports, (list, tuple))
        else None
    )
    if not names or any(not isinstance(n, str) or n not in REPORT_OPTIONS for n in names):
        raise ValueError(f"reports={reports!r}: expected one of {list(REPORT_OPTIONS)} or a list of them")
    return ("template", *REPORT_WRITERS) if "all" in names else tuple(dict.fromkeys(names))


def _template_record(name: str, rows: list[Row], split: str, path: Path, csv_path: Path, size: int):
    boxes = [
        BoxAnnotation(label, [x, y, x + w, y + h], f"{csv_path}, row {line}", "Bbox [x,y,w,h]")
        for line, label, (x, y, w, h) in rows
    ]
    return ImageRecord(
        path, name, name.split("_")[0], split, f"{csv_path}, row {rows[0][0]}", boxes,
        frame=(size, size), report_key=name,
    )  # fmt: skip


def _key_phrase(report: str, label: str, position: str, stats: BuildStats) -> str:
    """The answer phrase of a report row: the reader's label for the finding of ``label`` (see the module doc)."""
    # the report-language modules; imported on the first narrative build
    from ..reading_medrg import ReportReader, key_phrase

    reader = ReportReader()  # the shipped vocabulary, compiled once per process
    category = reader.vocabulary.category_of_label(label)
    side = next((w for w in position.lower().split() if w in ("left", "right")), "")
    found = [f for f in reader.read(report).stated if f.category == category]
    if found:
        # the row's side first, then a finding the report does not hedge
        return min(found, key=lambda f: (bool(side) and f.side != side, f.uncertain)).label
    phrase = " ".join(str(key_phrase(report, label, position)).split())
    if not phrase:
        stats.skip("narrative rows whose report gave no key phrase (the label is the phrase)")
        return label.lower()
    return phrase


def _narrative_field(obj: dict, name: str, where: str, allow_empty: bool = False) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise DataFormatError(f"{where}: field {name!r} = {value!r:.60}, expected a non-empty string")
    return value


def _csv_box_of(obj: dict, rows: list[Row], label: str, where: str) -> list[float]:
    """The CSV box ([x, y, w, h], 1024 frame) that the report row's ``box_xyxy`` names."""
    box = obj.get("box_xyxy")
    if not isinstance(box, list) or len(box) != 4:
        raise DataFormatError(f"{where}: field 'box_xyxy' = {box!r:.80}, expected [xmin, ymin, xmax, ymax]")
    xyxy = [parse_float(v, where, "box_xyxy") for v in box]
    cands = [(x, y, w, h) for _line, lab, (x, y, w, h) in rows if lab == label]
    dist = [max(abs(a - b) for a, b in zip(xyxy, (x, y, x + w, y + h))) for x, y, w, h in cands]
    if not cands or min(dist) > BOX_MATCH_PX:
        raise DataFormatError(
            f"{where}: field 'box_xyxy' = {[round(v, 1) for v in xyxy]} matches no {ANNOTATION_FILE} box of "
            f"this image and label {label!r}"
        )
    return list(cands[dist.index(min(dist))])


def _narrative_records(path: Path, writer: str, split: str, per_image, image_split, index, size, stats):
    """One record per report row of ``path`` (the ``writer``'s reports for ``split``)."""
    records = []
    for line, obj in iter_json_lines(path):
        where = f"{path}, row {line}"
        name = _narrative_field(obj, "image", where)
        label = _narrative_field(obj, "label", where)
        if name not in per_image or image_split[name] != split:
            raise DataFormatError(
                f"{where}: field 'image' = {name!r} is not a boxed image of split {split!r} in "
                f"{ANNOTATION_FILE}"
            )
        if label not in LABELS:
            raise DataFormatError(f"{where}: field 'label' = {label!r} is not a known label {list(LABELS)}")
        x, y, w, h = _csv_box_of(obj, per_image[name], label, where)
        report = _narrative_field(obj, "report", where)
        phrase = _key_phrase(report, label, _narrative_field(obj, "position", where, allow_empty=True), stats)
        box = BoxAnnotation(label, [x, y, x + w, y + h], where, "box_xyxy", phrase=phrase)
        records.append(
            ImageRecord(
                index[name], f"{name}#{writer}:{label.lower()}", name.split("_")[0], split, where, [box],
                report=report, frame=(size, size), source=f"{SOURCE}:{writer}",
            )
        )  # fmt: skip
    if not records:
        raise DataFormatError(f"{path}: no report rows")
    return records


def _report_files(reports_dir: Path, writers: Sequence[str], splits: set[str], strict: bool) -> dict:
    """(writer, split) -> reports file; a missing file is an error when the writer was asked for by name."""
    files = {}
    for writer in writers:
        for split in sorted(splits):
            path = reports_dir / f"{REPORT_FILE_SPLIT[split]}_{writer}.jsonl"
            if path.is_file():
                files[(writer, split)] = path
            elif strict:
                raise DataFormatError(f"{path}: reports of writer {writer!r} for split {split!r} not found")
            else:
                logger.info("chestxray8: no %s reports for split %s (%s absent)", writer, split, path.name)
    return files


def _check_size(original_size) -> None:
    if (
        isinstance(original_size, bool)
        or not isinstance(original_size, (int, float))
        or not original_size > 0
    ):
        raise ValueError(f"original_size must be a positive number of pixels, got {original_size!r}")


def _collect(data_dir: Path, reports, reports_dir, splits: tuple, original_size: int, stats: BuildStats):
    """(records of every asked report source, input files, image list) of the CSV, splits and reports."""
    sources, csv_path = _report_sources(reports), data_dir / ANNOTATION_FILE
    per_image = _boxes_per_image(csv_path)
    image_split, split_paths = _assign_splits(data_dir, per_image, csv_path, *splits, stats)
    index = _index_images(data_dir, per_image, csv_path)
    records = [
        _template_record(n, per_image[n], image_split[n], index[n], csv_path, original_size)
        for n in (sorted(per_image) if "template" in sources else [])
    ]
    writers = [s for s in sources if s != "template"]
    strict = "all" not in ([reports] if isinstance(reports, str) else reports)
    rdir = Path(reports_dir) if reports_dir is not None else data_dir / "reports"
    report_files = _report_files(rdir, writers, set(image_split.values()), strict)
    for (writer, split), path in report_files.items():
        records += _narrative_records(
            path, writer, split, per_image, image_split, index, original_size, stats
        )
    images = sorted((k, str(v)) for k, v in index.items() if k in per_image)
    return records, [csv_path, *split_paths, *report_files.values()], (sources, images)


def build_chestxray8(
    data_dir: str | os.PathLike,
    split_files: dict[str, str | os.PathLike] | None = None,
    split_fractions: dict[str, float] | None = None,
    split_seed: int = 0,
    original_size: int = 1024,
    clip_tolerance_px: float = 2.0,
    report_seed: int = 0,
    reports: str | Sequence[str] = "template",
    reports_dir: str | os.PathLike | None = None,
    id_secret: str | bytes | None = None,
    cache_dir: str | None = None,
    progress: bool | None = None,
    streaming: bool = False,
):
    """Build ChestX-ray8 boxes as a ``DatasetDict`` (policies, ``reports=`` and ids: the module docstring).

    ``reports``: ``"template"`` (default), ``"gpt"``, ``"llama"``, ``"all"`` or a list of them;
    ``reports_dir``: folder of ``{split}_{writer}.jsonl`` (default ``data_dir/reports``); ``id_secret``:
    key of the published patient ids. Boxes are pixel ``[xmin, ymin, xmax, ymax]`` of the stored image.
    """
    _check_size(original_size)
    data_dir, stats = Path(data_dir), BuildStats(SOURCE)
    splits = (split_files, split_fractions, split_seed)
    records, inputs, parts = _collect(data_dir, reports, reports_dir, splits, original_size, stats)
    return build_from_records(
        records,
        SOURCE,
        fingerprint_parts=(
            original_size,
            split_seed,
            sorted((split_fractions or {}).items()),
            *parts,
            file_signature(inputs),
        ),  # fmt: skip
        options=BuildOptions(clip_tolerance_px, cache_dir, progress, streaming),
        id_secret=resolve_id_secret(id_secret, data_dir),
        image_field="Image Index",
        report_seed=report_seed,
        negatable=NEGATABLE,
        stats=stats,
    )
