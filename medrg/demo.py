"""A Gradio app: upload a chest X-ray (PNG/JPEG/DICOM), paste its report, see the grounded findings.

Needs the optional extra ``demo`` (``pip install 'medrg[demo]'``, i.e. gradio). Start it with
``medrg demo [--model DIR] [--port 7860]`` or ``python -m medrg.demo``; in Python ``build_demo(model).launch()``.

The app shows the X-ray with each finding's box, phrase and score (``medrg.overlay.draw_groundings``, the same
drawing as ``medrg ground --overlay``), a table of the findings (phrase, score, box in the image's pixels) and a
table of the findings the report states that got no box ("read, not grounded": a finding the model was never
trained to box, such as a granuloma, or one whose box fell below the threshold), so a report that states a
finding never looks normal.
It runs the package's one prediction path (``medrg.evaluation.predict_groundings``) with the pipeline's default
threshold. Nothing is stored: the upload lives in Gradio's temporary folder only, and no file name or DICOM tag is
shown. It is a research demo, not a medical device.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

TABLE_HEADERS = ["finding", "score", "box (xmin, ymin, xmax, ymax) px"]
NOT_GROUNDED_HEADERS = ["read, not grounded", "why no box"]
IMAGE_TYPES = [".png", ".jpg", ".jpeg", ".dcm", ".dicom"]
DEFAULT_PORT = 7860


def findings_table(records: list[dict]) -> list[list[Any]]:
    """The records as table rows ``[phrase, score (3 decimals), "[x0, y0, x1, y1]"]`` (pixels, rounded)."""
    rows = []
    for record in records:
        box = record["box"]
        corners = ", ".join(f"{box[k]:.0f}" for k in ("xmin", "ymin", "xmax", "ymax"))
        rows.append([record["label"], round(float(record["score"]), 3), f"[{corners}]"])
    return rows


def not_grounded_table(read: list[dict]) -> list[list[str]]:
    """The stated findings without a box (the pipeline's ``read`` status entries with ``grounded: False``) as rows
    ``[label (", uncertain" when hedged), reason]``."""
    rows = []
    for finding in read:
        if finding.get("grounded"):
            continue
        label = finding["label"] + (" (uncertain)" if finding.get("uncertain") else "")
        rows.append([label, str(finding.get("reason") or "")])
    return rows


def status_line(records: list[dict], not_grounded: list[list[str]]) -> str:
    """What the page says above the tables: findings grounded, and findings read but not grounded."""
    grounded = f"{len(records)} finding(s) grounded." if records else "No finding grounded."
    if not not_grounded:
        return grounded
    return f"{grounded} {len(not_grounded)} finding(s) read, not grounded: " + "; ".join(
        row[0] for row in not_grounded
    )


def make_grounder(model: Any = "default", threshold: float | None = None, trust_remote_code: bool = False):
    """``ground(image, report) -> (overlay PIL image, records, read)`` for a model folder, ``"default"`` or a
    loaded ``(model, processor)``: ``records`` the boxes, ``read`` every finding the report states with whether it
    got a box (the pipeline's ``return_status`` entries). ``image``: a file path (PNG/JPEG/DICOM), a PIL image or
    an array. Raises ValueError for an empty report or an unreadable image."""
    from medrg.evaluation.prediction import predict_groundings
    from medrg.loading import load_medrg
    from medrg.overlay import draw_groundings
    from medrg.processing.image_processing_medrg import load_image
    from medrg.processing.pipeline_medrg import DEFAULT_THRESHOLD

    if isinstance(model, tuple):
        loaded, processor = model
    else:
        loaded, processor = load_medrg(model, trust_remote_code=trust_remote_code)
    cutoff = DEFAULT_THRESHOLD if threshold is None else float(threshold)

    def ground(image: Any, report: str) -> tuple[Any, list[dict], list[dict]]:
        if not isinstance(report, str) or not report.strip():
            raise ValueError("the report is empty: paste the free-text report to ground")
        if image is None:
            raise ValueError("no image: upload a chest X-ray (PNG, JPEG or DICOM)")
        if isinstance(image, (str, os.PathLike)):
            # an upload's file name may name the patient: errors never show it (nor its temporary path)
            try:
                pixels = load_image(image)
            except ValueError:
                raise ValueError(
                    "the uploaded file cannot be read as an image: upload a PNG, JPEG or DICOM chest X-ray"
                ) from None
        else:
            pixels = load_image(image)
        (status,) = predict_groundings(
            loaded,
            processor,
            [{"image": pixels, "report": report}],
            batch_size=1,
            threshold=cutoff,
            return_status=True,
        )
        records = status["findings"]
        return draw_groundings(pixels, records), records, list(status["read"])

    return ground


def build_demo(model: Any = "default", *, threshold: float | None = None, trust_remote_code: bool = False):
    """The Gradio ``Blocks`` app for ``model`` (a MedRG folder, ``"default"`` = the embedded model, or a loaded
    ``(model, processor)``); the model is loaded here, once. Call ``.launch()`` on the result."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no network calls
    import gradio as gr

    ground = make_grounder(model, threshold=threshold, trust_remote_code=trust_remote_code)

    def on_submit(image_file: str | None, report: str):
        try:
            overlay, records, read = ground(image_file, report)
        except ValueError as error:
            raise gr.Error(" ".join(str(error).split())) from None
        not_grounded = not_grounded_table(read)
        return overlay, findings_table(records), not_grounded, status_line(records, not_grounded)

    with gr.Blocks(title="MedRG report grounding") as demo:
        gr.Markdown(
            "# MedRG: ground a radiology report on its chest X-ray\n"
            "Upload the X-ray (PNG, JPEG or DICOM), paste the report and press **Ground**. "
            "Research demo, not for clinical use; do not upload identifiable patient data."
        )
        with gr.Row():
            with gr.Column():
                image_in = gr.File(
                    label="Chest X-ray (PNG, JPEG, DICOM)", file_types=IMAGE_TYPES, type="filepath",
                    elem_id="medrg-image",
                )  # fmt: skip
                report_in = gr.Textbox(label="Report", lines=8, elem_id="medrg-report")
                button = gr.Button("Ground", variant="primary", elem_id="medrg-ground")
            with gr.Column():
                overlay_out = gr.Image(label="Grounded findings", type="pil", elem_id="medrg-overlay")
                status_out = gr.Markdown(elem_id="medrg-status")
                table_out = gr.Dataframe(
                    headers=TABLE_HEADERS, datatype=["str", "number", "str"], interactive=False,
                    label="Findings", elem_id="medrg-findings",
                )  # fmt: skip
                not_grounded_out = gr.Dataframe(
                    headers=NOT_GROUNDED_HEADERS, datatype=["str", "str"], interactive=False,
                    label="Read in the report, not grounded", elem_id="medrg-not-grounded",
                )  # fmt: skip
        button.click(
            on_submit,
            inputs=[image_in, report_in],
            outputs=[overlay_out, table_out, not_grounded_out, status_out],
        )
    return demo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="default", help="MedRG model folder, or 'default' (embedded model)"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: this machine only)"
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--threshold", type=float, default=None, help="confidence threshold (default: pipeline's)"
    )
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="run the model folder's own code (default: never)"
    )


def run(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    demo = build_demo(args.model, threshold=args.threshold, trust_remote_code=args.trust_remote_code)
    demo.launch(server_name=args.host, server_port=args.port, share=False, show_error=True, inbrowser=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    from medrg.cli import main as medrg_main

    return medrg_main(["demo", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
