"""Fine-tuning extends the finding vocabulary: a tiny model fine-tuned on a tiny dataset whose category
the shipped vocabulary does not know names it under report-guided decoding, from its exported folder."""

from __future__ import annotations

import json

from conftest import xray_like
from PIL import Image

import medrg
from medrg.training.train import train

REPORT = "Small left widget in the lower zone. No pneumothorax."


def _dataset(folder) -> None:
    folder.mkdir()
    rows = []
    for k in range(8):
        Image.fromarray(xray_like(64, 64, seed=k, boxes=[(36, 34, 56, 54)])).save(folder / f"{k}.png")
        findings = [{"phrase": "small left widget", "category": "Widget", "boxes": [[36, 34, 56, 54]]}]
        rows.append({"image": f"{k}.png", "report": REPORT, "findings": findings, "image_id": f"w{k}"})
    (folder / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_fine_tuning_adds_the_datasets_category_and_the_model_names_it(tmp_path):
    _, base = medrg.build_tiny_medrg(seed=0, image_size=64)
    assert base.read_report(REPORT)[0].stated == []  # the shipped vocabulary has no widget

    _dataset(tmp_path / "widgets")
    config = {
        "model": {"source": "tiny", "image_size": 64, "seed": 0},
        "data": {"sources": [{"name": "jsonl", "data_dir": str(tmp_path / "widgets")}]},
        "training": {"output_dir": str(tmp_path / "run"), "max_steps": 2, "per_device_train_batch_size": 4,
                     "learning_rate": 1e-3, "save_strategy": "no", "use_cpu": True, "torch_threads": 1,
                     "seed": 0},
        "export": {"evaluate_splits": []},
    }  # fmt: skip
    result = train(config)
    folder = result["export_dir"]
    saved = json.loads(open(f"{folder}/processor_config.json").read())
    widget = saved["vocabulary"]["findings"]["widget"]
    assert widget["grounded"] and "Widget" in widget["labels"]

    pipe = medrg.load_pipeline(folder)
    image = Image.fromarray(xray_like(64, 64, seed=99, boxes=[(36, 34, 56, 54)]))
    status = pipe(image, report=REPORT, return_status=True)
    assert [r["label"] for r in status["findings"]] == ["small left widget in the lower zone"]
    assert status["read"][0]["category"] == "widget" and status["read"][0]["grounded"]
