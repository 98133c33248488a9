"""Report-grounding metrics as plain numpy/scipy functions (the single source of the math).

This flat file is the one copy of the metric math. ``medrg.evaluation`` re-exports it, and the
``evaluate`` module next to it (``grounding_accuracy.py``) imports it with
``from .grounding_metrics import ...``, which ``evaluate.load(folder)`` copies into its module cache
together with the script. It therefore imports nothing but numpy, scipy and its sibling data file
``finding_vocabulary.py`` (the report reader's finding vocabulary and negation triggers, generated from MedRG's
reader by ``python -m medrg.evaluation.metric_vocabulary``; the script imports it too, so ``evaluate`` copies it).
It is also the package's one numpy IoU (``box_iou_matrix``): baselines and benchmarks import it.

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
- label_accuracy@t = share of reference findings whose matched prediction has IoU >= t AND a label
  that names the finding's category (``names_category``: the report reader's vocabulary wordings of the
  category, negated mentions do not count).
- AP@0.5: all predictions of the dataset ranked by score; per sample, greedy by score as in
  PASCAL VOC / COCO (a prediction is a true positive if it takes a not yet taken finding with
  IoU >= 0.5); all-point interpolated area under the precision-recall curve.
- Calibration: a prediction is a hit if its Hungarian match has IoU >= ``hit_iou`` (0.5).
  Expected calibration error over ``num_calibration_bins`` equal-width score bins; risk-coverage
  curve (risk = 1 - hit rate of the predictions with score >= s) and its area (AURC), tie-invariant.

Steps: ``validate_inputs`` -> ``match_dataset`` (named ``FindingMatch`` / ``PredictionMatch`` records)
-> ``summarise_findings`` / ``summarise_predictions`` / ``summarise_no_finding`` / ``per_category_metrics``.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from .finding_vocabulary import NEGATION_POST, NEGATION_PRE, PSEUDO_NEGATION, VOCABULARY

DEFAULT_IOU_THRESHOLDS = (0.1, 0.3, 0.5, 0.7)
BOX_KEYS = ("xmin", "ymin", "xmax", "ymax")
MULTI_BOX_RULES = ("max", "union")
PHRASE_TIEBREAK_WEIGHT = 1e-6

__all__ = [
    "CATEGORY_KEYWORDS",
    "DEFAULT_IOU_THRESHOLDS",
    "FindingMatch",
    "PredictionMatch",
    "SampleMatch",
    "average_precision",
    "box_iou_matrix",
    "category_keywords",
    "compute_grounding_metrics",
    "expected_calibration_error",
    "match_dataset",
    "match_sample",
    "names_category",
    "normalize_phrase",
    "per_category_metrics",
    "phrase_token_f1",
    "risk_coverage_curve",
    "summarise_findings",
    "summarise_no_finding",
    "summarise_predictions",
    "validate_inputs",
    "validate_options",
    "vocabulary_categories",
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
_LARGEST_SAFE_COORDINATE = 2.0**1000  # coordinate differences of smaller values cannot overflow


def box_iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU between every box of ``boxes_a`` (N, 4) and ``boxes_b`` (M, 4), xyxy (any unit) -> (N, M).

    Scale-safe: every pair's widths and heights are divided by the extent of the box enclosing both
    before areas are multiplied, so boxes at 1e200 or 1e-200 give the same IoU as at 1 (no overflow
    to inf, no underflow to 0). Boxes of zero area have IoU 0 with everything (also with themselves).
    """
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    largest = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0))
    if largest > _LARGEST_SAFE_COORDINATE:  # exact power-of-two rescale so that xmax - xmin stays finite
        a, b = a * 2.0**-64, b * 2.0**-64
    ax0, ay0, ax1, ay1 = (a[:, k, None] for k in range(4))
    bx0, by0, bx1, by1 = (b[None, :, k] for k in range(4))
    extent_x = np.maximum(ax1, bx1) - np.minimum(ax0, bx0)  # (N, M) width of the enclosing box
    extent_y = np.maximum(ay1, by1) - np.minimum(ay0, by0)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale_x = np.where(extent_x > 0, 1.0 / np.where(extent_x > 0, extent_x, 1.0), 0.0)
        scale_y = np.where(extent_y > 0, 1.0 / np.where(extent_y > 0, extent_y, 1.0), 0.0)
        inter_w = np.clip(np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0, None) * scale_x
        inter_h = np.clip(np.minimum(ay1, by1) - np.maximum(ay0, by0), 0, None) * scale_y
        intersection = inter_w * inter_h
        area_a = ((ax1 - ax0) * scale_x) * ((ay1 - ay0) * scale_y)
        area_b = ((bx1 - bx0) * scale_x) * ((by1 - by0) * scale_y)
        union = area_a + area_b - intersection
        iou = np.where(union > 0, intersection / np.where(union > 0, union, 1.0), 0.0)
    return np.clip(iou, 0.0, 1.0)


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


