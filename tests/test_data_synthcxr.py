"""SynthCXR: determinism, schema, the ground-truth rules, report styles, and the DatasetDict build."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from medrg.processing.data import GROUNDING_FEATURES, load_grounding_dataset
from medrg.processing.data.synthcxr import CATEGORIES, generate_example
from medrg.processing.reading_medrg import negated_findings, split_sentences
from medrg.processing.vocabulary_medrg import categories_named
from PIL import Image

N = 60
SIDE_WORD = re.compile(r"\b(right|left|lingula|lingular)\b")


@pytest.fixture(scope="module")
def examples():
    return [generate_example(i, "train", seed=3, image_size=128) for i in range(N)]


@pytest.fixture(scope="module")
def template_examples():
    return [generate_example(i, "train", seed=3, image_size=128, report_style="template") for i in range(N)]


def test_deterministic_by_seed():
    a = generate_example(5, "test", seed=1, image_size=128)
    b = generate_example(5, "test", seed=1, image_size=128)
    c = generate_example(5, "test", seed=2, image_size=128)
    assert a.row["image"]["bytes"] == b.row["image"]["bytes"] and a.row["report"] == b.row["report"]
    assert a.row["image"]["bytes"] != c.row["image"]["bytes"]


def _check_row_schema(row):
    img = Image.open(io.BytesIO(row["image"]["bytes"]))
    assert img.size == (128, 128) and img.mode == "L"
    assert row["patient_id"].startswith("p_") and row["source"] == "synthcxr"
    for f in row["findings"]:
        assert f["category"] in CATEGORIES
        assert len(f["phrase"].split()) <= 8
        ((x0, y0, x1, y1),) = f["boxes"]
        assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128
        # the smallest lesion still spans >= ~6 % of the image side
        assert max(x1 - x0, y1 - y0) >= 0.06 * 128


def test_template_rows_follow_schema_and_phrases_are_in_findings(template_examples):
    for ex in template_examples:
        row = ex.row
        _check_row_schema(row)
        assert row["report"].startswith("FINDINGS:") and "IMPRESSION:" in row["report"]
        for f in row["findings"]:
            assert f["phrase"] in row["report"].split("IMPRESSION:")[0]


def test_varied_phrases_are_the_reports_words_and_name_category_and_side(examples):
    """Each phrase is a span of one sentence of the report (case aside), names its category (synonyms) and the
    lesion's side, so that exactly one drawn lesion fits it even with distractors."""
    for ex in examples:
        row = ex.row
        _check_row_schema(row)
        sentences = [s.lower() for s in split_sentences(row["report"])]
        mentioned = [le for le in ex.lesions if le.mentioned]
        for f, lesion in zip(row["findings"], mentioned):
            assert f["phrase"] == lesion.phrase and f["category"] == lesion.category
            assert any(f["phrase"] in s for s in sentences), (f["phrase"], row["report"])
            assert categories_named(f["phrase"]) == {f["category"]}, f["phrase"]
            sides = set(SIDE_WORD.findall(f["phrase"]))
            if lesion.side == "right":
                assert sides == {"right"}, f["phrase"]
            elif lesion.side == "left":
                assert sides and sides <= {"left", "lingula", "lingular"}, f["phrase"]
            else:
                assert not sides, f["phrase"]
    styles = {("FINDINGS:" in ex.row["report"], "\n" in ex.row["report"]) for ex in examples}
    assert len(styles) >= 3  # sections, prose and one-line reports all occur


def test_report_style_changes_only_the_text():
    for i in range(6):
        varied = generate_example(i, "test", seed=1, image_size=96)
        template = generate_example(i, "test", seed=1, image_size=96, report_style="template")
        assert varied.row["image"]["bytes"] == template.row["image"]["bytes"]
        assert [f["boxes"] for f in varied.row["findings"]] == [f["boxes"] for f in template.row["findings"]]
        assert [f["category"] for f in varied.row["findings"]] == [
            f["category"] for f in template.row["findings"]
        ]
    # the template style is the first generator's wording (the shipped default model's example report)
    example = generate_example(0, "test", seed=1, image_size=256, report_style="template")
    assert example.row["report"] == (
        "FINDINGS: Portable AP chest radiograph. The radiograph demonstrates blunting of the right costophrenic "
        "angle. There is right apical pulmonary nodule. No pneumothorax.\n\nIMPRESSION: 1. Blunting of the right "
        "costophrenic angle. 2. Right apical pulmonary nodule."
    )
    assert [f["boxes"] for f in example.row["findings"]] == [
        [[62.0, 140.0, 121.0, 166.0]],
        [[73.0, 49.0, 98.0, 74.0]],
    ]


