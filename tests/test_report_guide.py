"""Report-guided decoding (processing/guide_medrg.py) and the hand-written reports of tests/data.

The hand-written reports (36, written for this project in styles the training data does not use: telegraphic,
hedged, sectioned, prose, long lists) run through the embedded default model's pipeline at its default options on
val-like images: each stated finding is named by a label, no label names a denied finding, a normal or
denial-only report gets no box, and a report listing up to 10 findings gets a box for every one of them.
"""

from __future__ import annotations

import json
import random

import pytest
import torch
from conftest import REPO_ROOT, xray_like
from medrg.evaluation.grounding_accuracy.grounding_metrics import names_category
from medrg.processing.reading_medrg import report_key_phrases
from PIL import Image

HANDWRITTEN = REPO_ROOT / "tests" / "data" / "handwritten_reports.jsonl"
CASES = [json.loads(line) for line in HANDWRITTEN.read_text().splitlines() if line.strip()]


# ---- the reader: what a report states ----


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        ("Cardiomegaly. Lungs are clear.", ["cardiomegaly"]),
        ("Moderate left pleural effusion. No pneumothorax.", ["moderate left pleural effusion"]),
        ("No pneumothorax. Heart size is normal.", []),
        ("No finding.", []),
        ("No acute cardiopulmonary process.", []),
        ("Pneumothorax, left, moderate. Effusion absent.", ["left pneumothorax"]),
        (
            "Fluid layers in the right pleural space. The left hemithorax is unremarkable.",
            ["fluid layers in the right pleural space"],
        ),
        (
            "Right pleural effusion; left pleural effusion.",
            ["right pleural effusion", "left pleural effusion"],
        ),
        # one finding stated twice on the same side: one phrase, the first wording with its modifiers
        (
            "Small right basilar effusion. IMPRESSION: Effusion on the right side.",
            ["small right basilar effusion"],
        ),
    ],
)
def test_report_key_phrases(report, expected):
    assert report_key_phrases(report) == expected


def test_report_key_phrases_of_every_handwritten_report_name_its_findings_and_no_denied_one():
    for case in CASES:
        phrases = report_key_phrases(case["report"])
        for finding in case["findings"]:
            assert any(names_category(p, finding["category"]) for p in phrases), (case["id"], phrases)
        for denied in case["denied"]:
            assert not any(names_category(p, denied) for p in phrases), (case["id"], phrases)
        if not case["findings"]:
            assert phrases == [], case["id"]


# ---- the guide: token level ----


def _walk(guide, sample: int, rng: random.Random, limit: int = 200) -> list[int]:
    """A random path through the guide (a stand-in for any model's choices)."""
    generated: list[int] = []
    for _ in range(limit):
        allowed = guide.allowed_tokens(sample, generated)
        if not allowed:
            return generated
        generated.append(rng.choice(allowed))
    raise AssertionError("the guide never ends the answer")


@pytest.fixture(scope="module")
def default_processor():
    from medrg.loading import load_medrg

    model, processor = load_medrg("default")
    return model, processor


def test_guide_pieces_are_the_training_answer_encoding(tiny, default_processor):
    phrases = ["left pleural effusion", "nodule in the right upper lobe", "cardiomegaly"]
    for processor in (tiny[1], default_processor[1]):
        guide = processor.report_guide([phrases], prompt_length=0)
        option = guide.options[0]
        box, eos = processor.box_token_id, processor.tokenizer.eos_token_id
        ids = [
            *option["first"][0],
            box,
            *option["next"][1],
            box,
            *option["next"][2],
            box,
            *option["end"],
            eos,
        ]
        assert ids == processor._answer_ids(phrases, 0)
        none = processor.report_guide([[]], prompt_length=0).options[0]["none"]
        assert [*none, eos] == processor._answer_ids([], 0)


