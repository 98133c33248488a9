"""MS-CXR (PhysioNet, credentialed): phrase-grounding boxes on MIMIC-CXR-JPG images.

Annotation CSV columns: ``dicom_id, category_name, label_text, path, x, y, w, h, image_width,
image_height, split``. ``x, y, w, h`` are pixels of the original image (``image_width`` x ``image_height``);
boxes are mapped to the image actually read. Rows of one image with the same ``label_text`` form one
finding with several boxes. ``path`` is relative to the MIMIC-CXR-JPG root (``images_dir``, default
``data_dir``). Without ``reports_dir`` the report is the image's phrases as sentences; with it (the
MIMIC-CXR report root, ``files/pXX/pNNNNNNNN/sNNNNNNNN.txt``) the real report text, so the task is the full
report -> phrases. The patient key is the ``pNNNNNNNN`` folder of ``path``; it is published only as a keyed
hash (HMAC-SHA256; secret from ``id_secret`` / ``$MEDRG_ID_SECRET`` / ``<data_dir>/.medrg_id_secret``, see
``common.resolve_id_secret``). ``image_id`` is the ``dicom_id`` (a MIMIC de-identified id, no path).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .common import (
    DataFormatError,
    file_signature,
    normalise_split,
    parse_float,
    read_csv_rows,
    read_text_checked,
    resolve_id_secret,
)
from .records import BoxAnnotation, BuildOptions, ImageRecord, build_from_records

SOURCE = "ms-cxr"
COLUMNS = (
    "dicom_id",
    "category_name",
    "label_text",
    "path",
    "x",
    "y",
    "w",
    "h",
    "image_width",
    "image_height",
    "split",
)
CATEGORIES = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Lung Opacity",
    "Pleural Effusion",
    "Pneumonia",
    "Pneumothorax",
)
_PATIENT = re.compile(r"(?:^|/)(p\d{6,})(?:/|$)")
_STUDY = re.compile(r"(?:^|/)(s\d{6,})(?:/|$)")


def _find_csv(data_dir: Path) -> Path:
    cands = sorted(data_dir.glob("MS_CXR_Local_Alignment*.csv")) or sorted(data_dir.glob("*.csv"))
    if not cands:
        raise DataFormatError(f"{data_dir}: no MS-CXR annotation CSV (MS_CXR_Local_Alignment_*.csv) found")
    return cands[-1]


def _parse_row(where: str, row: dict) -> tuple[str, list[float], tuple[float, float], str, str]:
    """(category, [x, y, w, h], (image_width, image_height), patient folder, split) of one CSV row."""
    cat = row["category_name"]
    if cat not in CATEGORIES:
        raise DataFormatError(
            f"{where}: field 'category_name' = {cat!r} is not a known category {list(CATEGORIES)}"
        )
    box = [parse_float(row[k], where, k) for k in ("x", "y", "w", "h")]
    iw, ih = (parse_float(row[k], where, k) for k in ("image_width", "image_height"))
    if iw <= 0 or ih <= 0:
        raise DataFormatError(f"{where}: field 'image_width'/'image_height' must be positive, got {iw}x{ih}")
    m = _PATIENT.search(row["path"].replace("\\", "/"))
    if m is None:
        raise DataFormatError(f"{where}: field 'path' = {row['path']!r} has no pNNNNNNNN patient folder")
    return cat, box, (iw, ih), m.group(1), normalise_split(row["split"], f"{where}: field 'split'")


def _report_text(where: str, path: str, patient: str, reports_dir: Path) -> str:
    sm = _STUDY.search(path.replace("\\", "/"))
    if sm is None:
        raise DataFormatError(f"{where}: field 'path' has no sNNNNNNNN study folder for the report")
    rpath = reports_dir / "files" / patient[:3] / patient / f"{sm.group(1)}.txt"
    if not rpath.is_file():
        raise DataFormatError(f"{where}: report file {rpath} not found")
    return read_text_checked(rpath).strip()


def _records(csv_path: Path, images_root: Path, reports_dir: Path | None) -> list[ImageRecord]:
    _, rows = read_csv_rows(csv_path, COLUMNS)
    records: dict[str, ImageRecord] = {}
    seen: dict[tuple, int] = {}
    for line, row in rows:
        where = f"{csv_path}, row {line}"
        cat, (x, y, w, h), frame, patient, split = _parse_row(where, row)
        key = (row["dicom_id"], row["label_text"], x, y, w, h)
        if key in seen:
            raise DataFormatError(
                f"{where}: duplicate of row {seen[key]} (same dicom_id, label_text and box)"
            )
        seen[key] = line
        if not row["label_text"]:
            raise DataFormatError(f"{where}: field 'label_text' is empty, expected the finding's phrase")
        rec = records.get(row["dicom_id"])
        if rec is None:
            report = None if reports_dir is None else _report_text(where, row["path"], patient, reports_dir)
            rec = ImageRecord(
                images_root / row["path"], row["dicom_id"], patient, split, where, report=report, frame=frame
            )
            records[row["dicom_id"]] = rec
        elif rec.split != split or rec.frame != frame:
            raise DataFormatError(
                f"{where}: field 'split'/'image_width'/'image_height' disagrees with {rec.where} for the "
                "same dicom_id"
            )
        rec.boxes.append(BoxAnnotation(cat, [x, y, x + w, y + h], where, "x,y,w,h", phrase=row["label_text"]))
    return list(records.values())


def build_ms_cxr(
    data_dir: str | os.PathLike,
    annotation_file: str | os.PathLike | None = None,
    images_dir: str | os.PathLike | None = None,
    reports_dir: str | os.PathLike | None = None,
    clip_tolerance_px: float = 2.0,
    id_secret: str | bytes | None = None,
    cache_dir: str | None = None,
    progress: bool | None = None,
    streaming: bool = False,
):
    """Build MS-CXR as a ``DatasetDict`` (see the module docstring; ``id_secret``: key of the patient ids)."""
    data_dir = Path(data_dir)
    csv_path = Path(annotation_file) if annotation_file else _find_csv(data_dir)
    images_root = Path(images_dir) if images_dir else data_dir
    recs = _records(csv_path, images_root, None if reports_dir is None else Path(reports_dir))
    if reports_dir is None:
        for rec in recs:
            # phrases kept verbatim (mid-sentence), so the model can copy them out of the report
            phrases = list(dict.fromkeys(b.phrase for b in rec.boxes))
            rec.report = "FINDINGS: " + " ".join(f"There is {p.rstrip('.')}." for p in phrases)
    return build_from_records(
        recs,
        SOURCE,
        fingerprint_parts=(
            file_signature([csv_path]),
            str(images_root),
            str(reports_dir),
            file_signature(r.image_path for r in recs),
        ),
        options=BuildOptions(clip_tolerance_px, cache_dir, progress, streaming),
        id_secret=resolve_id_secret(id_secret, data_dir),
        image_field="path",
    )