# --------------------------------------------------------------------------------------------
# Does a predicted label name the finding's category?
# --------------------------------------------------------------------------------------------
# The check reads a label with the report reader's own vocabulary (``finding_vocabulary.py``, generated from
# it): a dataset category ("Effusion", "Lung Opacity", "Nodule/Mass", a VinDr-CXR or CheXpert label) is the
# vocabulary category whose ``labels`` hold it (each "/"-separated part for a combined label), and a label names
# it when one of that category's wordings (``terms``, or ``related`` ones: "consolidation" names pneumonia) occurs
# in a clause of the label without a negation trigger of the reader before it (or after it: "effusion has
# resolved"). A category the vocabulary does not hold is named by its own words.
CATEGORY_KEYWORDS: dict[str, tuple[str, ...]] = {
    category: tuple(entry["terms"]) + tuple(entry["related"])
    for category, entry in VOCABULARY["findings"].items()
}
_CLAUSE_BREAK = re.compile(r"[,;:.!?()]|\b(?:but|however|although|though|whereas)\b")


def _category_key(category: str) -> str:
    return " ".join(re.sub(r"[/_\-]", " ", category.lower()).split())


_CATEGORY_OF_LABEL = {}
for _category, _entry in VOCABULARY["findings"].items():
    for _name in (*_entry["labels"], _category):
        _CATEGORY_OF_LABEL.setdefault(_category_key(_name), _category)


def _trigger_pattern(phrases: Sequence[str]) -> re.Pattern:
    alternation = "|".join(re.escape(p) for p in sorted(phrases, key=len, reverse=True))
    return re.compile(rf"(?<![\w/-])(?:{alternation})(?![\w/-])")


_NEGATION_PRE = _trigger_pattern(NEGATION_PRE)
_NEGATION_POST = _trigger_pattern(NEGATION_POST)
_PSEUDO_NEGATION = _trigger_pattern(PSEUDO_NEGATION)
_PATTERNS: dict[str, tuple] = {}


def vocabulary_categories(category: str) -> tuple[str, ...]:
    """The vocabulary categories a dataset category means ("Pleural Effusion" -> ("effusion",), "Nodule/Mass" ->
    ("nodule", "mass")); () where the vocabulary holds none."""
    key = _category_key(category)
    if key in _CATEGORY_OF_LABEL:
        found = [_CATEGORY_OF_LABEL[key]]
        parts = [_category_key(part) for part in category.split("/")] if "/" in category else []
        found += [_CATEGORY_OF_LABEL[part] for part in parts if part in _CATEGORY_OF_LABEL]
        return tuple(dict.fromkeys(found))
    parts = [_category_key(part) for part in category.split("/")]
    return tuple(dict.fromkeys(_CATEGORY_OF_LABEL[p] for p in parts if p in _CATEGORY_OF_LABEL))


def category_keywords(category: str) -> tuple[str, ...]:
    """The wordings (regular expressions) that name ``category``: its vocabulary categories' ``terms`` and
    ``related`` wordings, else the category's own words."""
    terms = [t for c in vocabulary_categories(category) for t in CATEGORY_KEYWORDS[c]]
    key = _category_key(category)
    return tuple(terms) if terms else ((re.escape(key) + "(?:s|es)?",) if key else ())


