"""Report-grounding metrics as plain numpy/scipy functions (the single source of the math).

This flat file is the one copy of the metric math. ``medrg.evaluation`` re-exports it, and the
``evaluate`` module next to it (``grounding_accuracy.py``) imports it with
``from .grounding_metrics import ...``, which ``evaluate.load(folder)`` copies into its module cache
together with the script. It therefore imports nothing but numpy and scipy.

Inputs, per sample:
- predictions: a list of records ``{"label": str, "score": float in [0, 1],
  "box": {"xmin", "ymin", "xmax", "ymax"}}`` in image pixels (the pipeline's output);
- references: the dataset's ``findings``: a list of ``{"phrase": str, "category": str,
  "boxes": [[xmin, ymin, xmax, ymax], ...]}``; an empty list means "no finding".

Rules (also in the card, README.md):
- IoU of a prediction with a finding = the maximum IoU over that finding's boxes (``multi_box="max"``,
  a hit on any one of its boxes counts), or the IoU with the box enclosing all of them
  (``multi_box="union"``).
- Matching: per sample, one-to-one Hungarian assignment (``scipy.optimize.linear_sum_assignment``)
  maximising the summed IoU; phrase token F1 times 1e-6 breaks ties. A finding left without a
  prediction counts IoU 0; predictions left over are extra predictions (false positives).
- accuracy@t = share of reference findings whose matched IoU >= t; mean_iou = mean matched IoU over
  reference findings. With one box and one prediction per finding this is exactly the MRG papers'
  definition.
- AP@0.5: all predictions of the dataset ranked by score; per sample, greedy by score as in
  PASCAL VOC / COCO (a prediction is a true positive if it takes a not yet taken finding with
  IoU >= 0.5); all-point interpolated area under the precision-recall curve.
- Calibration: a prediction is a hit if its Hungarian match has IoU >= ``hit_iou`` (0.5).
  Expected calibration error over ``num_calibration_bins`` equal-width score bins; risk-coverage
  curve (risk = 1 - hit rate of the predictions with score >= s) and its area (AURC), tie-invariant.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

DEFAULT_IOU_THRESHOLDS = (0.1, 0.3, 0.5, 0.7)
BOX_KEYS = ("xmin", "ymin", "xmax", "ymax")
MULTI_BOX_RULES = ("max", "union")
PHRASE_TIEBREAK_WEIGHT = 1e-6

__all__ = [
    "DEFAULT_IOU_THRESHOLDS",
    "average_precision",
    "box_iou_matrix",
    "compute_grounding_metrics",
    "expected_calibration_error",
    "match_sample",
    "normalize_phrase",
    "phrase_token_f1",
    "risk_coverage_curve",
    "validate_inputs",
]


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
def _finite_number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{where}: expected a number, got {type(value).__name__} ({value!r})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{where}: expected a finite number, got {value}")
    return value


def _check_box(coords: Sequence[float], where: str) -> np.ndarray:
    xmin, ymin, xmax, ymax = coords
    if xmax < xmin:
        raise ValueError(f"{where}: xmax ({xmax}) < xmin ({xmin})")
    if ymax < ymin:
        raise ValueError(f"{where}: ymax ({ymax}) < ymin ({ymin})")
    return np.asarray(coords, dtype=np.float64)


def _validate_prediction(record: Any, where: str) -> dict:
    if not isinstance(record, Mapping):
        raise ValueError(f"{where}: expected a dict with keys label, score, box; got {type(record).__name__}")
    missing = [key for key in ("label", "score", "box") if key not in record]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}; a prediction record has label, score, box")
    label = record["label"]
    if label is None:
        label = ""
    if not isinstance(label, str):
        raise ValueError(f"{where}['label']: expected a string, got {type(label).__name__}")
    score = _finite_number(record["score"], f"{where}['score']")
    if not 0.0 <= score <= 1.0:
        raise ValueError(f"{where}['score']: {score} is outside [0, 1]")
    box = record["box"]
    if not isinstance(box, Mapping):
        raise ValueError(
            f"{where}['box']: expected a dict with keys {list(BOX_KEYS)}, got {type(box).__name__} ({box!r})"
        )
    missing = [key for key in BOX_KEYS if key not in box]
    if missing:
        raise ValueError(f"{where}['box']: missing key(s) {missing}; expected {list(BOX_KEYS)}")
    coords = [_finite_number(box[key], f"{where}['box']['{key}']") for key in BOX_KEYS]
    return {"label": label, "score": score, "box": _check_box(coords, f"{where}['box']")}


def _validate_finding(finding: Any, where: str) -> dict:
    if not isinstance(finding, Mapping):
        raise ValueError(
            f"{where}: expected a dict with keys phrase, category, boxes; got {type(finding).__name__}"
        )
    if "boxes" not in finding:
        raise ValueError(f"{where}: missing key 'boxes'; a finding has phrase, category, boxes")
    phrase = finding.get("phrase") or ""
    category = finding.get("category") or ""
    if not isinstance(phrase, str):
        raise ValueError(f"{where}['phrase']: expected a string, got {type(phrase).__name__}")
    if not isinstance(category, str):
        raise ValueError(f"{where}['category']: expected a string, got {type(category).__name__}")
    boxes = finding["boxes"]
    if isinstance(boxes, np.ndarray):
        boxes = boxes.tolist()
    if not isinstance(boxes, Sequence) or isinstance(boxes, str) or len(boxes) == 0:
        raise ValueError(
            f"{where}['boxes']: expected a non-empty list of [xmin, ymin, xmax, ymax]; got {boxes!r}"
        )
    checked = []
    for k, box in enumerate(boxes):
        box_where = f"{where}['boxes'][{k}]"
        if isinstance(box, np.ndarray):
            box = box.tolist()
        if not isinstance(box, Sequence) or isinstance(box, str) or len(box) != 4:
            raise ValueError(f"{box_where}: expected 4 numbers [xmin, ymin, xmax, ymax], got {box!r}")
        coords = [_finite_number(v, f"{box_where}[{i}]") for i, v in enumerate(box)]
        checked.append(_check_box(coords, box_where))
    return {"phrase": phrase, "category": category, "boxes": np.stack(checked)}


def validate_inputs(predictions: Sequence, references: Sequence) -> tuple[list[list[dict]], list[list[dict]]]:
    """Check and normalise the inputs; raise ``ValueError`` naming the sample index and field.

    Returns ``(predictions, references)`` with boxes as float64 numpy arrays (prediction ``box``: shape
    (4,); finding ``boxes``: shape (n, 4)), missing phrase/category filled with "".
    """
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions has {len(predictions)} samples but references has {len(references)}; "
            "expected one list of prediction records per reference sample"
        )
    checked_predictions, checked_references = [], []
    for i, (sample_predictions, sample_findings) in enumerate(zip(predictions, references)):
        for name, value in (("predictions", sample_predictions), ("references", sample_findings)):
            if value is not None and (not isinstance(value, Sequence) or isinstance(value, (str, Mapping))):
                raise ValueError(f"{name}[{i}]: expected a list (possibly empty), got {type(value).__name__}")
        checked_predictions.append(
            [
                _validate_prediction(r, f"predictions[{i}][{j}]")
                for j, r in enumerate(sample_predictions or [])
            ]
        )
        checked_references.append(
            [_validate_finding(f, f"references[{i}][{j}]") for j, f in enumerate(sample_findings or [])]
        )
    return checked_predictions, checked_references


# --------------------------------------------------------------------------------------------
# Boxes and phrases
# --------------------------------------------------------------------------------------------
def box_iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU between every box of ``boxes_a`` (N, 4) and ``boxes_b`` (M, 4), xyxy pixels -> (N, M).

    Boxes of zero area have IoU 0 with everything (also with themselves).
    """
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    width = np.clip(
        np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None
    )
    height = np.clip(
        np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None
    )
    intersection = width * height
    union = area_a[:, None] + area_b[None, :] - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, intersection / np.where(union > 0, union, 1.0), 0.0)
    return iou


