"""Every producer of a hub folder writes the same self-contained folder, and each folder loads in a FRESH process
(a) without `medrg` (pipeline + Auto classes with trust_remote_code=True) and (b) with `medrg` installed without
executing any of the folder's .py files (they are edited to raise on import), giving identical records."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import REPO_ROOT, run_fresh_python, tiny_train_config, xray_like
from PIL import Image
from transformers import pipeline

REPORTS = ["Nodule in the right upper lobe. No effusion.", "Consolidation in the left lower lobe."]
PRODUCERS = ["save_hub_folder", "pipe.save_pretrained", "training_export", "default_model_export"]
EXAMPLE = REPO_ROOT / "docs" / "example_cxr.png"

WITHOUT_MEDRG = r"""
import json, sys
sys.modules["medrg"] = None  # any `import medrg` fails: only the folder's own code may run
import torch
from PIL import Image
from transformers import AutoConfig, AutoModel, AutoProcessor, pipeline
folder, request = sys.argv[1], json.loads(sys.argv[2])
config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
inputs = processor(images=[Image.open(p) for p in request["images"]], text=request["reports"])
with torch.no_grad():
    logits_sum = float(model(**inputs).logits.double().sum())
pipe = pipeline("report-grounding", model=folder, trust_remote_code=True)
rows = [{"image": p, "report": r} for p, r in zip(request["images"], request["reports"])]
print(json.dumps({
    "classes": [type(x).__module__ for x in (config, model, processor, pipe)],
    "medrg_loaded": any(n == "medrg" or n.startswith("medrg.") for n, m in sys.modules.items() if m is not None),
    "logits_sum": logits_sum,
    "default": pipe(rows, max_new_tokens=40),
    "all": pipe(rows, max_new_tokens=40, threshold=0.0, top_k=None),
}))
"""

WITH_MEDRG = r"""
import json, sys
import torch
from PIL import Image
from transformers import AutoConfig, AutoModel, AutoProcessor, pipeline
import medrg, medrg.hub
folder, request = sys.argv[1], json.loads(sys.argv[2])
refused = ""
try:  # transformers prefers the folder's own pipeline code and refuses it without trust_remote_code
    pipeline("report-grounding", model=folder)
except ValueError as error:
    refused = str(error)
config = AutoConfig.from_pretrained(folder)
model = AutoModel.from_pretrained(folder).eval()
processor = AutoProcessor.from_pretrained(folder)
inputs = processor(images=[Image.open(p) for p in request["images"]], text=request["reports"])
with torch.no_grad():
    logits_sum = float(model(**inputs).logits.double().sum())