def _alternation_pattern(terms: Sequence[str]) -> re.Pattern | None:
    alternation = "|".join(sorted(set(terms), key=len, reverse=True))
    return re.compile(rf"\b(?:{alternation})\b") if terms else None


_OWN_PATTERNS = {c: _alternation_pattern(e["terms"]) for c, e in VOCABULARY["findings"].items()}


def _category_patterns(category: str) -> tuple[re.Pattern | None, re.Pattern | None, tuple[str, ...]]:
    """(own wordings, related wordings, vocabulary categories) of a dataset category."""
    if category not in _PATTERNS:
        categories = vocabulary_categories(category)
        if categories:
            own = [t for c in categories for t in VOCABULARY["findings"][c]["terms"]]
            related = [t for c in categories for t in VOCABULARY["findings"][c]["related"]]
        else:
            own, related = list(category_keywords(category)), []
        _PATTERNS[category] = (_alternation_pattern(own), _alternation_pattern(related), categories)
    return _PATTERNS[category]


def _inside_longer_wording(clause: str, start: int, end: int, categories: tuple[str, ...]) -> bool:
    """A wording inside a longer wording of another category is that category's ("pericardial effusion" is no
    pleural effusion, "nodular opacity" a nodule): the reader resolves overlaps to the longest wording."""
    for category, pattern in _OWN_PATTERNS.items():
        if category in categories or pattern is None:
            continue
        for m in pattern.finditer(clause):
            if m.start() <= start and end <= m.end() and m.end() - m.start() > end - start:
                return True
    return False


def _denied(clause: str, start: int, end: int) -> bool:
    pseudo = [(m.start(), m.end()) for m in _PSEUDO_NEGATION.finditer(clause)]

    def real(m) -> bool:
        return not any(a <= m.start() < b for a, b in pseudo)

    before = any(real(m) for m in _NEGATION_PRE.finditer(clause[:start]))
    return before or any(real(m) for m in _NEGATION_POST.finditer(clause, end))


def names_category(label: str | None, category: str) -> bool:
    """Whether a predicted ``label`` names ``category`` as the report reader reads it (case-insensitive).

    The label is split into clauses at punctuation and "but/however/although/though/whereas"; one of the
    category's wordings (``category_keywords``) in a clause counts (an own wording only where no longer wording of
    another category holds it, as the reader resolves overlaps) unless a negation trigger of the reader
    (``NEGATION_PRE``) comes before it in that clause or one of ``NEGATION_POST`` after it ("pseudo-negations"
    such as "cannot be excluded" deny nothing). An empty category or label names nothing.
    """
    own, related, categories = _category_patterns(category or "")
    if not label or (own is None and related is None):
        return False
    for clause in _CLAUSE_BREAK.split(label.lower()):
        clause = " ".join(clause.split())
        for pattern, own_wording in ((own, True), (related, False)):
            for m in pattern.finditer(clause) if pattern is not None else ():
                if own_wording and _inside_longer_wording(clause, m.start(), m.end(), categories):
                    continue
                if not _denied(clause, m.start(), m.end()):
                    return True
    return False


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
# The metric: options -> match (named records) -> summaries
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FindingMatch:
    """One reference finding and the prediction the Hungarian matching gave it.

    ``prediction`` is the prediction's index in its sample (-1: none, then ``iou`` 0 and
    ``predicted_label``/``score`` None); ``iou`` is under the several-boxes rule; ``label_names_finding``
    says whether the predicted label names the finding (``names_category``).
    """

    sample: int
    finding: int
    category: str
    phrase: str
    iou: float
    prediction: int
    predicted_label: str | None
    score: float | None
    phrase_exact: bool
    phrase_f1: float
    label_names_finding: bool


@dataclass(frozen=True)
class PredictionMatch:
    """One prediction: its score, the IoU with its Hungarian-matched finding (0 if unmatched, then
    ``finding`` is -1), whether that is a hit (IoU >= hit_iou) and whether greedy-by-score matching
    (for AP) made it a true positive."""

    sample: int
    prediction: int
    score: float
    finding: int
    iou: float
    hit: bool
    ap_true_positive: bool


