"""Baselines, the runner and `medrg evaluate` on small hand-built datasets in the schema; options and rows are
checked before any inference."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from PIL import Image

datasets = pytest.importorskip("datasets")

from medrg.evaluation import (  # noqa: E402
    CenterBaseline,
    PriorBaseline,
    evaluate_model,
    make_baseline,
    metrics_table,
    predict_groundings,
)
from medrg.evaluation.baselines import position_words, split_clauses  # noqa: E402
from medrg.processing.data.schema import GROUNDING_FEATURES  # noqa: E402

# (category, side, zone) -> normalised box; the patient's right is on the image's left
TRUE_BOXES = {
    ("Nodule", "right", "upper"): (0.20, 0.15, 0.30, 0.25),
    ("Nodule", "left", "lower"): (0.65, 0.60, 0.75, 0.70),
    ("Effusion", "right", "lower"): (0.10, 0.60, 0.45, 0.85),
    ("Effusion", "left", "lower"): (0.55, 0.60, 0.90, 0.85),
    ("Cardiomegaly", "", ""): (0.35, 0.45, 0.75, 0.80),
}
PHRASES = {"Nodule": "nodule", "Effusion": "pleural effusion", "Cardiomegaly": "cardiomegaly"}


def make_rows(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        size = rng.choice([64, 96])
        keys = rng.sample(list(TRUE_BOXES), rng.choice([0, 1, 1, 2]))
        findings, sentences = [], []
        for category, side, zone in keys:
            words = " ".join(w for w in (side, zone, PHRASES[category]) if w)
            box = [v * size + rng.uniform(-1, 1) for v in TRUE_BOXES[(category, side, zone)]]
            findings.append({"phrase": words, "category": category, "boxes": [box]})
            sentences.append(f"There is {words}.")
        if not any(k[0] == "Effusion" for k in keys):
            sentences.append("No pleural effusion.")
        sentences.append("No pneumothorax.")
        image = Image.fromarray(np.full((size, size), 40 + i % 100, dtype=np.uint8))
        rows.append(
            {
                "image": image,
                "report": " ".join(sentences)
                if keys
                else "No acute cardiopulmonary process. " + " ".join(sentences),
                "findings": findings,
                "image_id": f"img{seed}_{i}",
                "patient_id": f"p{seed}_{i}",
                "source": "toy",
            }
        )
    return rows


@pytest.fixture(scope="module")
def toy():
    return datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(make_rows(60, 0), features=GROUNDING_FEATURES),
            "test": datasets.Dataset.from_list(make_rows(16, 1), features=GROUNDING_FEATURES),
        }
    )


def test_report_parsing():
    assert split_clauses("Right effusion, no pneumothorax. Stable heart.") == [
        "Right effusion",
        "no pneumothorax",
        "Stable heart",
    ]
    assert position_words("right upper lobe") == ("right", "upper")
    assert position_words("bibasilar atelectasis") == ("bilateral", "lower")
    assert position_words("right and left") == ("bilateral", "")


def test_prior_finds_findings_skips_negations_and_backs_off(toy):
    prior = PriorBaseline().fit(toy["train"])
    mentions = prior.find_mentions("There is left lower nodule. No pleural effusion. Without cardiomegaly.")
    assert [(m["category"], m["side"], m["zone"]) for m in mentions] == [("Nodule", "left", "lower")]
    assert prior.find_mentions("Negative for nodule, right pleural effusion.")[0]["category"] == "Effusion"
    assert len(prior.find_mentions("Negative for nodule, right pleural effusion.")) == 1
    # the mean training box of the cell, scaled to the test image
    image = Image.new("L", (200, 100))
    [[record]] = prior.predict([{"image": image, "report": "Right upper nodule."}])
    expected = np.array(TRUE_BOXES[("Nodule", "right", "upper")]) * [200, 100, 200, 100]
    got = [record["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")]
    assert np.allclose(got, expected, atol=1.5)
    assert record["label"] == "Right upper nodule" and 0 <= record["score"] <= 1
    # unseen (category, side, zone) backs off to (category, side), then to the category
    assert ("Nodule", "left", "upper") not in prior.cells
    [[backoff]] = prior.predict([{"image": image, "report": "Nodule in the left apex."}])
    box = prior.cells[("Nodule", "left")][0]
    assert np.allclose([backoff["box"]["xmin"] / 200, backoff["box"]["ymin"] / 100], box[:2])
    [[category_only]] = prior.predict([{"image": image, "report": "Cardiomegaly."}])
    assert np.isclose(category_only["box"]["xmin"] / 200, prior.cells[("Cardiomegaly",)][0][0])
    assert prior.predict([{"image": image, "report": "No acute cardiopulmonary process."}]) == [[]]


def test_prior_reads_only_text(toy):
    prior = PriorBaseline().fit(toy["train"])
    row = {"report": "There is right lower pleural effusion."}
    white = prior.predict([{**row, "image": Image.new("L", (64, 64), 255)}])
    black = prior.predict([{**row, "image": Image.new("L", (64, 64), 0)}])
    assert white == black


def test_runner_writes_all_outputs_for_prior(toy, tmp_path):
    report = evaluate_model("prior", toy, split="test", out_dir=tmp_path, batch_size=5, num_overlays=4)
    metrics = report["metrics"]
    assert report["model"] == "prior" and report["num_samples"] == 16
    assert metrics["accuracy@0.5"] > 0.9 and metrics["mean_iou"] > 0.8  # the toy data is text-determined
    assert metrics["no_finding_accuracy"] == 1.0
    for name in ("metrics.json", "metrics.md", "predictions.jsonl", "reliability.png", "iou_histogram.png",
                 "per_category.png", "overlays.png"):  # fmt: skip
        assert (tmp_path / name).stat().st_size > 0, name
    stored = json.loads((tmp_path / "metrics.json").read_text())
    assert stored["metrics"]["mean_iou"] == pytest.approx(metrics["mean_iou"])
    assert stored["config"]["multi_box"] == "max"
    assert "| prior |" in (tmp_path / "metrics.md").read_text()
    assert len((tmp_path / "predictions.jsonl").read_text().splitlines()) == 16


def test_runner_center_and_callables(toy):
    center = evaluate_model("center", toy, show_progress=False)["metrics"]
    assert center["num_predictions"] == 16 and center["no_finding_accuracy"] == 0.0
    prior = evaluate_model(make_baseline("prior"), toy)["metrics"]
    assert prior["mean_iou"] > center["mean_iou"]

    calls = []

    def perfect(examples):
        calls.append(len(examples))
        return [
            [
                {
                    "label": f["phrase"],
                    "score": 1.0,
                    "box": dict(zip(("xmin", "ymin", "xmax", "ymax"), f["boxes"][0])),
                }
                for f in example["findings"]
            ]
            for example in examples
        ]

    report = evaluate_model(perfect, toy["test"], batch_size=6, max_samples=10)
    assert calls == [6, 4]
    assert (
        report["metrics"]["mean_iou"] == pytest.approx(1.0) and report["metrics"]["phrase_exact_match"] == 1.0
    )
    # a baseline on a single split needs train_dataset
    with pytest.raises(ValueError, match="train"):
        evaluate_model("prior", toy["test"])
    assert evaluate_model(CenterBaseline(), toy["test"], train_dataset=toy["train"])["num_samples"] == 16
    with pytest.raises(ValueError, match="neither a model directory nor a baseline"):
        evaluate_model("no_such_model", toy)
    with pytest.raises(ValueError, match="split 'validation' not in the dataset"):
        evaluate_model("prior", toy, split="validation")


def test_metrics_table_has_paper_rows(toy):
    metrics = evaluate_model("prior", toy)["metrics"]
    table = metrics_table([("prior", metrics)], paper_dataset="ChestX-ray8")
    assert "| prior |" in table and "uMedGround (paper)" in table and "38.49" in table


def test_cli(toy, tmp_path, monkeypatch, capsys):
    import argparse

    import medrg.processing.data as data
    from medrg.evaluation import cli

    loaded = {}

    def fake_loader(name, data_dir=None):
        loaded.update(name=name, data_dir=data_dir)
        return toy

    monkeypatch.setattr(data, "load_grounding_dataset", fake_loader, raising=False)
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    args = parser.parse_args(
        ["--model", "prior", "--dataset", "toy", "--data-dir", str(data_dir), "--out", str(tmp_path)]
    )
    assert cli.run(args) == 0
    assert loaded == {"name": "toy", "data_dir": str(data_dir)}
    assert json.loads((tmp_path / "metrics.json").read_text())["dataset"] == "toy"
    assert "accuracy@0.5" in capsys.readouterr().out


def test_tiny_model_runs_through_the_runner(toy, tmp_path):
    import medrg

    model, processor = medrg.build_tiny_medrg(seed=0)
    report = evaluate_model(
        (model, processor), toy, max_samples=3, batch_size=3, out_dir=tmp_path, num_overlays=2
    )
    assert report["num_samples"] == 3
    metrics = report["metrics"]
    assert 0.0 <= metrics["mean_iou"] <= 1.0 and metrics["num_findings"] == sum(
        len(toy["test"][i]["findings"]) for i in range(3)
    )
    assert (tmp_path / "metrics.json").exists() and (tmp_path / "overlays.png").exists()


def test_predict_groundings_is_the_pipeline_batched_or_not():
    """The one prediction path: same records batched as one by one, as the pipeline gives; model untouched."""
    from medrg.evaluation import predict_groundings

    import medrg
    from medrg.loading import load_medrg

    model, processor = load_medrg("default")
    example = medrg.DEFAULT_MODEL_DIR
    report = (example / "example_report.txt").read_text()
    image = Image.open(example / "example_cxr.png")
    rows = [
        {"image": image, "report": report, "findings": []},
        {"image": image.resize((200, 160)), "report": report},
        {"image": image, "report": "No acute cardiopulmonary process."},
    ]
    model.train()
    batched = predict_groundings(model, processor, rows, batch_size=3, threshold=0.0)
    assert model.training  # mode restored
    single = [predict_groundings(model, processor, [row], batch_size=1)[0] for row in rows]
    assert len(batched) == 3 and sum(len(records) for records in batched) > 0
    for many, one in zip(batched, single):
        assert [r["label"] for r in many] == [r["label"] for r in one]
        for a, b in zip(many, one):
            assert a["score"] == pytest.approx(b["score"], abs=1e-4)
            assert [a["box"][k] for k in a["box"]] == pytest.approx([b["box"][k] for k in b["box"]], abs=1e-2)
    from medrg.processing.pipeline_medrg import ReportGroundingPipeline

    pipe = ReportGroundingPipeline(model=model.eval(), processor=processor, device="cpu")
    assert pipe(image, report=report, threshold=0.0) == single[0]
    # the threshold is the caller's and filters in every mode, guided (the default) or not
    kept = predict_groundings(model, processor, rows[:1], threshold=0.5, guided=False)[0]
    assert all(r["score"] >= 0.5 for r in kept)
    guided = predict_groundings(model, processor, rows[:1], threshold=0.3)[0]
    assert guided == [r for r in single[0] if r["score"] >= 0.3]
    assert predict_groundings(model, processor, rows[:1], threshold=1.0)[0] == []
    free = predict_groundings(model, processor, rows[:1], threshold=0.0, guided=False)[0]
    assert kept == [r for r in free if r["score"] >= 0.5]
    # top_k=1 (the default) is one box per phrase; top_k=None gives every hypothesis
    every = predict_groundings(model, processor, rows[:1], top_k=None)[0]
    assert len({r["label"] for r in single[0]}) == len(single[0]) <= len(every)


# ------------------------------------------------------------------------- options and --out are checked before any inference
def test_evaluate_checks_out_before_loading_anything(tmp_path):
    from medrg.evaluation import evaluate_model

    from medrg.cli import main

    a_file = tmp_path / "metrics.txt"
    a_file.write_text("not a folder")
    # the dataset name does not exist: the --out error must come first
    with pytest.raises(SystemExit, match=r"^medrg evaluate: error: --out '.*metrics\.txt' is a file"):
        main(["evaluate", "--model", "prior", "--dataset", "no-such-dataset", "--out", str(a_file)])
    with pytest.raises(SystemExit, match=r"--out '.*metrics\.txt/sub' is not a writable folder"):
        main(["evaluate", "--model", "prior", "--dataset", "no-such-dataset", "--out", str(a_file / "sub")])
    calls = []

    def predict(examples):
        calls.append(len(examples))
        return [[] for _ in examples]

    rows = [{"image": None, "report": "x", "findings": []}]
    with pytest.raises(ValueError, match="is a file"):
        evaluate_model(predict, rows, out_dir=a_file)
    with pytest.raises(ValueError, match=r"iou_thresholds\[0\]"):  # metric options too, before inference
        evaluate_model(predict, rows, iou_thresholds=[2.0])
    with pytest.raises(ValueError, match="multi_box"):
        evaluate_model(predict, rows, multi_box="mean")
    assert calls == []
    assert evaluate_model(predict, rows, out_dir=tmp_path / "new" / "out")["num_samples"] == 1 and calls == [
        1
    ]
    assert (tmp_path / "new" / "out" / "metrics.json").is_file()


# ------------------------------------------------------------------------- the prediction path
PREDICT_CASES = [
    ("a row without report", [{"image": None}], {}, r"rows\[0\]: expected a mapping with keys 'image' and 'report'"),
    ("a row that is a string", ["image.png"], {}, r"rows\[0\]: expected a mapping"),
    ("batch size 0", [], {"batch_size": 0}, r"batch_size must be a positive integer, got 0"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "rows", "kwargs", "message"), PREDICT_CASES, ids=[c[0] for c in PREDICT_CASES]
)
def test_predict_groundings_rejects_bad_rows(case, rows, kwargs, message):
    with pytest.raises(ValueError, match=message):
        predict_groundings(None, None, rows, **kwargs)


def test_predict_groundings_of_no_rows_is_empty():
    assert predict_groundings(None, None, []) == []
