"""The `evaluate` module folder: loads offline by path, runs the card's example, same math and the same errors for
bad options as the plain functions."""

from __future__ import annotations

import doctest
import filecmp
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import finding, pred
from medrg.evaluation import METRIC_PATH, compute_grounding_metrics

evaluate = pytest.importorskip("evaluate")

FOLDER = Path(METRIC_PATH)


@pytest.fixture(scope="module")
def metric():
    return evaluate.load(str(FOLDER))


def _records(boxes, scores):
    return [
        [{"label": "x", "score": float(s), "box": dict(zip(("xmin", "ymin", "xmax", "ymax"), map(float, b)))}]
        for b, s in zip(boxes, scores)
    ]


def test_card_example_runs():
    text = (FOLDER / "README.md").read_text()
    text = text.replace('evaluate.load("evaluation/grounding_accuracy")', f'evaluate.load("{FOLDER}")')
    for heading in ("## Metric Description", "## How to Use", "### Inputs", "### Output Values",
                    "### Values from Popular Papers", "## Limitations and Bias", "## Citation"):  # fmt: skip
        assert heading in text
    for value in ("89.82", "72.46", "53.29", "47.65", "84.34", "56.57", "38.38", "38.49", "69.86", "59.37"):
        assert value in text
    test = doctest.DocTestParser().get_doctest(text, {}, "README.md", str(FOLDER / "README.md"), 0)
    assert len(test.examples) >= 5
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


def test_module_equals_independent_iou_on_random_pairs(metric):
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 500, size=(1000, 2, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 200, size=(1000, 2, 2))], axis=2)
    a, b = boxes[:, 0], boxes[:, 1]
    inter = np.clip(np.minimum(a[:, 2:], b[:, 2:]) - np.maximum(a[:, :2], b[:, :2]), 0, None).prod(1)
    union = (a[:, 2:] - a[:, :2]).prod(1) + (b[:, 2:] - b[:, :2]).prod(1) - inter
    expected = inter / union
    references = [[{"phrase": "x", "category": "A", "boxes": [list(map(float, bb))]}] for bb in b]
    result = metric.compute(predictions=_records(a, rng.uniform(size=1000)), references=references)
    assert result["mean_iou"] == pytest.approx(expected.mean(), abs=1e-9)
    for t in (0.1, 0.3, 0.5, 0.7):
        assert result[f"accuracy@{t}"] == pytest.approx(np.mean(expected >= t))
    plain = compute_grounding_metrics(_records(a, rng.uniform(size=1000)), references)
    assert plain["mean_iou"] == pytest.approx(result["mean_iou"], abs=1e-12)


def test_module_matches_plain_function_on_mixed_input(metric):
    predictions = [
        [],
        _records([(0, 0, 10, 10)], [0.7])[0] + _records([(40, 40, 60, 60)], [0.2])[0],
        _records([(5, 5, 25, 25)], [0.4])[0],
    ]
    references = [
        [],
        [{"phrase": "x", "category": "A", "boxes": [[0, 0, 10, 12], [30, 30, 50, 50]]}],
        [
            {"phrase": "y", "category": "B", "boxes": [[0, 0, 20, 20]]},
            {"phrase": "z", "category": "B", "boxes": [[50, 50, 60, 60]]},
        ],
    ]
    from_module = metric.compute(predictions=predictions, references=references, multi_box="union")
    assert from_module == compute_grounding_metrics(predictions, references, multi_box="union")


def test_module_errors_name_the_sample(metric):
    bad = [[], [{"label": "x", "score": 0.5, "box": {"xmin": 12.0, "ymin": 0.0, "xmax": 10.0, "ymax": 3.0}}]]
    with pytest.raises(ValueError, match=r"predictions\[1\]\[0\]\['box'\]: xmax \(10.0\) < xmin \(12.0\)"):
        metric.compute(predictions=bad, references=[[], []])
    with pytest.raises(ValueError, match=r"predictions\[0\]\[0\]: missing key\(s\) \['score'\]"):
        metric.compute(predictions=[[{"label": "x", "box": {}}]], references=[[]])
    assert metric.compute(predictions=[], references=[])["num_samples"] == 0


def test_single_source_of_the_math_is_copied_with_the_script(metric):
    """evaluate copies grounding_metrics.py next to its cached script; medrg imports the same file."""
    import medrg.evaluation.metrics as plain

    module_file = Path(__import__(type(metric).__module__, fromlist=["_"]).__file__)
    cached_math = module_file.parent / "grounding_metrics.py"
    assert cached_math.exists()
    assert filecmp.cmp(cached_math, FOLDER / "grounding_metrics.py", shallow=False)
    assert plain.compute_grounding_metrics.__module__.endswith("grounding_accuracy.grounding_metrics")
    source = (FOLDER / "grounding_accuracy.py").read_text()
    assert "from .grounding_metrics import" in source and "def box_iou" not in source


# ------------------------------------------------------------------------- bad options: one error naming the argument, in the plain function and the module alike
OPTION_CASES = [
    ("hit_iou negative", {"hit_iou": -1}, r"hit_iou: expected an IoU in \[0, 1\], got -1"),
    ("hit_iou above 1", {"hit_iou": 1.5}, r"hit_iou"),
    ("hit_iou NaN", {"hit_iou": math.nan}, r"hit_iou"),
    ("hit_iou a string", {"hit_iou": "0.5"}, r"hit_iou: expected a number"),
    ("threshold above 1", {"iou_thresholds": [1.5, math.nan]}, r"iou_thresholds\[0\]: expected an IoU in \[0, 1\], got 1.5"),
    ("threshold NaN", {"iou_thresholds": [0.5, math.nan]}, r"iou_thresholds\[1\]: expected an IoU in \[0, 1\], got nan"),
    ("threshold negative", {"iou_thresholds": [-0.1]}, r"iou_thresholds\[0\]"),
    ("thresholds a single number", {"iou_thresholds": 0.5}, r"iou_thresholds: expected a list"),
    ("thresholds a string", {"iou_thresholds": "0.5"}, r"iou_thresholds: expected a list"),
    ("threshold a bool", {"iou_thresholds": [True]}, r"iou_thresholds\[0\]: expected a number"),
    ("zero calibration bins", {"num_calibration_bins": 0}, r"num_calibration_bins: expected a positive integer, got 0"),
    ("fractional calibration bins", {"num_calibration_bins": 2.5}, r"num_calibration_bins"),
    ("bool calibration bins", {"num_calibration_bins": True}, r"num_calibration_bins"),
    ("unknown multi_box rule", {"multi_box": "mean"}, r"multi_box must be one of"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "kwargs", "message"), OPTION_CASES, ids=[c[0] for c in OPTION_CASES])
def test_bad_metric_options_name_the_argument(case, kwargs, message, metric):
    predictions, references = [[pred((0, 0, 10, 10))]], [[finding((0, 0, 10, 10))]]
    with pytest.raises(ValueError, match=message):
        compute_grounding_metrics(predictions, references, **kwargs)
    if case in ("thresholds a single number", "thresholds a string", "threshold a bool"):
        return  # evaluate passes these through unchanged; the plain function is the check
    with pytest.raises(ValueError, match=message):
        metric.compute(predictions=predictions, references=references, **kwargs)
    with pytest.raises(ValueError, match=message):  # zero samples take a separate path in the module
        metric.compute(predictions=[], references=[], **kwargs)