@dataclass(frozen=True)
class SampleMatch:
    """Everything matched in one sample."""

    sample: int
    findings: tuple[FindingMatch, ...]
    predictions: tuple[PredictionMatch, ...]

    @property
    def is_no_finding(self) -> bool:
        return not self.findings

    @property
    def num_extra_predictions(self) -> int:
        return sum(p.finding < 0 for p in self.predictions)


def _fraction_option(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name}: expected a number in [0, 1], got {type(value).__name__} ({value!r})")
    if not (math.isfinite(float(value)) and 0.0 <= float(value) <= 1.0):
        raise ValueError(f"{name}: expected an IoU in [0, 1], got {value}")
    return float(value)


def validate_options(
    iou_thresholds: Sequence[float], multi_box: str, hit_iou: float, num_calibration_bins: int
) -> list[float]:
    """Check the keyword arguments of ``compute_grounding_metrics``; return the thresholds as floats.

    Raises ``ValueError`` naming the argument: thresholds and ``hit_iou`` must be finite IoUs in [0, 1],
    ``num_calibration_bins`` a positive integer, ``multi_box`` one of ``MULTI_BOX_RULES``.
    """
    if multi_box not in MULTI_BOX_RULES:
        raise ValueError(f"multi_box must be one of {MULTI_BOX_RULES}, got {multi_box!r}")
    if isinstance(iou_thresholds, (str, bytes)) or not isinstance(iou_thresholds, (Sequence, np.ndarray)):
        raise ValueError(f"iou_thresholds: expected a list of IoUs in [0, 1], got {iou_thresholds!r}")
    thresholds = [_fraction_option(t, f"iou_thresholds[{k}]") for k, t in enumerate(iou_thresholds)]
    _fraction_option(hit_iou, "hit_iou")
    bins = num_calibration_bins
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"num_calibration_bins: expected a positive integer, got {bins!r}")
    return thresholds


def _label_names_finding(label: str | None, finding: Mapping) -> bool:
    """Whether a predicted label names a reference finding: the label equals the reference phrase (after
    ``normalize_phrase``), or ``names_category(label, category)``; for a finding without a category, the
    label names a table category that the reference phrase names, or (if the phrase names none) has
    token F1 >= 0.5 with the phrase."""
    if label is None:
        return False
    if normalize_phrase(label) == normalize_phrase(finding["phrase"]) != "":
        return True  # the reference's own answer phrase names its finding
    if finding["category"]:
        return names_category(label, finding["category"])
    named = [c for c in CATEGORY_KEYWORDS if names_category(finding["phrase"], c)]
    if named:
        return any(names_category(label, c) for c in named)
    return phrase_token_f1(label, finding["phrase"]) >= 0.5


def _finding_match(sample: int, r: int, finding: Mapping, preds: list[dict], match: Mapping) -> FindingMatch:
    p = int(match["finding_to_pred"][r])
    label = preds[p]["label"] if p >= 0 else None
    return FindingMatch(
        sample=sample,
        finding=r,
        category=finding["category"],
        phrase=finding["phrase"],
        iou=float(match["finding_iou"][r]),
        prediction=p,
        predicted_label=label,
        score=preds[p]["score"] if p >= 0 else None,
        phrase_exact=label is not None and normalize_phrase(label) == normalize_phrase(finding["phrase"]),
        phrase_f1=phrase_token_f1(label, finding["phrase"]) if label is not None else 0.0,
        label_names_finding=_label_names_finding(label, finding),
    )


def _greedy_true_positives(scores: Sequence[float], iou: np.ndarray, hit_iou: float) -> np.ndarray:
    """AP matching (VOC/COCO): predictions by score descending each take the best free finding with
    IoU >= hit_iou. ``iou``: (P, R). Returns (P,) bool."""
    true_positive = np.zeros(len(scores), dtype=bool)
    taken = np.zeros(iou.shape[1], dtype=bool)
    if iou.shape[1] == 0:
        return true_positive
    for p in np.argsort([-s for s in scores], kind="stable"):
        candidates = np.where(taken, -1.0, iou[p])
        best = int(np.argmax(candidates))
        if candidates[best] >= hit_iou:
            taken[best] = True
            true_positive[p] = True
    return true_positive


