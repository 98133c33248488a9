"""The embedded default model: small, loadable offline, grounds the shipped example report, metrics recorded."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from medrg.evaluation import box_iou_matrix, names_category

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
    `python recipes/install_default_model.py`)."""
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
    # the README's claim: both findings named, the effusion found at the IoU it states (reference boxes in
    # docs/example_findings.json, the copy the README cites)
    references = json.loads((REPO_ROOT / "docs" / "example_findings.json").read_text())
    iou = {}
    for finding in references:
        named = [r for r in records if names_category(r["label"], finding["category"])]
        assert len(named) == 1, (finding["phrase"], [r["label"] for r in records])
        box = [named[0]["box"][key] for key in ("xmin", "ymin", "xmax", "ymax")]
        iou[finding["category"]] = float(box_iou_matrix([box], finding["boxes"]).max())
    claim = re.search(r"the effusion is found \(IoU (\d\.\d+)\)", (REPO_ROOT / "README.md").read_text())
    assert claim, "README.md does not state the effusion's IoU on the example"
    assert iou["effusion"] >= 0.5, iou
    assert iou["effusion"] == pytest.approx(float(claim.group(1)), abs=0.02), (iou, claim.group(0))


def test_default_model_folder_is_a_pure_artefact():
    """The committed folder holds weights, JSON, tokenizer and documents only: hub code is copied into a folder when
    it is exported (`medrg export` / save_pretrained), never committed beside the weights, so a change of the model
    code needs no retraining unless the weights change."""
    allowed_suffixes = {".safetensors", ".json", ".md", ".txt", ".png"}
    files = [p for p in FOLDER.iterdir() if p.is_file()]
    assert files, "the default model folder is empty"
    assert not [p.name for p in files if p.suffix == ".py"], (
        "hub code is committed in the default model folder"
    )
    assert {p.suffix for p in files} <= allowed_suffixes, sorted(p.name for p in files)
    for name in ("config.json", "processor_config.json", "tokenizer_config.json"):
        if (FOLDER / name).is_file():
            assert "auto_map" not in json.loads((FOLDER / name).read_text()), f"{name} points at hub code"


def _recipe():
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(
        "default_model_recipe", REPO_ROOT / "recipes" / "default_model.py"
    )
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # its dataclass looks itself up
    spec.loader.exec_module(module)
    return module


def test_recipe_mirror_swaps_sides_in_report_answer_and_boxes():
    from PIL import Image

    recipe = _recipe()
    assert recipe.swap_sides("Left base. RIGHT apex; the right-sided, leftover left.") == (
        "Right base. LEFT apex; the left-sided, leftover right."
    )
    image = Image.new("L", (512, 512))
    image.putpixel((10, 20), 255)
    row = {
        "image_key": "cxr8/a.png",
        "image": image,
        "report": "Small right pleural effusion. No left pneumothorax.",
        "findings": [
            {"phrase": "small right pleural effusion", "category": "effusion", "boxes": [[10, 20, 110, 220]]}
        ],
    }
    mirrored = recipe.mirrored_row(row)
    assert mirrored["image_key"] == "cxr8flip/a.png"
    assert mirrored["report"] == "Small left pleural effusion. No right pneumothorax."
    assert mirrored["findings"] == [
        {"phrase": "small left pleural effusion", "category": "effusion", "boxes": [[402, 20, 502, 220]]}
    ]
    assert mirrored["image"].getpixel((501, 20)) == 255 and mirrored["image"].getpixel((10, 20)) == 0
    # a finding without a side (its prior box would not mirror with it) or one-sided anatomy: no mirror
    unsided = {**row, "findings": [{**row["findings"][0], "phrase": "cardiomegaly"}]}
    assert recipe.mirrored_row(unsided) is None
    assert recipe.mirrored_row({**row, "report": row["report"] + " Right middle lobe clear."}) is None


def test_recipe_trains_the_towers_last_blocks_from_the_cached_stride_16_level():
    """`--tune-vision-from 11`: the EfficientNet-Lite0 blocks after hidden state 11 (stride 16) train on its cached
    features and give exactly the tower's coarsest level; the blocks before stay frozen, BatchNorm in eval mode."""
    from types import SimpleNamespace

    import torch
    from transformers import EfficientNetModel

    from medrg.backbones import efficientnet_lite0_config

    recipe = _recipe()
    torch.manual_seed(0)
    tower = EfficientNetModel(efficientnet_lite0_config(image_size=64)).train()
    model = SimpleNamespace(
        model=SimpleNamespace(vision_tower=tower), config=SimpleNamespace(vision_feature_layer=16)
    )
    tuned = recipe.tuned_vision_blocks(model, recipe.Recipe(tune_vision_from=11))
    assert list(tuned) == [f"model.vision_tower.encoder.blocks.{i}." for i in range(11, 16)]
    assert not tower.training and not any(m.training for m in tower.modules())
    trainable = {n.split(".")[2] for n, p in tower.named_parameters() if p.requires_grad}
    assert trainable == {str(i) for i in range(11, 16)}
    with torch.no_grad():
        hidden = tower(torch.randn(2, 3, 64, 64), output_hidden_states=True).hidden_states
    grids = tuple(hidden[i].permute(0, 2, 3, 1) for i in (16, 5, 11, 16))  # (token grid, *levels), as cached
    maps = recipe.tuned_vision_maps(grids, tuned, recipe.Recipe(tune_vision_from=11))
    assert maps[0] is maps[3] and maps[1] is grids[1] and maps[2] is grids[2]
    torch.testing.assert_close(maps[3], grids[3], rtol=1e-5, atol=1e-5)
    assert maps[3].requires_grad  # the recomputed level carries the blocks' gradients
    for level in (7, 16):  # not a cached level; the last level itself
        with pytest.raises(ValueError, match="tune_vision_from"):
            recipe.tuned_vision_blocks(model, recipe.Recipe(tune_vision_from=level))
