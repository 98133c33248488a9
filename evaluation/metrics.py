"""The grounding metrics as plain functions (no ``evaluate`` needed).

The single source of the math is ``grounding_accuracy/grounding_metrics.py``: it must stay a flat,
numpy/scipy-only file next to the ``evaluate`` module script so that ``evaluate.load(folder)`` copies
it for users who do not have ``medrg`` installed. This module only re-exports it.
"""

from .grounding_accuracy.grounding_metrics import (
    CATEGORY_KEYWORDS,
    DEFAULT_IOU_THRESHOLDS,
    FindingMatch,
    PredictionMatch,
    SampleMatch,
    average_precision,
    box_iou_matrix,
    compute_grounding_metrics,
    expected_calibration_error,
    match_dataset,
    match_sample,
    names_category,
    normalize_phrase,
    phrase_token_f1,
    risk_coverage_curve,
    validate_inputs,
    validate_options,
)

__all__ = [
    "CATEGORY_KEYWORDS",
    "DEFAULT_IOU_THRESHOLDS",
    "FindingMatch",
    "PredictionMatch",
    "SampleMatch",
    "average_precision",
    "box_iou_matrix",
    "compute_grounding_metrics",
    "expected_calibration_error",
    "match_dataset",
    "match_sample",
    "names_category",
    "normalize_phrase",
    "phrase_token_f1",
    "risk_coverage_curve",
    "validate_inputs",
    "validate_options",
]