def test_every_path_through_the_guide_names_each_phrase_once_and_all_of_them(default_processor):
    processor = default_processor[1]
    reports = [
        "Cardiomegaly. Small left pleural effusion. Right upper lobe nodule. No pneumothorax.",
        "No pneumothorax. Heart size is normal.",
        CASES[31]["report"],  # ten findings
    ]
    phrases = processor.report_phrases(reports)
    assert [len(p) for p in phrases] == [3, 0, 10]
    guide = processor.report_guide(phrases, prompt_length=0)
    rng = random.Random(0)
    for sample, expected in enumerate(phrases):
        for _ in range(5):
            ids = _walk(guide, sample, rng)
            assert ids[-1] == processor.tokenizer.eos_token_id
            text = processor.tokenizer.decode(ids[:-1])
            written = processor._phrases(torch.tensor(ids))
            assert sorted(written) == sorted(expected), text
            if not expected:
                assert text.strip() == processor.no_finding_answer


def test_guide_masks_the_logits_and_leaves_finished_rows_alone(default_processor):
    processor = default_processor[1]
    guide = processor.report_guide([["cardiomegaly"], []], prompt_length=2)
    vocab = len(processor.tokenizer)
    input_ids = torch.tensor([[5, 6], [5, 6]])
    scores = guide(input_ids, torch.zeros(2, vocab))
    first = guide.options[0]["first"][0][0]
    assert torch.isfinite(scores[0]).sum() == vocab  # masked with the dtype's minimum, never NaN
    assert scores[0].argmax() == first and (scores[0] > -1).sum() == 1
    assert scores[1].argmax() == guide.options[1]["none"][0] and (scores[1] > -1).sum() == 1
    done = torch.tensor([[5, 6, processor.tokenizer.eos_token_id]] * 2)
    assert (guide(done, torch.zeros(2, vocab)) == 0).all()  # a finished answer is not constrained
    with pytest.raises(ValueError, match="built for 2 samples"):
        guide(input_ids[:1], torch.zeros(1, vocab))


# ---- the embedded default model on hand-written reports ----


@pytest.fixture(scope="module")
def default_pipe(default_processor):
    from medrg.processing.pipeline_medrg import ReportGroundingPipeline

    model, processor = default_processor
    return ReportGroundingPipeline(model=model, processor=processor, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def xrays():
    return [Image.fromarray(xray_like(256, 256, seed=seed)) for seed in range(2)]


def test_handwritten_reports_through_the_default_pipeline(default_pipe, xrays):
    inputs = [{"image": xrays[k % 2], "report": case["report"]} for k, case in enumerate(CASES)]
    outputs = default_pipe(inputs, batch_size=8, return_status=True)
    many = 0
    for case, output in zip(CASES, outputs):
        labels = [record["label"] for record in output["findings"]]
        assert output["finished"], case["id"]
        for finding in case["findings"]:  # every stated finding is named, also in a 10-finding list
            assert any(names_category(label, finding["category"]) for label in labels), (case["id"], labels)
        for denied in case["denied"]:
            assert not any(names_category(label, denied) for label in labels), (case["id"], labels)
        if not case["findings"]:
            assert output["findings"] == [], case["id"]
        else:  # the report's own words
            report = case["report"].lower()
            assert all(all(word in report for word in label.split()) for label in labels), (
                case["id"],
                labels,
            )
        many += len(case["findings"]) >= 4
    assert many >= 3 and max(len(case["findings"]) for case in CASES) == 10


def test_free_reading_is_the_models_own_answer(default_pipe, default_processor, xrays):
    """`guided=False` is the model's unguided answer: what `generate_grounding` without the guide gives."""
    report = "Moderate left pleural effusion. No pneumothorax."
    guided = default_pipe(xrays[0], report=report)
    free = default_pipe(xrays[0], report=report, guided=False, threshold=0.0)
    assert [r["label"] for r in guided] == ["moderate left pleural effusion"]
    model, processor = default_processor
    inputs = processor(images=[xrays[0]], text=[report])
    with torch.no_grad():
        out = model.eval().generate_grounding(
            **{k: inputs[k] for k in ("input_ids", "pixel_values", "attention_mask")}
        )
    (unguided,) = processor.post_process_grounding(
        out, target_sizes=inputs["image_sizes"], threshold=0.0, top_k=1
    )
    assert free and unguided["labels"], "the free reading at threshold 0 named nothing"
    assert [r["label"] for r in free] == list(unguided["labels"])
    assert [r["score"] for r in free] == pytest.approx(unguided["scores"].tolist(), abs=1e-5)
