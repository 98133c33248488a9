"""The one prediction path: generate + post-process a list of rows into prediction records.

``predict_groundings`` is the single generation loop of the package: the training callback, the
evaluation runner, the benchmarks and the scripts all call it. It drives the model through
``ReportGroundingPipeline`` so that a record means exactly what ``pipeline("report-grounding")``
returns (the processor's ``post_process_grounding`` turned into records).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch


def _check_rows(rows: Sequence[Mapping]) -> list[dict]:
    checked = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or "image" not in row or "report" not in row:
            found = sorted(row) if isinstance(row, Mapping) else type(row).__name__
            raise ValueError(f"rows[{i}]: expected a mapping with keys 'image' and 'report', got {found}")
        checked.append({"image": row["image"], "report": row["report"]})
    return checked


def _model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def predict_groundings(
    model: Any,
    processor: Any,
    rows: Sequence[Mapping],
    *,
    batch_size: int = 16,
    threshold: float = 0.0,
    top_k: int | None = 1,
    max_new_tokens: int | None = None,
    guided: bool = True,
    return_status: bool = False,
) -> list[list[dict]] | list[dict]:
    """Ground every row's report in its image with ``model`` and ``processor``.

    Args:
        model: a ``MedRGForReportGrounding`` (any device; it is not moved, its train/eval mode is
            restored afterwards).
        processor: its ``MedRGProcessor``.
        rows: mappings with ``image`` (PIL image, path or array) and ``report`` (str); other keys
            (``findings``, ``image_id``, ...) are ignored.
        batch_size: rows per ``generate_grounding`` call.
        threshold: drop boxes whose confidence is below this (0 keeps every box, which the metrics need).
        top_k: boxes per phrase, best first (default 1: the box a user is shown, so accuracy@t is a top-1
            accuracy as in the papers; None gives every hypothesis, which turns accuracy@t into best-of-K).
        max_new_tokens: generation budget per report (None: the pipeline's default, 64 or what a guided answer
            needs if more).
        guided: report-guided decoding (the pipeline's default): the answer names only the findings the
            report states, each once, all of them. False: the model writes freely (its raw reading).
        return_status: per row the pipeline's status instead of its records: ``{"findings": [records],
            "finished", "report_truncated", "read": [every finding the report states, with "grounded" and, for
            one without a box, "reason"], "unsupported_text"}`` (``ReportGroundingPipeline``, ``return_status``).

    Returns:
        One list per row (same order, same length as ``rows``) of records
        ``{"label": str, "score": float in [0, 1], "box": {"xmin", "ymin", "xmax", "ymax"}}`` in the
        pixels of that row's image (the pipeline's records). With ``return_status``, one status dict per row.

    Raises:
        ValueError: a row without ``image``/``report``, or ``batch_size`` < 1.
    """
    from medrg.processing.pipeline_medrg import ReportGroundingPipeline

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    inputs = _check_rows(rows)
    if not inputs:
        return []
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        # device=the model's device: a Pipeline built without one moves the model to cuda:0.
        pipe = ReportGroundingPipeline(model=model, processor=processor, device=_model_device(model))
        options = {"max_new_tokens": max_new_tokens} if max_new_tokens is not None else {}
        if return_status:
            options["return_status"] = True
        outputs = pipe(
            inputs, batch_size=batch_size, threshold=threshold, top_k=top_k, guided=guided, **options
        )
    finally:
        model.train(was_training)
    if isinstance(outputs, Mapping) or (
        len(inputs) == 1 and outputs and isinstance(outputs[0], Mapping) and not return_status
    ):
        outputs = [outputs]  # a pipeline may unwrap a single input
    if len(outputs) != len(inputs):
        raise ValueError(f"the pipeline returned {len(outputs)} results for {len(inputs)} rows")
    if return_status:
        return [dict(status) for status in outputs]
    return [list(records) for records in outputs]


__all__ = ["predict_groundings"]
