"""`medrg ground --image X --report "..."`: ground a report on an X-ray with a MedRG model (default: embedded)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medrg.default_model import DEFAULT_MODEL_DIR, require_default_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--image", required=True, help="X-ray image file (PNG/JPEG, 8 or 16 bit; DICOM with [dicom])"
    )
    report = parser.add_mutually_exclusive_group(required=True)
    report.add_argument("--report", help="the free-text report")
    report.add_argument("--report-file", help="a text file holding the report")
    parser.add_argument(
        "--model", default=None, help=f"MedRG model folder (default: embedded {DEFAULT_MODEL_DIR.name})"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="drop boxes below this confidence (each phrase keeps its best box); 0 lists every hypothesis",
    )
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print the records as JSON only")


def _read_image(path: str):
    if path.lower().endswith(".dcm"):
        from medrg.processing.data.dicom import read_dicom_image

        return read_dicom_image(path)
    return path


def run(args: argparse.Namespace) -> int:
    from transformers import pipeline

    import medrg  # noqa: F401  (registers the task and classes)

    model_dir = args.model or str(require_default_model())
    if not Path(args.image).is_file():
        raise SystemExit(f"medrg ground: image file not found: {args.image}")
    report = args.report if args.report is not None else Path(args.report_file).read_text()
    pipe = pipeline("report-grounding", model=model_dir)
    records = pipe(
        _read_image(args.image), report=report, threshold=args.threshold, max_new_tokens=args.max_new_tokens
    )
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    print(f"model: {model_dir}")
    if not records:
        print("No finding grounded.")
    for record in records:
        box = record["box"]
        print(
            f"{record['label']!r}: score {record['score']:.2f}, box "
            f"[{box['xmin']:.0f}, {box['ymin']:.0f}, {box['xmax']:.0f}, {box['ymax']:.0f}] px"
        )
    return 0
