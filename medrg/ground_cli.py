"""`medrg ground --image X --report "..."`: ground a report on an X-ray with a MedRG model (default: embedded).

The model is loaded with `medrg.loading.load_medrg` (one clear error naming the file of a broken folder; a
folder's own Python code runs only with `--trust-remote-code`) and run through the package's one prediction
path, `medrg.evaluation.predict_groundings`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medrg.defaults import DEFAULT_MODEL_DIR


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
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run the model folder's own Python code (auto_map) if it is not a MedRG model type (default: never)",
    )
    parser.add_argument("--json", action="store_true", help="print the records as JSON only")


def _read_image(path: str):
    if path.lower().endswith(".dcm"):
        from medrg.processing.data.dicom import read_dicom_image

        return read_dicom_image(path)
    return path


def run(args: argparse.Namespace) -> int:
    from medrg.evaluation.prediction import predict_groundings
    from medrg.loading import DEFAULT_NAME, load_medrg

    if not Path(args.image).is_file():
        raise ValueError(f"image file not found: {args.image}")
    if args.report is not None:
        report = args.report
    elif not Path(args.report_file).is_file():
        raise ValueError(f"report file not found: {args.report_file}")
    else:
        report = Path(args.report_file).read_text(encoding="utf-8")
    model_dir = args.model or DEFAULT_NAME
    model, processor = load_medrg(model_dir, trust_remote_code=args.trust_remote_code)
    (records,) = predict_groundings(
        model,
        processor,
        [{"image": _read_image(args.image), "report": report}],
        batch_size=1,
        threshold=args.threshold,
        max_new_tokens=args.max_new_tokens,
    )
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    print(f"model: {DEFAULT_MODEL_DIR if model_dir == DEFAULT_NAME else model_dir}")
    if not records:
        print("No finding grounded.")
    for record in records:
        box = record["box"]
        print(
            f"{record['label']!r}: score {record['score']:.2f}, box "
            f"[{box['xmin']:.0f}, {box['ymin']:.0f}, {box['xmax']:.0f}, {box['ymax']:.0f}] px"
        )
    return 0
