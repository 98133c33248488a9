"""Evaluation of report grounding: metrics, baselines, the runner and its pictures.

- ``compute_grounding_metrics(predictions, references)``: every metric as plain numpy/scipy math
  (the same code the ``evaluate`` module ``grounding_accuracy/`` runs), incl. the label-aware
  ``label_accuracy@t`` (``names_category``: the report reader's vocabulary, ``CATEGORY_KEYWORDS``); ``box_iou_matrix`` is the package's
  one IoU.
- ``predict_groundings(model, processor, rows)``: the one generation + post-processing loop.
- ``evaluate_model(model_or_path, dataset, ...)``: batched inference + metrics + files.
- ``PriorBaseline``, ``CenterBaseline``: text-only and fixed-box baselines for every table.
"""

from .baselines import BASELINES, CenterBaseline, PriorBaseline, make_baseline
from .metrics import (
    CATEGORY_KEYWORDS,
    FindingMatch,
    PredictionMatch,
    average_precision,
    box_iou_matrix,
    compute_grounding_metrics,
    expected_calibration_error,
    match_sample,
    names_category,
    phrase_token_f1,
    risk_coverage_curve,
    validate_inputs,
)
from .prediction import predict_groundings
from .runner import PAPER_REFERENCE_ROWS, evaluate_model, metrics_table, resolve_predictor, run_inference

METRIC_PATH = __path__[0] + "/grounding_accuracy"
"""Folder to pass to ``evaluate.load`` for the ``grounding_accuracy`` module."""

__all__ = [
    "BASELINES",
    "CATEGORY_KEYWORDS",
    "METRIC_PATH",
    "PAPER_REFERENCE_ROWS",
    "CenterBaseline",
    "FindingMatch",
    "PredictionMatch",
    "PriorBaseline",
    "average_precision",
    "box_iou_matrix",
    "compute_grounding_metrics",
    "evaluate_model",
    "expected_calibration_error",
    "make_baseline",
    "match_sample",
    "metrics_table",
    "names_category",
    "phrase_token_f1",
    "predict_groundings",
    "resolve_predictor",
    "risk_coverage_curve",
    "run_inference",
    "validate_inputs",
]
