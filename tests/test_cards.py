"""Model and dataset cards: one template each, rendered from measured values, valid for huggingface_hub's card
classes, no absolute paths, the embedded default model's README rendered from its metrics.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT
from huggingface_hub import DatasetCard, EvalResult, ModelCard, ModelCardData
from medrg.hub_cards.dataset_card import render_dataset_card
from medrg.hub_cards.model_card import (
    CARD_METRICS,
    DEFAULT_MODEL_NAME,
    PIPELINE_TAG,
    render_default_model_card,
    render_model_card,
)

from medrg.defaults import DEFAULT_MODEL_DIR

# The Hub's task ids (huggingface.co/tasks, as of huggingface_hub 2.x); report-grounding is not among them.
HUB_TASKS = {
    "any-to-any", "audio-classification", "audio-text-to-text", "audio-to-audio", "automatic-speech-recognition",
    "depth-estimation", "document-question-answering", "feature-extraction", "fill-mask", "image-classification",
    "image-feature-extraction", "image-segmentation", "image-text-to-image", "image-text-to-text",
    "image-text-to-video", "image-to-3d", "image-to-image", "image-to-text", "image-to-video", "keypoint-detection",
    "mask-generation", "object-detection", "question-answering", "reinforcement-learning", "robotics",
    "sentence-similarity", "summarization", "table-question-answering", "tabular-classification",
    "tabular-regression", "text-classification", "text-generation", "text-ranking", "text-to-audio",
    "text-to-image", "text-to-speech", "text-to-video", "token-classification", "translation",
    "unconditional-image-generation", "video-classification", "video-text-to-text", "video-to-video",
    "visual-document-retrieval", "visual-question-answering", "zero-shot-classification",
    "zero-shot-image-classification", "zero-shot-object-detection",
}  # fmt: skip
METRICS = {
    "synthcxr_test": {
        "accuracy@0.1": 0.91,
        "accuracy@0.3": 0.8,
        "accuracy@0.5": 0.61234,
        "mean_iou": 0.5,
        "x": 1,
    },
    "synthcxr_test_prior": {"accuracy@0.5": 0.2, "mean_iou": 0.25},
    "validation": {"accuracy@0.5": 0.3, "mean_iou": 0.35, "num_findings": 12},
    "config": "configs/x.yaml",  # non-metric entries are ignored
}
SECTIONS = [
    "## Results",
    "## Usage",
    "## Intended use",
    "## Out of scope",
    "## Limitations and bias",
    "## Privacy",
]
SECTIONS += ["## Training details"]


def _card(**kwargs) -> ModelCard:
    text = render_model_card("medrg-cxr-small", metrics=METRICS, **kwargs)
    return ModelCard(text)


def test_model_card_metadata_is_valid_for_the_hub():
    card = _card(datasets=["synthcxr"], base_models=["org/some-llm"], training={"max_steps": 1800})
    data = card.data
    assert isinstance(data, ModelCardData)
    assert data.library_name == "transformers" and data.license == "apache-2.0" and data.language == "en"
    assert data.pipeline_tag == PIPELINE_TAG and PIPELINE_TAG in HUB_TASKS
    assert data.datasets == ["synthcxr"] and data.base_model == ["org/some-llm"]
    assert data.model_name == "medrg-cxr-small"
    assert all(isinstance(r, EvalResult) for r in data.eval_results)
    values = {(r.dataset_type, r.dataset_split, r.metric_type): r.metric_value for r in data.eval_results}
    assert values == {
        ("synthcxr", "test", "accuracy@0.1"): 0.91,
        ("synthcxr", "test", "accuracy@0.3"): 0.8,
        ("synthcxr", "test", "accuracy@0.5"): 0.6123,
        ("synthcxr", "test", "mean_iou"): 0.5,
        ("medrg-training-data", "validation", "accuracy@0.5"): 0.3,
        ("medrg-training-data", "validation", "mean_iou"): 0.35,
    }  # the prior baseline is in the table only, never in this model's model-index
    assert {r.task_type for r in data.eval_results} == {PIPELINE_TAG}


def test_model_card_body_has_every_section_and_measured_table():
    text = str(_card(training={"max_steps": 1800, "learning_rate": 0.002}))
    assert re.search(r"^# medrg-cxr-small$", text, re.M)
    for section in SECTIONS:
        assert section in text, section
    assert "| SynthCXR test | this model | 91.00 | 80.00 | 61.23 | 50.00 |" in text
    assert "| SynthCXR test | text-only prior | - | - | 20.00 | 25.00 |" in text
    assert "| MedRG training data validation (12 findings) | this model | - | - | 30.00 | 35.00 |" in text
    assert "- max_steps: 1800" in text and "- learning_rate: 0.002" in text
    assert "not a medical device" in text.lower() and "no protected health information" in text.lower()
    # usage with AutoModel and pipeline, with and without medrg
    assert 'medrg.hub.load_pipeline("medrg-cxr-small")' in text
    assert "pipeline_class=medrg.ReportGroundingPipeline" in text
    assert 'pipeline("report-grounding", model="medrg-cxr-small", trust_remote_code=True)' in text
    assert 'AutoModel.from_pretrained("medrg-cxr-small", trust_remote_code=True)' in text
    assert "$" not in text.replace("$ ", "")  # every template field filled


def test_model_card_without_metrics_says_so_and_has_no_model_index():
    card = ModelCard(render_model_card("plain"))
    assert not card.data.eval_results and "model-index" not in str(card)
    assert "Not measured" in str(card)


@pytest.mark.parametrize("name", ["", "   ", None])
def test_model_card_needs_a_name(name):
    with pytest.raises(ValueError, match="name"):
        render_model_card(name)


def test_default_model_readme_is_the_rendered_template():
    """medrg/default_model/README.md == the template rendered with metrics.json (regenerate with
    `python -c "from medrg.hub_cards.model_card import write_default_model_card as w; from medrg.defaults import
    DEFAULT_MODEL_DIR as d; w(d)"`)."""
    committed = (DEFAULT_MODEL_DIR / "README.md").read_text()
    assert committed == render_default_model_card(DEFAULT_MODEL_DIR)
    card = ModelCard(committed)
    assert card.data.model_name == DEFAULT_MODEL_NAME and re.search(
        rf"^# {DEFAULT_MODEL_NAME}$", committed, re.M
    )
    metrics = json.loads((DEFAULT_MODEL_DIR / "metrics.json").read_text())
    for result in card.data.eval_results:
        key = f"{result.dataset_type}_{result.dataset_split}"
        assert result.metric_type in CARD_METRICS
        assert result.metric_value == pytest.approx(metrics[key][result.metric_type], abs=5e-5)
    measured = [
        k
        for k, v in metrics.items()
        if isinstance(v, dict) and "accuracy@0.5" in v and not k.endswith("_prior")
    ]
    assert len(measured) >= 2  # SynthCXR test and ChestX-ray8 validation (and its narrative-report writers)
    assert len(card.data.eval_results) == len(measured) * len(CARD_METRICS)
    for name, guided in metrics.get("report_guided", {}).items():  # the pipeline's default decoding
        if isinstance(guided, dict):
            assert f"{name}: acc@0.5 {100 * guided['accuracy@0.5']:.1f}" in committed
    assert (
        "trust_remote_code=True)" not in committed.split("This folder holds no code")[0].split("## Usage")[1]
    )


CARD_MARKERS = ["pipeline_tag:", "## Limitations and bias", "## Intended use", "model-index"]


def _card_text_outside_template(folder: str) -> list[str]:
    offenders = []
    for path in (REPO_ROOT / folder).rglob("*.py"):
        if path.name == "model_card.py":
            continue
        text = path.read_text(errors="replace")
        offenders += [f"{path.relative_to(REPO_ROOT)}: {m}" for m in CARD_MARKERS if m in text]
    return offenders


@pytest.mark.parametrize(
    "folder", ["medrg", "processing", "modeling_medrg", "evaluation", "hub_cards", "scripts"]
)
def test_card_text_exists_in_one_place(folder):
    """A model card is written only by hub_cards/model_card.py (its one template); no other code holds card text."""
    assert not _card_text_outside_template(folder)


def test_benchmark_writes_the_default_card_with_the_template():
    assert not _card_text_outside_template("benchmarks")


def test_no_absolute_path_in_rendered_cards(tmp_path):
    texts = [render_model_card("m", metrics=METRICS), (DEFAULT_MODEL_DIR / "README.md").read_text()]
    for text in texts:
        for bad in (str(REPO_ROOT), str(Path.home()), "/tmp/", "/work/"):
            assert bad not in text


def test_dataset_card_is_valid_for_the_hub():
    text = render_dataset_card(
        features_yaml=[{"name": "report", "dtype": "string"}],
        split_sizes={"train": 10, "test": 2},
        source="synthcxr",
        data_files={"train": "data/train-*.parquet", "test": "data/test-*.parquet"},
    )
    card = DatasetCard(text)
    data = card.data.to_dict()
    assert data["license"] == "apache-2.0" and data["pretty_name"].startswith("SynthCXR")
    assert set(data["task_categories"]) <= HUB_TASKS
    assert data["configs"][0]["data_files"] == [
        {"split": "train", "path": "data/train-*.parquet"},
        {"split": "test", "path": "data/test-*.parquet"},
    ]
    assert [s["num_examples"] for s in data["dataset_info"]["splits"]] == [10, 2]
    assert "No protected health information" in card.text
    assert yaml.safe_load(text.split("---")[1])["dataset_info"]["features"] == [
        {"name": "report", "dtype": "string"}
    ]
