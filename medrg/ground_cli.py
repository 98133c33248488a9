"""`medrg ground --image X --report "..."`: ground a report on an X-ray with a MedRG model (default: embedded).

The inputs are checked first (image readable: PNG/JPEG/... or DICOM by `.dcm` name or the `DICM` marker;
report not empty; threshold a confidence; overlay path writable), then the model is loaded with
`medrg.loading.load_medrg` (one clear error naming the file of a broken folder; a folder's own Python code runs
only with `--trust-remote-code`) and run through the package's one prediction path,
`medrg.evaluation.predict_groundings`, with the pipeline's default threshold
(`medrg.processing.pipeline_medrg.DEFAULT_THRESHOLD`).

Output: one line per grounded phrase (or `--json`: the records as a JSON list); `--overlay out.png` also writes
the image with the boxes, phrases and scores drawn (`medrg.overlay.draw_groundings`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

DEFAULT_NAME = "default"  # = medrg.loading.DEFAULT_NAME (not imported here: `--help` stays light)
OVERLAY_SUFFIXES = (".png", ".jpg", ".jpeg")
# what --report-file reads at most (a report is a few KB; guards /dev/zero and the like)
MAX_REPORT_FILE_BYTES = 2**20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--image",
        required=True,
        help="X-ray image file: PNG/JPEG (8 or 16 bit) or DICOM (.dcm or DICM marker)",
    )
    report = parser.add_mutually_exclusive_group(required=True)
    report.add_argument("--report", help="the free-text report")
    report.add_argument(
        "--report-file", help="a UTF-8 text file holding the report ('-' reads it from standard input)"
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_NAME,
        help=f"MedRG model folder, or {DEFAULT_NAME!r} for the embedded model medrg/default_model (the default)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="drop every box below this confidence in [0, 1]; a stated finding whose box is dropped is still "
        "listed as read, not grounded (default: none for the report-guided answer, which shows each stated "
        "finding's best box with its score; with --free the pipeline's DEFAULT_THRESHOLD 0.1); 0 keeps every box",
    )
    parser.add_argument(
        "--top-k",
        type=int,
        default=1,
        help="boxes per phrase, best first (default 1; the model has K hypotheses)",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="generation budget in tokens (default: 64, or what the report-guided answer needs if more)",
    )
    parser.add_argument(
        "--free",
        action="store_true",
        help="let the model write its answer freely (default: report-guided, naming only the findings the report "
        "states, each once and all of them)",
    )
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run the model folder's own Python code (auto_map) if it is not a MedRG model type (default: never)",
    )
    parser.add_argument("--json", action="store_true", help="print only the records, as a JSON list")
    parser.add_argument(
        "--overlay",
        default=None,
        metavar="OUT.png",
        help="also write the image with boxes, phrases and scores",
    )


def _read_report_bytes(report_file: str) -> bytes:
    """The bytes of `--report-file`: `-` is standard input; a regular file, a pipe/FIFO, `/dev/stdin` or a
    process substitution `<(...)` is read (at most MAX_REPORT_FILE_BYTES); ValueError naming the file otherwise."""
    if report_file == "-":
        return sys.stdin.buffer.read(MAX_REPORT_FILE_BYTES + 1)
    path = Path(report_file)
    if not path.exists():
        raise ValueError(f"report file not found: {report_file}")
    if path.is_dir():
        raise ValueError(f"--report-file {report_file} is a folder; expected a UTF-8 text file")
    try:
        with open(path, "rb") as handle:
            return handle.read(MAX_REPORT_FILE_BYTES + 1)
    except OSError as error:
        raise ValueError(f"report file {report_file} cannot be read: {error.strerror or error}") from None


def read_report(report: str | None, report_file: str | None) -> str:
    """The report text from `--report` or `--report-file` (`-` for standard input); ValueError if missing,
    unreadable, not UTF-8, over MAX_REPORT_FILE_BYTES or empty."""
    if report is None:
        name = "standard input" if report_file == "-" else report_file
        data = _read_report_bytes(report_file)
        if len(data) > MAX_REPORT_FILE_BYTES:
            raise ValueError(
                f"report file {name} is larger than {MAX_REPORT_FILE_BYTES // 2**20} MiB: not a report"
            )
        try:
            report = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(
                f"report file {name} is not UTF-8 text ({error.reason} at byte {error.start})"
            ) from None
        source = f"report file {name}"
    else:
        source = "--report"
    if not report.strip():
        raise ValueError(f"{source} is empty: pass the free-text report to ground")
    return report


def read_image(path: str) -> Any:
    """The image at `path` as the pipeline reads it (PIL image; DICOM: uint8 array); ValueError naming it."""
    file = Path(path)
    if not file.exists():
        raise ValueError(f"image file not found: {path}")
    if file.is_dir():
        raise ValueError(f"--image {path} is a folder; expected an image file (PNG/JPEG/DICOM)")
    if not file.is_file():
        raise ValueError(
            f"--image {path} is not a regular file (a pipe, device or socket); save the image to a file first"
        )
    from medrg.processing.image_processing_medrg import load_image

    return load_image(str(file))


def check_options(args: argparse.Namespace) -> None:
    """Check the numeric options and the overlay path before anything heavy is loaded."""
    if args.threshold is not None and not (math.isfinite(args.threshold) and 0.0 <= args.threshold <= 1.0):
        raise ValueError(f"--threshold must be a confidence in [0, 1], got {args.threshold}")
    if args.top_k < 1:
        raise ValueError(f"--top-k must be a positive number of boxes per phrase, got {args.top_k}")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be a positive number of tokens, got {args.max_new_tokens}")
    if args.overlay is not None:
        overlay = Path(args.overlay)
        if overlay.suffix.lower() not in OVERLAY_SUFFIXES:
            raise ValueError(f"--overlay {args.overlay}: expected a .png or .jpg file name")
        if not overlay.parent.is_dir():
            raise ValueError(f"--overlay {args.overlay}: folder {overlay.parent} does not exist")
        if overlay.is_dir():
            raise ValueError(f"--overlay {args.overlay} is a folder; expected an image file name")


def format_records(records: list[dict]) -> str:
    """One line per record: `'phrase': score 0.87, box [x0, y0, x1, y1] px`."""
    if not records:
        return "No finding grounded."
    lines = []
    for record in records:
        box = record["box"]
        lines.append(
            f"{record['label']!r}: score {record['score']:.2f}, box "
            f"[{box['xmin']:.0f}, {box['ymin']:.0f}, {box['xmax']:.0f}, {box['ymax']:.0f}] px"
        )
    return "\n".join(lines)


def format_not_grounded(read: list[dict], unsupported: list[str]) -> str:
    """One line per stated finding that got no box (`read, not grounded: 'emphysema' (why)`) and one per
    sentence the reader could not read."""
    lines = [
        f"read, not grounded: {entry['label']!r} ({entry.get('reason', 'no box')})"
        for entry in read
        if not entry.get("grounded")
    ]
    lines += [f"not read (unsupported language): {sentence!r}" for sentence in unsupported]
    return "\n".join(lines)


def print_notes(status: dict, max_length: int, free: bool) -> None:
    """A truncated report or an answer cut off by --max-new-tokens, said on stderr."""
    if status["report_truncated"]:
        print(
            f"note: the report is longer than the model's max_length ({max_length} tokens) and was "
            "truncated for the model"
            + (
                "; the findings to ground were still read from the whole report (report-guided)"
                if not free
                else ""
            ),
            file=sys.stderr,
        )
    if not status["finished"]:
        print(
            "note: the answer was cut off by --max-new-tokens before it finished: the findings may be incomplete",
            file=sys.stderr,
        )


def run(args: argparse.Namespace) -> int:
    check_options(args)
    report = read_report(args.report, args.report_file)
    image = read_image(args.image)

    from transformers.utils import logging as hf_logging

    from medrg.loading import load_medrg
    from medrg.processing.pipeline_medrg import DEFAULT_THRESHOLD, ReportGroundingPipeline

    hf_logging.disable_progress_bar()  # stderr stays for errors (one line each)
    # a threshold the caller sets filters every box; unset, the guided answer keeps each stated finding's best box
    threshold = args.threshold if args.threshold is not None else (DEFAULT_THRESHOLD if args.free else None)
    model, processor = load_medrg(args.model, trust_remote_code=args.trust_remote_code)
    model.eval()
    pipe = ReportGroundingPipeline(model=model, processor=processor, device=model.device)
    options = {} if args.max_new_tokens is None else {"max_new_tokens": args.max_new_tokens}
    if threshold is not None:
        options["threshold"] = threshold
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the truncation is reported below, once
        status = pipe(
            image,
            report=report,
            top_k=args.top_k,
            guided=not args.free,
            return_status=True,
            **options,
        )
    records = status["findings"]
    print_notes(status, processor.max_length, args.free)
    if args.overlay is not None:
        from medrg.overlay import draw_groundings

        draw_groundings(image, records).save(args.overlay)
    not_grounded = format_not_grounded(status.get("read", []), status.get("unsupported_text", []))
    if args.json:
        print(json.dumps(records, indent=2))
        if not_grounded:
            print(not_grounded, file=sys.stderr)
        return 0
    name = "default (embedded medrg/default_model)" if args.model == DEFAULT_NAME else args.model
    shown = "threshold none (each stated finding's best box)"
    if threshold is not None:
        shown = f"threshold {threshold:g}"
    print(f"model: {name}; {shown}")
    print(format_records(records))
    if not_grounded:
        print(not_grounded)
    if args.overlay is not None:
        print(f"overlay: {args.overlay}")
    return 0