def _match_one_sample(
    sample: int, preds: list[dict], findings: list[dict], multi_box: str, hit_iou: float
) -> SampleMatch:
    match = match_sample(preds, findings, multi_box)
    ap_true_positive = _greedy_true_positives([p["score"] for p in preds], match["iou"], hit_iou)
    prediction_matches = []
    for p, pred in enumerate(preds):
        r = int(match["pred_to_finding"][p])
        matched_iou = float(match["iou"][p, r]) if r >= 0 else 0.0
        prediction_matches.append(
            PredictionMatch(
                sample, p, pred["score"], r, matched_iou, matched_iou >= hit_iou, bool(ap_true_positive[p])
            )
        )
    finding_matches = tuple(_finding_match(sample, r, f, preds, match) for r, f in enumerate(findings))
    return SampleMatch(sample, finding_matches, tuple(prediction_matches))


def match_dataset(
    predictions: list[list[dict]], references: list[list[dict]], multi_box: str = "max", hit_iou: float = 0.5
) -> list[SampleMatch]:
    """Match every sample of (validated, see ``validate_inputs``) predictions to its findings."""
    return [
        _match_one_sample(i, preds, findings, multi_box, hit_iou)
        for i, (preds, findings) in enumerate(zip(predictions, references))
    ]


def _threshold_key(threshold: float, prefix: str = "accuracy") -> str:
    return f"{prefix}@{threshold:g}"