@pytest.mark.parametrize("style", ["varied", "template"])
def test_ground_truth_rules(style, examples, template_examples):
    examples = examples if style == "varied" else template_examples
    n_empty = 0
    for ex in examples:
        mentioned = [le for le in ex.lesions if le.mentioned]
        if not mentioned:
            n_empty += 1
            assert ex.lesions == [] and ex.row["findings"] == []
            continue
        # each (category, side) appears once among mentioned; distractors never share one with them
        keys = [(le.category, le.side) for le in ex.lesions]
        assert len(keys) == len(set(keys))
        # no negation of a present category (mentioned or distractor), read back with the negation reader
        for le in ex.lesions:
            assert f"No {le.category}." not in ex.row["report"]
        assert not {le.category for le in ex.lesions} & negated_findings(ex.row["report"]), ex.row["report"]
        # lesions do not overlap much
        boxes = [le.box for le in ex.lesions if le.category != "cardiomegaly"]
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                iw = min(a[2], b[2]) - max(a[0], b[0])
                ih = min(a[3], b[3]) - max(a[1], b[1])
                if iw > 0 and ih > 0:
                    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
                    assert iw * ih / small <= 0.15 + 1e-6
    assert 0.03 <= n_empty / N <= 0.35
    assert any(not le.mentioned for ex in examples for le in ex.lesions)  # distractors exist


def test_lesion_is_visible_in_pixels():
    # pixels inside a nodule are brighter than the same place in the lung around it
    for i in range(40):
        ex = generate_example(i, "validation", seed=0, image_size=128, encode=False)
        nod = [le for le in ex.lesions if le.category == "nodule"]
        if nod:
            x0, y0, x1, y1 = (int(round(v)) for v in nod[0].box)
            arr = ex.row["image"]["array"].astype(float)
            cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
            ring = np.concatenate([arr[cy, max(0, x0 - 4) : x0 - 1], arr[cy, x1 + 1 : x1 + 4]])
            assert arr[cy - 1 : cy + 2, cx - 1 : cx + 2].mean() > ring.mean()
            return
    pytest.fail("no nodule in 40 examples")


def test_build_dataset_dict_and_options_are_not_stale(tmp_path):
    def build(**options):
        """A synthcxr build in ``tmp_path``: 6 train rows, seed 0, 96 px unless ``options`` say otherwise."""
        defaults = {"examples_per_split": {"train": 6}, "seed": 0, "image_size": 96}
        return load_grounding_dataset(
            "synthcxr", **{**defaults, **options}, cache_dir=str(tmp_path), progress=False
        )

    dd = build(examples_per_split={"train": 6, "test": 3})
    assert set(dd) == {"train", "test"} and dd["train"].num_rows == 6 and dd["test"].num_rows == 3
    assert dd["train"].features == GROUNDING_FEATURES
    assert dd["train"][0]["image"].size == (96, 96)
    again = build(seed=1)
    assert (
        again["train"][0]["report"] != dd["train"][0]["report"]
        or again["train"][1]["report"] != dd["train"][1]["report"]
    )
    bigger = build(image_size=112)
    assert bigger["train"][0]["image"].size == (112, 112)
    template = build(report_style="template")
    assert all(r.startswith("FINDINGS:") for r in template["train"]["report"])
    assert template["train"]["report"] != dd["train"]["report"]


def test_bad_options():
    with pytest.raises(ValueError, match="unknown split"):
        load_grounding_dataset("synthcxr", examples_per_split={"dev2": 3})
    with pytest.raises(ValueError, match="unknown dataset"):
        load_grounding_dataset("nope")
    with pytest.raises(ValueError, match="report_style must be one of"):
        load_grounding_dataset("synthcxr", examples_per_split={"train": 1}, report_style="poetry")
    with pytest.raises(ValueError, match="report_style must be one of"):
        generate_example(0, report_style="free")