_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_phrase(text: str) -> str:
    """Lower-case, punctuation to spaces, articles dropped, whitespace collapsed."""
    text = _PUNCTUATION.sub(" ", text.lower())
    return " ".join(token for token in text.split() if token not in ("a", "an", "the"))


def phrase_token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1 between two phrases after ``normalize_phrase`` (1.0 if both are empty)."""
    pred_tokens = normalize_phrase(prediction).split()
    ref_tokens = normalize_phrase(reference).split()
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)
    common = 0
    remaining = list(ref_tokens)
    for token in pred_tokens:
        if token in remaining:
            remaining.remove(token)
            common += 1
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def _prediction_finding_iou(pred_boxes: np.ndarray, findings: list[dict], multi_box: str) -> np.ndarray:
    """(P, R) IoU of each prediction box with each finding under the several-boxes rule."""
    iou = np.zeros((len(pred_boxes), len(findings)))
    if len(pred_boxes) == 0:
        return iou
    for r, finding in enumerate(findings):
        boxes = finding["boxes"]
        if multi_box == "union":
            boxes = np.concatenate([boxes[:, :2].min(0), boxes[:, 2:].max(0)])[None]
        iou[:, r] = box_iou_matrix(pred_boxes, boxes).max(axis=1)
    return iou


def match_sample(predictions: list[dict], findings: list[dict], multi_box: str = "max") -> dict:
    """One-to-one Hungarian matching of one sample's (validated) predictions to its findings.

    Returns ``{"iou": (P, R) array, "pred_to_finding": (P,) int (-1 = unmatched),
    "finding_iou": (R,) matched IoU (0 when unmatched), "finding_to_pred": (R,) int}``.
    """
    num_pred, num_ref = len(predictions), len(findings)
    pred_boxes = np.array([p["box"] for p in predictions]).reshape(-1, 4)
    iou = _prediction_finding_iou(pred_boxes, findings, multi_box)
    pred_to_finding = np.full(num_pred, -1, dtype=int)
    finding_to_pred = np.full(num_ref, -1, dtype=int)
    finding_iou = np.zeros(num_ref)
    if num_pred and num_ref:
        tiebreak = np.array(
            [[phrase_token_f1(p["label"], f["phrase"]) for f in findings] for p in predictions]
        )
        rows, cols = linear_sum_assignment(-(iou + PHRASE_TIEBREAK_WEIGHT * tiebreak))
        pred_to_finding[rows] = cols
        finding_to_pred[cols] = rows
        finding_iou[cols] = iou[rows, cols]
    return {
        "iou": iou,
        "pred_to_finding": pred_to_finding,
        "finding_to_pred": finding_to_pred,
        "finding_iou": finding_iou,
    }


# --------------------------------------------------------------------------------------------
# Ranking and calibration
# --------------------------------------------------------------------------------------------
def average_precision(
    scores: Sequence[float], true_positive: Sequence[bool], num_positives: int
) -> float | None:
    """All-point interpolated AP (area under the monotone precision envelope over recall).

    ``scores``/``true_positive``: one entry per prediction; ``num_positives``: number of reference
    findings. Ties in score are ranked true positives last (a pessimistic, order-independent choice).
    Returns None when there are no reference findings.
    """
    if num_positives <= 0:
        return None
    scores = np.asarray(scores, dtype=np.float64)
    hits = np.asarray(true_positive, dtype=bool)
    if scores.size == 0:
        return 0.0
    order = np.lexsort((hits, -scores))  # by score descending, then false positives first
    hits = hits[order]
    tp = np.cumsum(hits)
    fp = np.cumsum(~hits)
    recall = np.concatenate([[0.0], tp / num_positives])
    precision = np.concatenate([[1.0], tp / np.maximum(tp + fp, 1)])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum((recall[1:] - recall[:-1]) * precision[1:]))


def expected_calibration_error(scores: Sequence[float], hits: Sequence[bool], num_bins: int = 10) -> dict:
    """ECE over equal-width score bins ([0, 1/B), ..., [(B-1)/B, 1]).

    Returns ``{"ece", "bin_edges", "bin_count", "bin_confidence", "bin_accuracy"}`` (empty bins have
    None confidence/accuracy; ``ece`` is None without predictions).
    """
    scores = np.asarray(scores, dtype=np.float64)
    hits = np.asarray(hits, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    index = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, num_bins - 1)
    count, confidence, accuracy = [], [], []
    ece = 0.0
    for b in range(num_bins):
        in_bin = index == b
        n = int(in_bin.sum())
        count.append(n)
        if n == 0:
            confidence.append(None)
            accuracy.append(None)
            continue
        conf, acc = float(scores[in_bin].mean()), float(hits[in_bin].mean())
        confidence.append(conf)
        accuracy.append(acc)
        ece += n / scores.size * abs(acc - conf)
    return {
        "ece": float(ece) if scores.size else None,
        "bin_edges": edges.tolist(),
        "bin_count": count,
        "bin_confidence": confidence,
        "bin_accuracy": accuracy,
    }


def risk_coverage_curve(scores: Sequence[float], hits: Sequence[bool]) -> dict:
    """Selective-prediction curve: keep the predictions with score >= s, for every distinct s.

    ``coverage`` = share kept, ``risk`` = 1 - hit rate of the kept ones, ``thresholds`` = s (descending).
    ``aurc`` = mean over predictions (ranked by score) of the risk at that prediction's own score
    threshold: equal to the usual mean-over-k definition when scores are distinct, and independent of
    the order of tied scores. None without predictions.
    """
    scores = np.asarray(scores, dtype=np.float64)
    hits = np.asarray(hits, dtype=np.float64)
    if scores.size == 0:
        return {"coverage": [], "risk": [], "thresholds": [], "aurc": None}
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_hits = scores[order], hits[order]
    cumulative_hits = np.cumsum(sorted_hits)
    # last index of each group of equal scores
    group_end = np.r_[np.nonzero(np.diff(sorted_scores))[0], scores.size - 1]
    kept = group_end + 1
    risk = 1.0 - cumulative_hits[group_end] / kept
    group_sizes = np.diff(np.r_[0, kept])
    aurc = float(np.sum(risk * group_sizes) / scores.size)
    return {
        "coverage": (kept / scores.size).tolist(),
        "risk": risk.tolist(),
        "thresholds": sorted_scores[group_end].tolist(),
        "aurc": aurc,
    }


# --------------------------------------------------------------------------------------------
# The metric
# --------------------------------------------------------------------------------------------
def _threshold_key(threshold: float) -> str:
    return f"accuracy@{threshold:g}"


def _mean_or_none(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def compute_grounding_metrics(
    predictions: Sequence[Sequence[Mapping]],
    references: Sequence[Sequence[Mapping]],
    *,
    iou_thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS,
    multi_box: str = "max",
    hit_iou: float = 0.5,
    num_calibration_bins: int = 10,
    return_details: bool = False,
) -> dict[str, Any]:
    """Grounding metrics of per-sample prediction records against per-sample reference findings.

    Args:
        predictions: per sample, a list of ``{"label", "score", "box": {"xmin", "ymin", "xmax", "ymax"}}``.
        references: per sample, the dataset's ``findings`` (``{"phrase", "category", "boxes"}``).
        iou_thresholds: thresholds t of ``accuracy@t``.
        multi_box: ``"max"`` (IoU with a finding = best over its boxes) or ``"union"`` (IoU with the box
            enclosing all its boxes).
        hit_iou: IoU at which a prediction counts as a hit for AP and calibration.
        num_calibration_bins: equal-width score bins of the expected calibration error.
        return_details: also return ``"details"``: per finding (sample, category, IoU, phrase F1) and per
            prediction (sample, score, matched IoU, hit) lists, for plots.

    Returns:
        A dict of fractions in [0, 1] (None where undefined, e.g. accuracy without any finding):
        ``accuracy@t`` for each t, ``mean_iou``, ``average_precision@{hit_iou}``, ``phrase_exact_match``,
        ``phrase_token_f1``, ``expected_calibration_error``, ``aurc``, ``no_finding_accuracy`` (share of
        reports without findings answered with no box), ``false_boxes_per_no_finding_report``,
        ``extra_predictions_per_sample``, counts (``num_samples``, ``num_findings``, ``num_predictions``,
        ``num_no_finding_samples``, ``num_extra_predictions``, ``num_false_boxes_on_no_finding``),
        ``per_category`` (per category: ``num_findings``, ``accuracy@t``, ``mean_iou``),
        ``reliability`` (bins) and ``risk_coverage`` (curve).

    Raises:
        ValueError: naming the sample index and field of malformed input.
    """
    if multi_box not in MULTI_BOX_RULES:
        raise ValueError(f"multi_box must be one of {MULTI_BOX_RULES}, got {multi_box!r}")
    thresholds = [float(t) for t in iou_thresholds]
    checked_predictions, checked_references = validate_inputs(predictions, references)

    finding_rows = []  # (sample, category, iou, exact, f1)
    prediction_rows = []  # (sample, score, matched_iou, hit, ap_true_positive)
    num_extra = 0
    num_no_finding = 0
    no_finding_answered_empty = 0
    false_boxes_no_finding = 0
    for i, (preds, findings) in enumerate(zip(checked_predictions, checked_references)):
        match = match_sample(preds, findings, multi_box)
        for r, finding in enumerate(findings):
            p = match["finding_to_pred"][r]
            label = preds[p]["label"] if p >= 0 else None
            exact = label is not None and normalize_phrase(label) == normalize_phrase(finding["phrase"])
            f1 = phrase_token_f1(label, finding["phrase"]) if label is not None else 0.0
            finding_rows.append((i, finding["category"], float(match["finding_iou"][r]), float(exact), f1))
        # AP: greedy by score (VOC/COCO), independent of the Hungarian matching
        ap_tp = np.zeros(len(preds), dtype=bool)
        taken = np.zeros(len(findings), dtype=bool)
        for p in np.argsort([-pred["score"] for pred in preds], kind="stable"):
            if not len(findings):
                break
            candidates = np.where(taken, -1.0, match["iou"][p])
            best = int(np.argmax(candidates))
            if candidates[best] >= hit_iou:
                taken[best] = True
                ap_tp[p] = True
        for p, pred in enumerate(preds):
            r = match["pred_to_finding"][p]
            matched_iou = float(match["iou"][p, r]) if r >= 0 else 0.0
            prediction_rows.append((i, pred["score"], matched_iou, matched_iou >= hit_iou, bool(ap_tp[p])))
        num_extra += int(np.sum(match["pred_to_finding"] < 0))
        if not findings:
            num_no_finding += 1
            no_finding_answered_empty += int(len(preds) == 0)
            false_boxes_no_finding += len(preds)

    finding_iou = np.array([row[2] for row in finding_rows])
    result: dict[str, Any] = {}
    for t in thresholds:
        result[_threshold_key(t)] = float(np.mean(finding_iou >= t)) if finding_iou.size else None
    result["mean_iou"] = _mean_or_none(finding_iou)
    scores = [row[1] for row in prediction_rows]
    hits = [row[3] for row in prediction_rows]
    result[f"average_precision@{hit_iou:g}"] = average_precision(
        scores, [row[4] for row in prediction_rows], len(finding_rows)
    )
    result["phrase_exact_match"] = _mean_or_none([row[3] for row in finding_rows])
    result["phrase_token_f1"] = _mean_or_none([row[4] for row in finding_rows])
    reliability = expected_calibration_error(scores, hits, num_calibration_bins)
    risk_coverage = risk_coverage_curve(scores, hits)
    result["expected_calibration_error"] = reliability["ece"]
    result["aurc"] = risk_coverage["aurc"]
    result["no_finding_accuracy"] = no_finding_answered_empty / num_no_finding if num_no_finding else None
    result["false_boxes_per_no_finding_report"] = (
        false_boxes_no_finding / num_no_finding if num_no_finding else None
    )
    num_samples = len(checked_references)
    result["extra_predictions_per_sample"] = num_extra / num_samples if num_samples else None
    result.update(
        num_samples=num_samples,
        num_findings=len(finding_rows),
        num_predictions=len(prediction_rows),
        num_no_finding_samples=num_no_finding,
        num_extra_predictions=num_extra,
        num_false_boxes_on_no_finding=false_boxes_no_finding,
    )
    per_category: dict[str, dict[str, Any]] = {}
    for category in sorted({row[1] for row in finding_rows}):
        ious = np.array([row[2] for row in finding_rows if row[1] == category])
        entry: dict[str, Any] = {"num_findings": int(ious.size)}
        for t in thresholds:
            entry[_threshold_key(t)] = float(np.mean(ious >= t))
        entry["mean_iou"] = float(ious.mean())
        per_category[category] = entry
    result["per_category"] = per_category
    result["reliability"] = {k: v for k, v in reliability.items() if k != "ece"}
    result["risk_coverage"] = {k: v for k, v in risk_coverage.items() if k != "aurc"}
    if return_details:
        result["details"] = {
            "findings": [
                {"sample": s, "category": c, "iou": iou, "phrase_exact": bool(e), "phrase_f1": f}
                for s, c, iou, e, f in finding_rows
            ],
            "predictions": [
                {"sample": s, "score": sc, "iou": iou, "hit": bool(h)} for s, sc, iou, h, _ in prediction_rows
            ],
        }
    return result