def _mean_or_none(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def summarise_findings(findings: Sequence[FindingMatch], thresholds: Sequence[float]) -> dict[str, Any]:
    """``accuracy@t``, ``mean_iou``, ``label_accuracy@t``, ``phrase_exact_match``, ``phrase_token_f1``
    over reference findings (None without findings)."""
    iou = np.array([f.iou for f in findings])
    named = np.array([f.label_names_finding for f in findings], dtype=bool)
    result: dict[str, Any] = {}
    for t in thresholds:
        result[_threshold_key(t)] = float(np.mean(iou >= t)) if iou.size else None
    result["mean_iou"] = _mean_or_none(iou)
    for t in thresholds:
        result[_threshold_key(t, "label_accuracy")] = float(np.mean((iou >= t) & named)) if iou.size else None
    result["phrase_exact_match"] = _mean_or_none([float(f.phrase_exact) for f in findings])
    result["phrase_token_f1"] = _mean_or_none([f.phrase_f1 for f in findings])
    return result


def summarise_predictions(
    predictions: Sequence[PredictionMatch], num_findings: int, hit_iou: float, num_bins: int
) -> dict[str, Any]:
    """AP by score, expected calibration error, AURC, the reliability bins and the risk-coverage curve."""
    scores = [p.score for p in predictions]
    hits = [p.hit for p in predictions]
    reliability = expected_calibration_error(scores, hits, num_bins)
    risk_coverage = risk_coverage_curve(scores, hits)
    return {
        f"average_precision@{hit_iou:g}": average_precision(
            scores, [p.ap_true_positive for p in predictions], num_findings
        ),
        "expected_calibration_error": reliability["ece"],
        "aurc": risk_coverage["aurc"],
        "reliability": {k: v for k, v in reliability.items() if k != "ece"},
        "risk_coverage": {k: v for k, v in risk_coverage.items() if k != "aurc"},
    }


def summarise_no_finding(samples: Sequence[SampleMatch]) -> dict[str, Any]:
    """No-finding handling and extra predictions: rates and counts."""
    no_finding = [s for s in samples if s.is_no_finding]
    answered_empty = sum(not s.predictions for s in no_finding)
    false_boxes = sum(len(s.predictions) for s in no_finding)
    num_extra = sum(s.num_extra_predictions for s in samples)
    return {
        "no_finding_accuracy": answered_empty / len(no_finding) if no_finding else None,
        "false_boxes_per_no_finding_report": false_boxes / len(no_finding) if no_finding else None,
        "extra_predictions_per_sample": num_extra / len(samples) if samples else None,
        "num_samples": len(samples),
        "num_findings": sum(len(s.findings) for s in samples),
        "num_predictions": sum(len(s.predictions) for s in samples),
        "num_no_finding_samples": len(no_finding),
        "num_extra_predictions": num_extra,
        "num_false_boxes_on_no_finding": false_boxes,
    }


def per_category_metrics(
    findings: Sequence[FindingMatch], thresholds: Sequence[float]
) -> dict[str, dict[str, Any]]:
    """Per category (sorted): ``num_findings``, ``accuracy@t``, ``mean_iou``, ``label_accuracy@t``."""
    per_category: dict[str, dict[str, Any]] = {}
    for category in sorted({f.category for f in findings}):
        members = [f for f in findings if f.category == category]
        entry: dict[str, Any] = {"num_findings": len(members)}
        entry.update(
            {k: v for k, v in summarise_findings(members, thresholds).items() if not k.startswith("phrase_")}
        )
        per_category[category] = entry
    return per_category


def _details(samples: Sequence[SampleMatch]) -> dict[str, list[dict]]:
    findings = [f for s in samples for f in s.findings]
    predictions = [p for s in samples for p in s.predictions]
    return {
        "findings": [
            {"sample": f.sample, "category": f.category, "iou": f.iou, "phrase_exact": f.phrase_exact,
             "phrase_f1": f.phrase_f1, "label_names_finding": f.label_names_finding}
            for f in findings
        ],
        "predictions": [{"sample": p.sample, "score": p.score, "iou": p.iou, "hit": p.hit} for p in predictions],
    }  # fmt: skip


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
        iou_thresholds: thresholds t (IoUs in [0, 1]) of ``accuracy@t`` and ``label_accuracy@t``.
        multi_box: ``"max"`` (IoU with a finding = best over its boxes) or ``"union"`` (IoU with the box
            enclosing all its boxes).
        hit_iou: IoU in [0, 1] at which a prediction counts as a hit for AP and calibration.
        num_calibration_bins: equal-width score bins (>= 1) of the expected calibration error.
        return_details: also return ``"details"``: per finding (sample, category, IoU, phrase F1, label
            names finding) and per prediction (sample, score, matched IoU, hit) lists, for plots.

    Returns:
        A dict of fractions in [0, 1] (None where undefined, e.g. accuracy without any finding):
        ``accuracy@t`` for each t, ``mean_iou``, ``label_accuracy@t`` for each t,
        ``average_precision@{hit_iou}``, ``phrase_exact_match``, ``phrase_token_f1``,
        ``expected_calibration_error``, ``aurc``, ``no_finding_accuracy`` (share of reports without
        findings answered with no box), ``false_boxes_per_no_finding_report``,
        ``extra_predictions_per_sample``, counts (``num_samples``, ``num_findings``, ``num_predictions``,
        ``num_no_finding_samples``, ``num_extra_predictions``, ``num_false_boxes_on_no_finding``),
        ``per_category`` (per category: ``num_findings``, ``accuracy@t``, ``mean_iou``,
        ``label_accuracy@t``), ``reliability`` (bins) and ``risk_coverage`` (curve).

    Raises:
        ValueError: naming the sample index and field of malformed input, or the malformed argument.
    """
    thresholds = validate_options(iou_thresholds, multi_box, hit_iou, num_calibration_bins)
    samples = match_dataset(*validate_inputs(predictions, references), multi_box=multi_box, hit_iou=hit_iou)
    findings = [f for s in samples for f in s.findings]
    ranking = summarise_predictions(
        [p for s in samples for p in s.predictions], len(findings), hit_iou, num_calibration_bins
    )
    result = summarise_findings(findings, thresholds)
    result.update({k: v for k, v in ranking.items() if k not in ("reliability", "risk_coverage")})
    result.update(summarise_no_finding(samples))
    result["per_category"] = per_category_metrics(findings, thresholds)
    result["reliability"] = ranking["reliability"]
    result["risk_coverage"] = ranking["risk_coverage"]
    if return_details:
        result["details"] = _details(samples)
    return result
