"""Hand-computed and randomised checks of the grounding metrics (plain functions), their values on edge inputs
and the one error a bad input gives, naming the sample and the field."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
from conftest import finding, pred
from medrg.evaluation import (
    average_precision,
    box_iou_matrix,
    compute_grounding_metrics,
    expected_calibration_error,
    names_category,
    phrase_token_f1,
    risk_coverage_curve,
)
from medrg.evaluation.grounding_accuracy.grounding_metrics import vocabulary_categories
from medrg.processing.data.chestxray8 import LABELS as CHESTXRAY8


def reference_iou(a, b):
    """Independent IoU of two xyxy boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def random_box_pairs(n=1000, seed=0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 100, size=(n, 2, 2))
    wh = rng.uniform(1, 60, size=(n, 2, 2))
    return np.concatenate([xy, xy + wh], axis=2)  # (n, 2 boxes, 4)


def test_iou_matches_independent_formula_on_random_pairs():
    pairs = random_box_pairs()
    expected = np.array([reference_iou(a, b) for a, b in pairs])
    assert np.allclose(box_iou_matrix(pairs[:, 0], pairs[:, 1]).diagonal(), expected, atol=1e-12)
    assert (expected == 0).any() and (expected > 0.5).any()  # the sample covers misses and hits
    metrics = compute_grounding_metrics([[pred(a)] for a, _ in pairs], [[finding(b)] for _, b in pairs])
    assert metrics["mean_iou"] == pytest.approx(expected.mean(), abs=1e-12)
    for t in (0.1, 0.3, 0.5, 0.7):
        assert metrics[f"accuracy@{t}"] == pytest.approx(np.mean(expected >= t), abs=1e-12)


