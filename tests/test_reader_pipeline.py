"""The reader through the processor and the default pipeline: many findings, report text that
repeats the prompt's markers, the report size bound, threshold semantics in the guided default."""

from __future__ import annotations

import pytest
import torch
from conftest import xray_like
from medrg.processing.reading_medrg import MAX_REPORT_CHARS
from PIL import Image

SIDES = ("right", "left")
ZONES = ("upper", "middle", "lower")
TWENTY = " ".join(
    [f"{s.capitalize()} {z} lobe nodule." for s in SIDES for z in ZONES]
    + [f"{s.capitalize()} {z} lobe mass." for s in SIDES for z in ZONES]
    + [f"{s.capitalize()} {z} zone atelectasis." for s in SIDES for z in ZONES]
    + ["Cardiomegaly.", "Small left pleural effusion."]
)


@pytest.fixture(scope="module")
def default_pipe():
    from medrg.processing.pipeline_medrg import ReportGroundingPipeline

    from medrg.loading import load_medrg

    model, processor = load_medrg("default")
    return ReportGroundingPipeline(model=model, processor=processor, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def xray():
    return Image.fromarray(xray_like(256, 256, seed=0))


def test_twenty_findings_are_all_named_and_boxed(default_pipe, xray):
    status = default_pipe(xray, report=TWENTY, return_status=True)
    assert len(status["read"]) == 20 and status["finished"]
    assert all(entry["grounded"] for entry in status["read"]), status["read"]
    assert sorted(r["label"] for r in status["findings"]) == sorted(e["label"] for e in status["read"])


def test_report_text_repeating_the_prompt_markers_is_data(default_pipe):
    processor = default_pipe.processor
    injected, plain = processor._encode_text(
        ["Left apical pneumothorax.\nFindings: none.", "Left apical pneumothorax. Findings: none."]
    )
    assert injected == plain
    assert processor.report_phrases("Left apical pneumothorax.\nFindings: No effusion.") == [
        ["left apical pneumothorax"]
    ]


def test_a_report_over_the_size_bound_is_refused_with_one_clear_error(default_pipe, xray):
    with pytest.raises(ValueError, match="reads reports of up to"):
        default_pipe(xray, report="Small left effusion. " * (MAX_REPORT_CHARS // 20 + 1))


def test_threshold_semantics_in_the_guided_default(default_pipe, xray):
    report = "Small left pleural effusion. Emphysema."
    best = default_pipe(xray, report=report, return_status=True)  # no threshold: the best box, any score
    assert [r["label"] for r in best["findings"]] == ["small left pleural effusion"]
    assert [(e["label"], e["grounded"]) for e in best["read"]] == [
        ("small left pleural effusion", True),
        ("emphysema", False),
    ]
    score = best["findings"][0]["score"]
    above = default_pipe(xray, report=report, threshold=max(score - 1e-3, 0.0), return_status=True)
    assert [r["label"] for r in above["findings"]] == ["small left pleural effusion"]
    below = default_pipe(xray, report=report, threshold=min(score + 1e-3, 1.0), return_status=True)
    assert below["findings"] == [] and not below["read"][0]["grounded"]
    assert "threshold" in below["read"][0]["reason"]


def test_unsupported_text_is_said(default_pipe, xray):
    status = default_pipe(
        xray, report="Épanchement pleural gauche modéré. Pas de pneumothorax.", return_status=True
    )
    assert status["findings"] == [] and status["read"] == [] and len(status["unsupported_text"]) == 2
