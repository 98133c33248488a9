"""The `evaluate` module folder: loads offline by path, runs the card's example, same math as the plain functions."""

from __future__ import annotations

import doctest
import filecmp
from pathlib import Path

import numpy as np
import pytest
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