def test_hungarian_matching_missing_and_extra_predictions():
    refs = [
        [finding((0, 0, 10, 10), phrase="a"), finding((20, 0, 30, 10), phrase="b"), finding((50, 50, 60, 60))]
    ]
    # listed in the "wrong" order: matching must pair them by IoU; the third finding gets nothing
    preds = [[pred((20, 0, 30, 5), label="b"), pred((0, 0, 10, 10), label="a")]]
    m = compute_grounding_metrics(preds, refs)
    assert m["mean_iou"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert m["accuracy@0.5"] == pytest.approx(2 / 3)
    assert m["accuracy@0.7"] == pytest.approx(1 / 3)
    assert m["phrase_exact_match"] == pytest.approx(2 / 3)
    assert m["num_extra_predictions"] == 0
    # an extra prediction is a false positive: accuracy unchanged, AP lower
    preds_extra = [[*preds[0], pred((80, 80, 90, 90), score=0.95)]]
    m2 = compute_grounding_metrics(preds_extra, refs)
    assert m2["mean_iou"] == m["mean_iou"]
    assert m2["num_extra_predictions"] == 0  # three findings: the extra one is matched to the third (IoU 0)
    preds_more = [[*preds_extra[0], pred((85, 85, 95, 95), score=0.2)]]
    m3 = compute_grounding_metrics(preds_more, refs)
    assert m3["num_extra_predictions"] == 1
    assert m3["extra_predictions_per_sample"] == 1.0


def test_hungarian_beats_greedy():
    # greedy (best IoU first) would give p0->f0 (0.5) and p1->f1 (0), Hungarian p0->f1, p1->f0
    refs = [[finding((0, 0, 10, 10)), finding((5, 0, 15, 10))]]
    preds = [[pred((2.5, 0, 12.5, 10)), pred((0, 0, 10, 10))]]
    m = compute_grounding_metrics(preds, refs)
    assert m["mean_iou"] == pytest.approx((1.0 + reference_iou((2.5, 0, 12.5, 10), (5, 0, 15, 10))) / 2)


def test_several_boxes_per_finding_max_and_union():
    refs = [[finding((0, 0, 10, 10), (20, 0, 30, 10))]]
    preds = [[pred((20, 0, 30, 10))]]
    assert compute_grounding_metrics(preds, refs)["mean_iou"] == pytest.approx(1.0)
    union = compute_grounding_metrics(preds, refs, multi_box="union")
    assert union["mean_iou"] == pytest.approx(100 / 300)
    with pytest.raises(ValueError, match="multi_box"):
        compute_grounding_metrics(preds, refs, multi_box="mean")


def test_no_finding_reports():
    refs = [[], [], [finding((0, 0, 10, 10))]]
    preds = [[], [pred((0, 0, 5, 5)), pred((1, 1, 5, 5))], [pred((0, 0, 10, 10))]]
    m = compute_grounding_metrics(preds, refs)
    assert m["num_no_finding_samples"] == 2
    assert m["no_finding_accuracy"] == 0.5
    assert m["num_false_boxes_on_no_finding"] == 2
    assert m["false_boxes_per_no_finding_report"] == 1.0
    assert m["accuracy@0.5"] == 1.0
    empty = compute_grounding_metrics([[]], [[]])
    assert empty["accuracy@0.5"] is None and empty["mean_iou"] is None and empty["no_finding_accuracy"] == 1.0
    nothing = compute_grounding_metrics([], [])
    assert nothing["num_samples"] == 0 and nothing["expected_calibration_error"] is None


def test_per_category():
    refs = [[finding((0, 0, 10, 10), category="Nodule")], [finding((0, 0, 10, 10), category="Effusion")]]
    preds = [[pred((0, 0, 10, 10))], [pred((0, 0, 10, 4))]]
    per = compute_grounding_metrics(preds, refs)["per_category"]
    assert per["Nodule"] == {**per["Nodule"], "num_findings": 1, "accuracy@0.5": 1.0, "mean_iou": 1.0}
    assert per["Effusion"]["accuracy@0.3"] == 1.0 and per["Effusion"]["accuracy@0.5"] == 0.0
    assert per["Effusion"]["mean_iou"] == pytest.approx(0.4)


def test_phrase_token_f1():
    assert phrase_token_f1("Left pleural effusion.", "left pleural effusion") == 1.0
    assert phrase_token_f1("left effusion", "left pleural effusion") == pytest.approx(0.8)
    assert phrase_token_f1("nodule", "effusion") == 0.0


def test_average_precision_hand_computed():
    # ranked: TP, FP, TP with 3 positives -> P/R points (1, 1/3), (2/3, 2/3) ; AP = 1/3*1 + 1/3*2/3
    assert average_precision([0.9, 0.8, 0.7], [True, False, True], 3) == pytest.approx(1 / 3 + 2 / 9)
    assert average_precision([], [], 2) == 0.0
    assert average_precision([0.5], [False], 0) is None
    # through the metric: sample 0 two predictions on one finding, greedy by score
    refs = [[finding((0, 0, 10, 10))], [finding((0, 0, 10, 10))]]
    preds = [
        [pred((0, 0, 10, 10), score=0.6), pred((0, 0, 10, 9), score=0.9)],  # both hit; the 0.9 one takes it
        [pred((50, 50, 60, 60), score=0.8)],  # miss
    ]
    # ranking 0.9 TP, 0.8 FP, 0.6 FP -> AP = 1/2 * 1
    assert compute_grounding_metrics(preds, refs)["average_precision@0.5"] == pytest.approx(0.5)


def test_calibration_hand_computed():
    scores = [0.95, 0.85, 0.15, 0.15]
    hits = [True, False, False, True]
    ece = expected_calibration_error(scores, hits, num_bins=10)
    # bins: [0.9,1): 0.95 vs 1 -> 0.05 ; [0.8,0.9): 0.85 vs 0 -> 0.85 ; [0.1,0.2): 0.15 vs 0.5 -> 0.35
    assert ece["ece"] == pytest.approx((0.05 + 0.85 + 2 * 0.35) / 4)
    assert ece["bin_count"][1] == 2 and ece["bin_accuracy"][1] == 0.5
    rc = risk_coverage_curve(scores, hits)
    assert rc["coverage"] == [0.25, 0.5, 1.0]
    assert rc["risk"] == pytest.approx([0.0, 0.5, 0.5])
    assert rc["aurc"] == pytest.approx((0.0 + 0.5 + 0.5 + 0.5) / 4)
    # tie order does not matter
    assert risk_coverage_curve(scores, [True, False, True, False])["aurc"] == rc["aurc"]
    assert expected_calibration_error([1.0], [True])["ece"] == 0.0  # score 1.0 falls in the last bin


def test_calibration_through_metric_uses_hungarian_hits():
    refs = [[finding((0, 0, 10, 10))], [finding((0, 0, 10, 10))]]
    preds = [[pred((0, 0, 10, 10), score=0.8)], [pred((0, 0, 10, 2), score=0.8)]]
    m = compute_grounding_metrics(preds, refs)
    assert m["expected_calibration_error"] == pytest.approx(0.3)
    assert m["aurc"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("predictions", "references", "message"),
    [
        ([[]], [[], []], r"predictions has 1 samples but references has 2"),
        (
            [[], [pred((12, 0, 10, 3))]],
            [[], []],
            r"predictions\[1\]\[0\]\['box'\]: xmax \(10.0\) < xmin \(12.0\)",
        ),
        ([[pred((0, 5, 10, 3))]], [[]], r"predictions\[0\]\[0\]\['box'\]: ymax"),
        ([[pred((0, 0, math.nan, 3))]], [[]], r"predictions\[0\]\[0\]\['box'\]\['xmax'\]: expected a finite"),
        (
            [[pred((0, 0, 1, 1), score=1.5)]],
            [[]],
            r"predictions\[0\]\[0\]\['score'\]: 1.5 is outside \[0, 1\]",
        ),
        ([[pred((0, 0, 1, 1), score=-0.1)]], [[]], r"outside \[0, 1\]"),
        ([[{"label": "x", "score": 0.5}]], [[]], r"predictions\[0\]\[0\]: missing key\(s\) \['box'\]"),
        ([[{"label": "x", "score": 0.5, "box": {"xmin": 0, "ymin": 0, "xmax": 1}}]], [[]], r"\['ymax'\]"),
        ([[{"label": "x", "score": 0.5, "box": [0, 0, 1, 1]}]], [[]], r"\['box'\]: expected a dict"),
        ([[]], [[finding((0, 0, 1))]], r"references\[0\]\[0\]\['boxes'\]\[0\]: expected 4 numbers"),
        (
            [[]],
            [[{"phrase": "x", "category": "A", "boxes": [[5, 0, 1, 1]]}]],
            r"references\[0\]\[0\]\['boxes'\]\[0\]: xmax",
        ),
        ([[]], [[{"phrase": "x", "category": "A"}]], r"references\[0\]\[0\]: missing key 'boxes'"),
        ([[]], [[{"phrase": "x", "category": "A", "boxes": []}]], r"non-empty list"),
        (
            [[]],
            [[finding((0, 0, math.nan, 1))]],
            r"references\[0\]\[0\]\['boxes'\]\[0\]\[2\]: expected a finite",
        ),
        (["oops"], [[]], r"predictions\[0\]: expected a list"),
    ],
)
def test_bad_input_names_the_sample(predictions, references, message):
    with pytest.raises(ValueError, match=message):
        compute_grounding_metrics(predictions, references)


# ------------------------------------------------------------------------------------------------
# Label-aware score: IoU >= t AND the label names the finding's category
# ------------------------------------------------------------------------------------------------
BOX = (10, 10, 50, 50)
LABEL_CASES = [
    # (case, predicted label, predicted box, reference category, hit at 0.5, label_accuracy@0.5)
    ("right label, right box", "left pleural effusion", BOX, "Effusion", 1.0, 1.0),
    ("right box, wrong label", "left pneumothorax", BOX, "Effusion", 1.0, 0.0),
    ("right label, wrong box", "left pleural effusion", (60, 60, 90, 90), "Effusion", 0.0, 0.0),
    ("synonym: blunting names an effusion", "blunting of the left costophrenic angle", BOX, "effusion", 1.0, 1.0),
    ("synonym: enlarged cardiac silhouette", "Enlarged cardiac silhouette.", BOX, "Cardiomegaly", 1.0, 1.0),
    ("plural", "bilateral nodules", BOX, "Nodule", 1.0, 1.0),
    ("case-insensitive", "RIGHT UPPER LOBE MASS", BOX, "Mass", 1.0, 1.0),
    ("negated: no pneumothorax", "no pneumothorax", BOX, "Pneumothorax", 1.0, 0.0),
    ("negated after: effusion has resolved", "left effusion has resolved", BOX, "Effusion", 1.0, 0.0),
    ("negation in another clause does not count", "left effusion, no pneumothorax", BOX, "Effusion", 1.0, 1.0),
    ("the denied finding of that label is not named", "left effusion, no pneumothorax", BOX, "Pneumothorax", 1.0, 0.0),
    ("nodule is not a mass", "nodular opacity in the right lung", BOX, "Mass", 1.0, 0.0),
    ("whole words only: massive is not mass", "massive effusion", BOX, "Mass", 1.0, 0.0),
    ("opacity names an infiltrate (ChestX-ray8)", "patchy opacities in the left lower zone", BOX, "Infiltrate", 1.0, 1.0),
    ("a pericardial effusion is no pleural effusion", "pericardial effusion", BOX, "Effusion", 1.0, 0.0),
    ("VinDr Nodule/Mass", "small nodule", BOX, "Nodule/Mass", 1.0, 1.0),
    ("MS-CXR Lung Opacity", "airspace consolidation", BOX, "Lung Opacity", 1.0, 1.0),
    ("category without a table entry: its own words", "hiatal hernia", BOX, "Hiatal hernia", 1.0, 1.0),
]  # fmt: skip


@pytest.mark.parametrize(("case", "label", "box", "category", "hit", "label_hit"), LABEL_CASES,
                         ids=[c[0] for c in LABEL_CASES])  # fmt: skip
def test_label_aware_accuracy_hand_cases(case, label, box, category, hit, label_hit):
    references = [[finding(BOX, phrase="reference phrase", category=category)]]
    m = compute_grounding_metrics([[pred(box, label=label)]], references)
    assert m["accuracy@0.5"] == hit
    for t in (0.1, 0.3, 0.5, 0.7):  # reported for every threshold
        assert m[f"label_accuracy@{t}"] == label_hit
    assert m["per_category"][category]["label_accuracy@0.5"] == label_hit


def test_label_aware_accuracy_over_several_findings_and_thresholds():
    refs = [
        [finding((0, 0, 10, 10), phrase="left nodule", category="nodule"),
         finding((20, 0, 30, 10), phrase="right effusion", category="effusion")],
        [finding((0, 0, 10, 10), phrase="cardiomegaly", category="cardiomegaly")],
        [],
    ]  # fmt: skip
    preds = [
        [
            pred((0, 0, 10, 10), label="left nodule"),
            pred((20, 0, 30, 5), label="right mass"),
        ],  # IoU 1 and 0.5
        [pred((0, 0, 10, 4), label="heart is enlarged")],  # IoU 0.4
        [pred((0, 0, 5, 5), label="nodule")],
    ]
    m = compute_grounding_metrics(preds, refs)
    assert m["accuracy@0.5"] == pytest.approx(2 / 3) and m["label_accuracy@0.5"] == pytest.approx(1 / 3)
    assert m["accuracy@0.3"] == 1.0 and m["label_accuracy@0.3"] == pytest.approx(2 / 3)
    assert m["label_accuracy@0.7"] == pytest.approx(1 / 3)
    details = compute_grounding_metrics(preds, refs, return_details=True)["details"]["findings"]
    assert [f["label_names_finding"] for f in details] == [True, False, True]


def test_label_rule_without_category_and_exact_reference_phrase():
    # no category: the label must name what the reference phrase names
    refs = [[finding(BOX, phrase="small left pleural effusion", category="")]]
    assert compute_grounding_metrics([[pred(BOX, label="left effusion")]], refs)["label_accuracy@0.5"] == 1.0
    assert compute_grounding_metrics([[pred(BOX, label="left nodule")]], refs)["label_accuracy@0.5"] == 0.0
    # a label equal to the reference's own phrase names it even if the table has no word for it
    refs = [[finding(BOX, phrase="Widened mediastinum", category="Other lesion")]]
    assert (
        compute_grounding_metrics([[pred(BOX, label="widened mediastinum.")]], refs)["label_accuracy@0.5"]
        == 1.0
    )
    assert names_category(None, "Nodule") is False and names_category("nodule", "") is False


@pytest.mark.parametrize(
    ("category", "label"),
    [
        *[(c, n) for c, n in zip(CHESTXRAY8, ("atelectasis", "cardiomegaly", "left effusion", "patchy infiltrate",
                                              "right upper lobe mass", "small nodule", "pneumonia", "pneumothorax"))],
        ("Consolidation", "airspace consolidation"), ("Edema", "pulmonary edema"), ("Lung Opacity", "opacity"),
        ("Pleural Effusion", "pleural effusion"), ("Aortic enlargement", "aortic enlargement"),
        ("Calcification", "calcified lymph nodes"), ("Clavicle fracture", "left clavicle fracture"),
        ("Emphysema", "emphysema"), ("Enlarged PA", "enlarged pulmonary artery"), ("ILD", "interstitial lung disease"),
        ("Infiltration", "infiltrate"), ("Lung cavity", "cavitary lesion"), ("Lung cyst", "bulla"),
        ("Mediastinal shift", "mediastinal shift"), ("Nodule/Mass", "mass"), ("Other lesion", "lytic lesion"),
        ("Pleural thickening", "pleural thickening"), ("Pulmonary fibrosis", "pulmonary fibrosis"),
        ("Rib fracture", "right rib fractures"), ("Support Devices", "right picc line tip in the svc"),
        ("opacity", "ground-glass opacity"),
    ],
)  # fmt: skip
def test_the_dataset_categories_are_named_and_their_denials_are_not(category, label):
    assert vocabulary_categories(category), category
    assert names_category(label, category), (category, label)
    assert not names_category(f"no {label}", category), (category, label)
    assert not names_category(f"{label} has resolved", category), (category, label)


def test_the_metric_reads_labels_with_the_readers_vocabulary():
    """One vocabulary: the metric's data file is the reader's, and every finding the reader names in a report is a
    label that names its category for the metric."""
    from medrg.evaluation.metric_vocabulary import metric_vocabulary
    from medrg.processing.reading_medrg import ReportReader

    module = importlib.import_module("medrg.evaluation.grounding_accuracy.finding_vocabulary")
    expected = metric_vocabulary()
    for name, value in expected.items():
        assert getattr(module, name) == value, (
            f"{name} of grounding_accuracy/finding_vocabulary.py differs from the reader's: "
            "run python -m medrg.evaluation.metric_vocabulary"
        )
    report = (
        "Small left apical pneumothorax. Moderate right pleural effusion with an air-fluid level. Mild "
        "cardiomegaly. Spiculated 2.5 cm mass in the left upper lobe. Patchy right lower lobe consolidation. "
        "Calcified granuloma in the right upper lobe. Tortuous aorta. Right IJ catheter tip in the SVC. "
        "No edema. Pneumonia is unlikely."
    )
    found = ReportReader().read(report).stated
    assert len(found) >= 8
    for read in found:
        assert names_category(read.label, read.category), read
    assert not names_category("no edema", "Edema") and not names_category(
        "pneumonia is unlikely", "Pneumonia"
    )


def test_keyword_table_names_every_noun_the_report_writer_uses():
    """The data builders' answer nouns (processing/vocabulary_medrg.py) must name their own category."""
    vocabulary = pytest.importorskip("medrg.processing.vocabulary_medrg")
    terms = getattr(vocabulary, "CATEGORY_TERMS", None)
    if terms is None:
        pytest.skip("no CATEGORY_TERMS in the report vocabulary")
    missing = [(c, noun) for c, entry in terms.items() for noun in entry.nouns if not names_category(noun, c)]
    assert missing == []


# ------------------------------------------------------------------------- edge inputs: values that must come out right
IOU_CASES = [
    # (case, box a, box b, IoU)
    ("identical boxes at 1e200 (overflowed to 0 before)", (1e200, 1e200, 3e200, 2e200), (1e200, 1e200, 3e200, 2e200), 1.0),
    ("half overlap at 1e200", (0, 0, 2e200, 1e200), (0, 0, 1e200, 1e200), 0.5),
    ("identical boxes at 1e-200 (underflow)", (0, 0, 1e-200, 2e-200), (0, 0, 1e-200, 2e-200), 1.0),
    ("half overlap at 1e-200", (0, 0, 2e-200, 1e-200), (0, 0, 1e-200, 1e-200), 0.5),
    ("boxes spanning the whole float range", (-1e308, -1e308, 1e308, 1e308), (-1e308, -1e308, 1e308, 1e308), 1.0),
    ("zero-area box with itself", (5, 5, 5, 9), (5, 5, 5, 9), 0.0),
    ("disjoint far apart", (0, 0, 1, 1), (1e300, 1e300, 2e300, 2e300), 0.0),
]  # fmt: skip


@pytest.mark.parametrize(("case", "box_a", "box_b", "expected"), IOU_CASES, ids=[c[0] for c in IOU_CASES])
def test_iou_is_scale_safe(case, box_a, box_b, expected):
    assert box_iou_matrix([box_a], [box_b])[0, 0] == pytest.approx(expected, abs=1e-12)
    metrics = compute_grounding_metrics([[pred(box_a)]], [[finding(box_b)]])
    assert metrics["mean_iou"] == pytest.approx(expected, abs=1e-12)


VALUE_CASES = [
    # (case, predictions, references, kwargs, expected subset of the result)
    ("no samples at all", [], [], {}, {"num_samples": 0, "accuracy@0.5": None, "mean_iou": None,
                                       "expected_calibration_error": None, "label_accuracy@0.5": None}),
    ("empty predictions and empty references", [[], []], [[], []], {},
     {"num_samples": 2, "no_finding_accuracy": 1.0, "accuracy@0.5": None, "aurc": None}),
    ("findings but no prediction at all", [[]], [[finding((0, 0, 10, 10))]], {},
     {"accuracy@0.1": 0.0, "mean_iou": 0.0, "average_precision@0.5": 0.0, "label_accuracy@0.1": 0.0}),
    ("threshold 0 and 1 are allowed", [[pred((0, 0, 10, 10))]], [[finding((0, 0, 10, 10))]],
     {"iou_thresholds": [0.0, 1.0]}, {"accuracy@0": 1.0, "accuracy@1": 1.0}),
    ("hit_iou 1 counts only exact boxes", [[pred((0, 0, 10, 9))]], [[finding((0, 0, 10, 10))]],
     {"hit_iou": 1.0}, {"average_precision@1": 0.0}),
    ("one calibration bin", [[pred((0, 0, 10, 10), score=0.25)]], [[finding((0, 0, 10, 10))]],
     {"num_calibration_bins": 1}, {"expected_calibration_error": 0.75}),
    ("numpy thresholds and integer boxes", [[pred((0, 0, 10, 10))]], [[finding((0, 0, 10, 20))]],
     {"iou_thresholds": np.array([0.5])}, {"accuracy@0.5": 1.0}),
    ("None label of a prediction is an empty label", [[pred((0, 0, 1, 1), score=0.5, label=None)]],
     [[finding((0, 0, 1, 1))]], {}, {"accuracy@0.5": 1.0, "phrase_token_f1": 0.0, "label_accuracy@0.5": 0.0}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "predictions", "references", "kwargs", "expected"), VALUE_CASES, ids=[c[0] for c in VALUE_CASES]
)
def test_metric_values_on_edge_inputs(case, predictions, references, kwargs, expected):
    result = compute_grounding_metrics(predictions, references, **kwargs)
    for key, value in expected.items():
        assert result[key] == (pytest.approx(value) if isinstance(value, float) else value), key


# ------------------------------------------------------------------------- bad inputs: one error naming the sample and the field
INPUT_CASES = [
    ("predictions shorter than references", [[]], [[], []], r"predictions has 1 samples but references has 2"),
    ("a record without box", [[{"label": "x", "score": 0.5}]], [[]], r"predictions\[0\]\[0\]: missing key\(s\) \['box'\]"),
    ("box as a list instead of a dict", [[{"label": "x", "score": 0.5, "box": [0, 0, 1, 1]}]], [[]],
     r"predictions\[0\]\[0\]\['box'\]: expected a dict"),
    ("score above 1", [[pred((0, 0, 1, 1), score=1.2)]], [[]], r"predictions\[0\]\[0\]\['score'\]: 1.2 is outside \[0, 1\]"),
    ("negative score", [[pred((0, 0, 1, 1), score=-0.3)]], [[]], r"\['score'\]: -0.3 is outside \[0, 1\]"),
    ("NaN score", [[pred((0, 0, 1, 1), score=math.nan)]], [[]], r"\['score'\]: expected a finite number, got nan"),
    ("score as a string", [[pred((0, 0, 1, 1), score="0.5")]], [[]], r"\['score'\]: expected a number"),
    ("boolean coordinate", [[pred((0, 0, True, 1))]], [[]], r"\['box'\]\['xmax'\]: expected a number"),
    ("infinite reference box", [[]], [[finding((0, 0, math.inf, 1))]], r"references\[0\]\[0\]\['boxes'\]\[0\]\[2\]"),
    ("a finding with 3 numbers", [[]], [[finding((0, 0, 1))]], r"expected 4 numbers"),
    ("references as one dict per sample", [[]], [{"phrase": "x", "boxes": [[0, 0, 1, 1]]}], r"references\[0\]: expected a list"),
    ("category as a number", [[]], [[{"phrase": "x", "category": 3, "boxes": [[0, 0, 1, 1]]}]], r"\['category'\]: expected a string"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "predictions", "references", "message"), INPUT_CASES, ids=[c[0] for c in INPUT_CASES]
)
def test_bad_metric_inputs_name_the_sample_and_field(case, predictions, references, message):
    with pytest.raises(ValueError, match=message):
        compute_grounding_metrics(predictions, references)
