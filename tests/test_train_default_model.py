"""The embedded default model: small, loadable offline, grounds the shipped example report, metrics recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medrg.training import default_model_path

FOLDER = Path(default_model_path())


def test_default_model_is_small_and_documented():
    weights = FOLDER / "model.safetensors"
    assert weights.is_file()
    assert weights.stat().st_size <= 25 * 2**20
    metrics = json.loads((FOLDER / "metrics.json").read_text())
    assert metrics["synthcxr_test"]["accuracy@0.5"] > metrics["synthcxr_test_prior"]["accuracy@0.5"]
    assert "medrg train --config configs/default_model.yaml" in (FOLDER / "RECIPE.md").read_text()


def test_default_model_matches_the_model_code():
    """Every weight of the installed code is in the shipped file (a changed architecture needs a retrained default:
    `python benchmarks/train_default_model.py`)."""
    from medrg import MedRGForReportGrounding

    _, info = MedRGForReportGrounding.from_pretrained(str(FOLDER), output_loading_info=True)
    stale = {k: sorted(v) for k, v in info.items() if v}
    assert not stale, f"the default model does not match the model code, retrain it: {stale}"


def test_default_model_grounds_the_shipped_example():
    from PIL import Image
    from transformers import pipeline

    import medrg  # noqa: F401  (registers the task)

    pipe = pipeline("report-grounding", model=str(FOLDER))
    image = Image.open(FOLDER / "example_cxr.png")
    report = (FOLDER / "example_report.txt").read_text()
    records = pipe(image, report=report)
    assert records, "the default model found nothing in the example"
    for record in records:
        box = record["box"]
        assert (
            0 <= box["xmin"] < box["xmax"] <= image.width and 0 <= box["ymin"] < box["ymax"] <= image.height
        )
    if not (FOLDER / "example_findings.json").is_file():
        pytest.skip("no reference findings for the example")


def test_default_model_hub_code_copies_match_the_sources():
    """The folder carries flat copies of the hub code (so it loads with trust_remote_code where medrg is not
    installed); the package folders are the source and the copies must not drift."""
    repo = Path(__file__).resolve().parents[1]
    copies = sorted(p for p in FOLDER.glob("*.py") if p.name != "__init__.py")
    assert {p.name for p in copies} >= {"modeling_medrg.py", "configuration_medrg.py", "processing_medrg.py"}
    for copy in copies:
        sources = [repo / folder / copy.name for folder in ("modeling_medrg", "processing")]
        source = next(s for s in sources if s.is_file())
        assert copy.read_text() == source.read_text(), f"{copy.name} differs from {source}: re-save the default model"
