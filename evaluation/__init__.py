"""Evaluation of report grounding: metrics, baselines, the runner and its pictures.

- ``compute_grounding_metrics(predictions, references)``: every metric as plain numpy/scipy math
  (the same code the ``evaluate`` module ``grounding_accuracy/`` runs).
- ``evaluate_model(model_or_path, dataset, ...)``: batched inference + metrics + files.
- ``PriorBaseline``, ``CenterBaseline``: text-only and fixed-box baselines for every table.
"""

from .baselines import BASELINES, CenterBaseline, PriorBaseline, make_baseline
from .metrics import (
    average_precision,
    box_iou_matrix,
    compute_grounding_metrics,
    expected_calibration_error,
    match_sample,
    phrase_token_f1,
    risk_coverage_curve,
    validate_inputs,
)
from .runner import PAPER_REFERENCE_ROWS, evaluate_model, metrics_table, resolve_predictor, run_inference

METRIC_PATH = __path__[0] + "/grounding_accuracy"
"""Folder to pass to ``evaluate.load`` for the ``grounding_accuracy`` module."""

__all__ = [
    "BASELINES",
    "METRIC_PATH",
    "PAPER_REFERENCE_ROWS",
    "CenterBaseline",
    "PriorBaseline",
    "average_precision",
    "box_iou_matrix",
    "compute_grounding_metrics",
    "evaluate_model",
    "expected_calibration_error",
    "make_baseline",
    "match_sample",
    "metrics_table",
    "phrase_token_f1",
    "resolve_predictor",
    "risk_coverage_curve",
    "run_inference",
    "validate_inputs",
]