pipe = medrg.hub.load_pipeline(folder)
explicit = pipeline("report-grounding", model=folder, pipeline_class=medrg.ReportGroundingPipeline)
rows = [{"image": p, "report": r} for p, r in zip(request["images"], request["reports"])]
print(json.dumps({
    "classes": [type(x).__module__ for x in (config, model, processor, pipe)],
    "refused": refused,
    "folder_modules": sorted(n for n in sys.modules if n.startswith("transformers_modules")),
    "logits_sum": logits_sum,
    "default": pipe(rows, max_new_tokens=40),
    "explicit": explicit(rows, max_new_tokens=40),
    "all": pipe(rows, max_new_tokens=40, threshold=0.0, top_k=None),
}))
"""


def _run(script: str, folder: Path, request: dict, modules_cache: Path) -> dict:
    return run_fresh_python(script, str(folder), json.dumps(request), modules_cache=modules_cache)


@pytest.fixture(scope="module")
def request_rows(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("images")
    images = []
    for index in range(2):
        path = folder / f"cxr_{index}.png"
        Image.fromarray(xray_like(96 + 8 * index, 80, seed=index)).save(path)
        images.append(str(path))
    example_report = (REPO_ROOT / "docs" / "example_report.txt").read_text()
    return {"images": images + [str(EXAMPLE)], "reports": REPORTS + [example_report]}


@pytest.fixture(scope="module")
def folders(tiny, tmp_path_factory) -> dict[str, Path]:
    """One folder per producer; the training export comes from a 2-step `medrg.training` run (validation
    metrics measured, so that its card has a model-index)."""
    import medrg.hub
    import medrg.loading
    from medrg.training.train import train

    model, processor = tiny
    root = tmp_path_factory.mktemp("producers")
    out = {
        "save_hub_folder": medrg.hub.save_hub_folder(model, processor, root / "writer" / "chest-medrg-tiny")
    }
    pipe = pipeline("report-grounding", model=model, processor=processor)
    pipe.save_pretrained(root / "pipe" / "tiny-from-pipeline")
    out["pipe.save_pretrained"] = root / "pipe" / "tiny-from-pipeline"
    summary = train(
        tiny_train_config(
            root / "run-tiny", training={"max_steps": 2}, export={"evaluate_splits": ["validation"]}
        )
    )
    out["training_export"] = Path(summary["export_dir"])
    # the embedded default model re-exported (what `medrg export --model default` does): it grounds the example,
    # so the record comparison covers real boxes
    default_model, default_processor = medrg.loading.load_medrg("default")
    out["default_model_export"] = medrg.hub.save_hub_folder(
        default_model, default_processor, root / "default" / "medrg-default"
    )
    return out


def test_every_producer_writes_the_same_files(folders):
    names = {producer: sorted(p.name for p in folder.iterdir()) for producer, folder in folders.items()}
    base = set(names["save_hub_folder"])
    assert {
        "model.safetensors",
        "config.json",
        "processor_config.json",
        "README.md",
        "pipeline_medrg.py",
    } <= base
    assert {
        "modeling_medrg.py",
        "configuration_medrg.py",
        "processing_medrg.py",
        "image_processing_medrg.py",
    } <= base
    for producer, files in names.items():
        assert set(files) - {"metrics.json"} == base - {"metrics.json"}, producer
        folder = folders[producer]
        config = json.loads((folder / "config.json").read_text())
        assert config["auto_map"] == {
            "AutoConfig": "configuration_medrg.MedRGConfig",
            "AutoModel": "modeling_medrg.MedRGForReportGrounding",
        }
        assert config["custom_pipelines"] == {
            "report-grounding": {
                "impl": "pipeline_medrg.ReportGroundingPipeline",
                "pt": ["AutoModel"],
                "type": "multimodal",
            }
        }
        assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pt"))


@pytest.mark.parametrize("producer", PRODUCERS)
def test_no_absolute_local_path_in_any_file(folders, producer):
    folder = folders[producer]
    forbidden = {str(folder.resolve()), str(folder.parent.resolve()), str(REPO_ROOT), str(Path.home())}
    forbidden |= {"/tmp/", "/work/", "/home/"}
    for path in folder.rglob("*"):
        if path.is_file():
            text = path.read_bytes().decode("utf-8", errors="replace")
            for bad in forbidden:
                assert bad not in text, f"{producer}: {path.name} holds {bad!r}"


def test_cards_are_named_after_the_model_not_the_folder(folders):
    titles = {
        producer: re.search(r"^# (.+)$", (folder / "README.md").read_text(), re.M).group(1)
        for producer, folder in folders.items()
    }
    assert titles == {
        "save_hub_folder": "chest-medrg-tiny",
        "pipe.save_pretrained": "tiny-from-pipeline",
        "training_export": "run-tiny",  # the export folder is run-tiny/final: never "# final"
        "default_model_export": "medrg-default",
    }


def test_training_export_card_holds_its_measured_metrics(folders):
    from huggingface_hub import ModelCard

    folder = folders["training_export"]
    metrics = json.loads((folder / "metrics.json").read_text())
    card = ModelCard((folder / "README.md").read_text())
    values = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert values  # the validation split was measured
    for (split, metric), value in values.items():
        assert value == pytest.approx(metrics[split][metric], abs=5e-5)


def _poison(folder: Path, target: Path) -> Path:
    """A copy of `folder` whose every .py raises on import (proves that nothing of it is executed)."""
    shutil.copytree(folder, target)
    for path in target.glob("*.py"):
        path.write_text(
            f"raise RuntimeError('the folder code {path.name} was executed')\n" + path.read_text()
        )
    return target


@pytest.mark.parametrize("producer", PRODUCERS)
def test_fresh_process_with_and_without_medrg_give_identical_records(
    folders, request_rows, producer, tmp_path
):
    folder = folders[producer]
    without = _run(
        WITHOUT_MEDRG, shutil.copytree(folder, tmp_path / "clean"), request_rows, tmp_path / "cache_a"
    )
    poisoned = _poison(folder, tmp_path / "poisoned")
    with_medrg = _run(WITH_MEDRG, poisoned, request_rows, tmp_path / "cache_b")

    assert without["medrg_loaded"] is False
    assert all(module.startswith("transformers_modules.") for module in without["classes"]), without[
        "classes"
    ]
    assert all(module.startswith("medrg.") for module in with_medrg["classes"]), with_medrg["classes"]
    assert with_medrg["folder_modules"] == []  # nothing imported from the folder (its files would raise)
    assert (
        "trust_remote_code" in with_medrg["refused"]
    )  # the documented reason for load_pipeline/pipeline_class
    assert with_medrg["logits_sum"] == pytest.approx(without["logits_sum"], abs=1e-6)
    assert with_medrg["default"] == with_medrg["explicit"] == without["default"]
    assert with_medrg["all"] == without["all"]
    if producer == "default_model_export":  # the trained model grounds the example's findings
        from medrg.evaluation.grounding_accuracy.grounding_metrics import names_category

        labels = {record["label"] for record in with_medrg["default"][2]}
        reference = json.loads((REPO_ROOT / "docs" / "example_findings.json").read_text())
        assert all(any(names_category(label, f["category"]) for label in labels) for f in reference), labels
