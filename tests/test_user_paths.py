"""What a new user hits: inference that never changes the model, hub folders with a card
and readable weights, docs that match behaviour, fine-tuning the embedded model on one's own jsonl data, one
report for many images, strict argument types, loading and checkpoint errors that name the file, CLI file
handling, and no uploaded file name in the demo's errors."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, tiny_train_config, xray_like
from PIL import Image

import medrg
from medrg.loading import ModelLoadError

REPORT = "Nodule in the right upper lobe. Left pleural effusion."


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory, tiny):
    model, processor = tiny
    return medrg.save_hub_folder(model, processor, tmp_path_factory.mktemp("hub") / "tiny")


def _variant(hub_folder: Path, tmp_path: Path, change) -> Path:
    folder = tmp_path / "variant"
    shutil.copytree(hub_folder, folder)
    change(folder)
    return folder


def _edit_json(file: Path, **values) -> None:
    data = json.loads(file.read_text())
    data.update(values)
    file.write_text(json.dumps(data))


# ---------------------------------------------------------------------------------- inference mode
def test_inference_runs_in_eval_mode_and_never_changes_the_model():
    from transformers import pipeline

    model, processor = medrg.build_tiny_medrg(seed=0)  # as a builder (or Trainer) leaves it: train mode
    model.box_decoder.eval()  # a mixed state that must come back as it was
    modes = {name: module.training for name, module in model.named_modules()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    image = xray_like(96, 80, seed=3)
    pipe = pipeline("report-grounding", model=model, processor=processor)
    first = pipe(image, report=REPORT, threshold=0.0, max_new_tokens=12)
    second = pipe(image, report=REPORT, threshold=0.0, max_new_tokens=12)
    assert {name: module.training for name, module in model.named_modules()} == modes
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), (
        "a call changed the model (BatchNorm statistics)"
    )
    assert first == second
    model.eval()
    assert pipe(image, report=REPORT, threshold=0.0, max_new_tokens=12) == first


# --------------------------------------------------------------------- hub folders from a pipeline
def test_pipe_save_pretrained_writes_the_card_and_readable_weights(tiny, tmp_path, monkeypatch):
    from medrg.processing.pipeline_medrg import ReportGroundingPipeline
    from transformers import pipeline

    # as before `medrg.hub` is imported: the class attribute is not set yet
    monkeypatch.setattr(ReportGroundingPipeline, "hub_folder_writer", None)
    model, processor = tiny
    pipe = pipeline("report-grounding", model=model, processor=processor)
    pipe.save_pretrained(tmp_path / "out")
    assert (tmp_path / "out" / "README.md").is_file(), "no model card"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").iterdir() if p.is_file()}
    assert modes["model.safetensors"] == modes["config.json"] == 0o666 & ~_umask(), modes
    # a hub folder's own copy of the pipeline (no `medrg` to write the card) writes readable weights too
    monkeypatch.setattr("medrg.processing.pipeline_medrg._package_hub_folder_writer", lambda: None)
    pipe.save_pretrained(tmp_path / "plain")
    assert stat.S_IMODE((tmp_path / "plain" / "model.safetensors").stat().st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------------------- documented behaviour
def test_training_doc_states_only_what_is_true():
    text = (REPO_ROOT / "docs" / "training.md").read_text()
    for stale in ("No\n`custom_pipelines` entry is written", "1.9 MB", "`logging_steps` (500) are\nHugging"):
        assert stale not in text, stale
    assert "No `custom_pipelines`" not in " ".join(text.split())
    assert 'pipeline("report-grounding", model=dir)` after `import medrg`' not in " ".join(text.split())
    assert "medrg.load_pipeline(dir)" in text and "trust_remote_code=True" in text
    assert "docs/fine_tuning.md" in text


def test_exported_folder_loads_as_the_training_doc_says(hub_folder):
    from transformers import pipeline

    assert "report-grounding" in json.loads((hub_folder / "config.json").read_text())["custom_pipelines"]
    assert isinstance(medrg.load_pipeline(str(hub_folder)), medrg.ReportGroundingPipeline)
    with pytest.raises(ValueError, match="trust_remote_code"):
        pipeline("report-grounding", model=str(hub_folder))


# ------------------------------------------------------------------ fine-tuning the embedded model
def _jsonl_data(folder: Path, splits: dict[str, int]) -> Path:
    """A tiny jsonl dataset in the format docs/fine_tuning.md documents."""
    (folder / "images").mkdir(parents=True)
    for split, count in splits.items():
        lines = []
        for i in range(count):
            box = [20 + i, 30, 60 + i, 70]
            Image.fromarray(xray_like(96, 96, seed=i, boxes=[box])).save(
                folder / "images" / f"{split}{i}.png"
            )
            lines.append(
                json.dumps(
                    {
                        "image": f"images/{split}{i}.png",
                        "report": "Left pleural effusion. No pneumothorax.",
                        "findings": [
                            {"phrase": "left pleural effusion", "category": "Effusion", "boxes": [box]}
                        ],
                    }
                )
            )
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def _fine_tune_config(tmp_path: Path, data_dir: Path, **training) -> Path:
    """configs/fine_tune_default.yaml with data_dir / output_dir pointed at tmp_path (the doc's one edit)."""
    import yaml

    config = yaml.safe_load((REPO_ROOT / "configs" / "fine_tune_default.yaml").read_text())
    assert config["model"] == {"source": "checkpoint", "checkpoint": "default", "freeze_vision_tower": True}
    config["data"]["sources"][0]["data_dir"] = str(data_dir)
    config["training"].update(output_dir=str(tmp_path / "run"), **training)
    file = tmp_path / "fine_tune.yaml"
    file.write_text(yaml.safe_dump(config))
    return file


def test_fine_tuning_doc_end_to_end_on_a_tiny_jsonl_dataset(tmp_path, capsys):
    from medrg.cli import main

    doc = (REPO_ROOT / "docs" / "fine_tuning.md").read_text()
    assert "configs/fine_tune_default.yaml" in doc and '"findings"' in doc
    data = _jsonl_data(tmp_path / "data", {"train": 6, "validation": 3})
    config = _fine_tune_config(tmp_path, data, max_steps=3, per_device_train_batch_size=2)
    assert main(["train", "--config", str(config)]) == 0
    out = capsys.readouterr().out  # Trainer's loss logs, then the summary (indented JSON)
    summary = json.loads(out[out.index('{\n  "global_step"') :])
    final = Path(summary["export_dir"])
    history = json.loads((tmp_path / "run" / "checkpoint-3" / "trainer_state.json").read_text())[
        "log_history"
    ]
    assert [entry["step"] for entry in history if "loss" in entry] == [1, 2, 3]  # a short run logs its loss
    metrics = json.loads((final / "metrics.json").read_text())
    assert set(metrics) == {"validation"} and 0.0 <= metrics["validation"]["accuracy@0.5"] <= 1.0
    pipe = medrg.load_pipeline(str(final))
    records = pipe(str(data / "images" / "validation0.png"), report="Left pleural effusion.", threshold=0.0)
    assert len(records) == 1 and "effusion" in records[0]["label"].lower()


def test_no_validation_split_warns_and_short_runs_log_the_loss(tmp_path, caplog):
    from medrg.training.config import load_config
    from medrg.training.train import train

    assert load_config({"training": {"max_steps": 4}}).training.logging_steps == 1
    assert load_config({"training": {"max_steps": 1000}}).training.logging_steps == 20
    assert load_config({"training": {"max_steps": 10**6}}).training.logging_steps == 500
    assert load_config({"training": {"num_train_epochs": 1}}).training.logging_steps == 10
    assert load_config({"training": {"max_steps": 4, "logging_steps": 3}}).training.logging_steps == 3
    data = _jsonl_data(tmp_path / "data", {"train": 2})
    config = tiny_train_config(tmp_path / "run", training={"max_steps": 1, "per_device_train_batch_size": 2})
    config["data"]["sources"] = [{"name": "jsonl", "data_dir": str(data), "options": {"progress": False}}]
    config["export"] = {"max_eval_samples": 2}
    with caplog.at_level(logging.WARNING, logger="medrg.training"):
        summary = train(config)
    assert summary["metrics"] == {}
    assert "no split was evaluated for metrics.json" in caplog.text and "Not measured" in caplog.text


def test_model_checkpoint_default_is_accepted():
    from medrg.training.config import load_config
    from medrg.training.train import build_model, check_checkpoint

    config = load_config({"model": {"source": "checkpoint", "checkpoint": "default"}})
    assert check_checkpoint("default")["model_type"] == "medrg"
    model, processor = build_model(config.model)
    assert type(model).__name__ == "MedRGForReportGrounding" and processor.box_token_id is not None


# ---------------------------------------------------------------------- one report for many images
def test_one_report_for_many_images_and_the_report_column(tiny, tmp_path):
    from datasets import Dataset
    from transformers import pipeline
    from transformers.pipelines.pt_utils import KeyDataset

    model, processor = tiny
    pipe = pipeline("report-grounding", model=model, processor=processor)
    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(xray_like(80, 80, seed=i)).save(paths[-1])
    options = {"threshold": 0.0, "max_new_tokens": 12}
    expected = pipe(paths, report=[REPORT, REPORT], **options)
    assert pipe(paths, report=REPORT, **options) == expected
    ds = Dataset.from_dict({"image": paths, "report": [REPORT, REPORT]})
    assert list(pipe(KeyDataset(ds, "image"), report=REPORT, **options)) == expected
    assert list(pipe(KeyDataset(ds, "image"), report=ds["report"], **options)) == expected
    with pytest.raises(ValueError, match="one report \\(a string\\) or a list of 2 reports"):
        pipe(KeyDataset(ds, "image"), report=[REPORT])


# ----------------------------------------------------------------------------- paths in the README
def test_readme_says_where_its_relative_paths_start():
    text = (REPO_ROOT / "README.md").read_text()
    assert "from the repository root" in text
    for path in sorted(set(re.findall(r"\b(docs/[\w./-]+\.(?:png|txt|json))", text))):
        assert (REPO_ROOT / path).is_file(), path


# ------------------------------------------------------------------------------ the low-level path
def test_low_level_path_is_unguided_and_the_readme_shows_the_guided_one(tiny):
    from transformers import pipeline

    text = " ".join((REPO_ROOT / "README.md").read_text().split())
    assert "model.generate_grounding(**processor(images=[image], text=[report], guided=True))" in text
    assert "unguided" in text
    model, processor = tiny
    pipe = pipeline("report-grounding", model=model, processor=processor)
    image = xray_like(96, 80, seed=5)
    inputs = processor(images=[image], text=[REPORT])
    tensors = {k: inputs[k] for k in ("input_ids", "pixel_values", "attention_mask")}

    def labels(**generate):
        out = model.generate_grounding(**tensors, **generate)
        return processor.post_process_grounding(
            out, target_sizes=inputs["image_sizes"], threshold=0.0, top_k=1
        )[0]["labels"]

    # the README's recipe, as written there
    out = model.generate_grounding(**processor(images=[image], text=[REPORT], guided=True))
    guided = processor.post_process_grounding(out, target_sizes=inputs["image_sizes"], threshold=0.0, top_k=1)
    guided = guided[0]["labels"]
    assert guided == [r["label"] for r in pipe(image, report=REPORT, threshold=0.0)]
    free = [r["label"] for r in pipe(image, report=REPORT, threshold=0.0, guided=False)]
    assert labels() == free


# ---------------------------------------------------------------------- the evaluate metric folder
def test_metric_folder_vendored_under_another_name_as_the_card_says(tmp_path):
    import evaluate
    from medrg.evaluation import METRIC_PATH

    card = (Path(METRIC_PATH) / "README.md").read_text()
    assert "vendor" in card.lower() and "my_grounding/my_grounding.py" in card
    vendored = tmp_path / "my_grounding"
    shutil.copytree(METRIC_PATH, vendored, ignore=shutil.ignore_patterns("__pycache__"))
    (vendored / "grounding_accuracy.py").rename(vendored / "my_grounding.py")
    metric = evaluate.load(str(vendored))
    result = metric.compute(
        predictions=[
            [{"label": "effusion", "score": 0.9, "box": {"xmin": 0, "ymin": 0, "xmax": 10, "ymax": 10}}]
        ],
        references=[[{"phrase": "effusion", "boxes": [[0, 0, 10, 10]]}]],
    )
    assert result["accuracy@0.5"] == 1.0


# ------------------------------------------------------------------------------- score calibration
@pytest.mark.parametrize(
    "calibration, message",
    [
        ("12", "must be a list of two numbers"),
        ([True, False], "must be a list of two numbers"),
        ({"1": 0, "2": 0}, "must be a list of two numbers"),
        ([1.0, 2.0, 3.0], "must be a list of two numbers"),
        ([-1.0, 0.0], "an increasing map"),
        ([0.001, 6.9], "saturates"),
    ],
)
def test_score_calibration_is_validated_at_load(hub_folder, tmp_path, calibration, message):
    from medrg.processing.processing_medrg import MedRGProcessor

    folder = _variant(
        hub_folder, tmp_path, lambda d: _edit_json(d / "processor_config.json", score_calibration=calibration)
    )
    with pytest.raises(ValueError, match=message):
        MedRGProcessor.from_pretrained(folder)
    with pytest.raises(ModelLoadError, match=rf"processor_config\.json: score_calibration .*{message}"):
        medrg.load_pipeline(str(folder))


def test_fitted_score_calibrations_are_accepted():
    from medrg.processing.processing_medrg import MedRGProcessor

    for calibration in ([1.0, 0.0], (1, 0), [1.8273, 0.9572], [0.634, -1.471]):
        assert MedRGProcessor._check_calibration(calibration) == [float(v) for v in calibration]


# --------------------------------------------------------------------------------- loading folders
def _truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: _truncate(d / "model.safetensors"), r"model\.safetensors is truncated"),
        (
            lambda d: _edit_json(d / "config.json", model_type="bert", auto_map={}),
            r"config\.json: model_type 'bert' is not a MedRG model",
        ),
        (
            lambda d: (d / "config.json").write_text("[" * 200_000 + "]" * 200_000),
            r"config\.json .*nested too deeply",
        ),
        (
            lambda d: (d / "processor_config.json").write_text("[" * 200_000 + "]" * 200_000),
            r"processor_config\.json .*nested too deeply",
        ),
        (
            lambda d: _edit_json(d / "config.json", num_box_queries=10**9),
            r"config\.json: Validation error for field 'num_box_queries': ValueError: must be in \[1, 1024\]",
        ),
        (lambda d: (d / "processor_config.json").unlink(), r"processor_config\.json not found"),
    ],
    ids=[
        "truncated-weights",
        "bert",
        "deep-config",
        "deep-processor-config",
        "huge-num-box-queries",
        "no-processor",
    ],
)
def test_broken_folders_give_one_error_naming_the_file(hub_folder, tmp_path, change, message):
    folder = _variant(hub_folder, tmp_path, change)
    for load in (medrg.load_pipeline, medrg.load_medrg):
        started = time.perf_counter()
        with pytest.raises(ModelLoadError, match=message):
            load(str(folder))
        assert time.perf_counter() - started < 5  # nothing large allocated


def test_medrg_ground_with_a_deep_processor_config_is_one_line(hub_folder, tmp_path):
    from medrg.cli import main

    folder = _variant(
        hub_folder,
        tmp_path,
        lambda d: (d / "processor_config.json").write_text("[" * 200_000 + "]" * 200_000),
    )
    with pytest.raises(SystemExit) as error:
        main(
            [
                "ground",
                "--image",
                str(REPO_ROOT / "docs" / "example_cxr.png"),
                "--report",
                REPORT,
                "--model",
                str(folder),
            ]
        )
    assert str(error.value).startswith("medrg ground: error: ") and "processor_config.json" in str(
        error.value
    )
    assert "\n" not in str(error.value)


def test_train_config_checkpoint_folders_are_named(hub_folder, tmp_path):
    from medrg.training.train import build_trainer

    trainer_checkpoint = _variant(hub_folder, tmp_path, lambda d: (d / "trainer_state.json").write_text("{}"))
    with pytest.raises(ValueError, match="is a Trainer training checkpoint .* --resume"):
        build_trainer({"model": {"source": "checkpoint", "checkpoint": str(trainer_checkpoint)}})
    broken = tmp_path / "broken"
    shutil.copytree(hub_folder, broken)
    (broken / "config.json").write_text('{"model_type": ')
    with pytest.raises(ValueError, match=rf"{re.escape(str(broken / 'config.json'))} is not valid JSON"):
        build_trainer({"model": {"source": "checkpoint", "checkpoint": str(broken)}})


# ------------------------------------------------------------------------------------- checkpoints
def test_resume_skips_a_truncated_checkpoint_and_repairs_a_truncated_export(tmp_path, caplog):
    from medrg.training.train import train

    config = tiny_train_config(
        tmp_path / "run",
        train_examples=8,
        training={"max_steps": 4, "save_strategy": "steps", "save_steps": 2, "logging_steps": 1},
        export={"evaluate_splits": []},
    )
    train(config)
    run = tmp_path / "run"
    _truncate(run / "checkpoint-4" / "model.safetensors")
    _truncate(run / "final" / "model.safetensors")
    config["training"]["resume_from_checkpoint"] = True
    with caplog.at_level(logging.WARNING, logger="medrg.training"):
        resumed = train(config)
    assert "export is broken" in caplog.text and "final/model.safetensors is truncated" in caplog.text
    assert "set aside the incomplete checkpoint checkpoint-4" in caplog.text
    assert "checkpoint-4/model.safetensors is" in caplog.text
    assert resumed["resumed_from"] == "checkpoint-2" and resumed["global_step"] == 4
    medrg.load_medrg(run / "final")  # the export is whole again


# ---------------------------------------------------------------------------------- argument types
@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"guided": "no"}, TypeError, "guided must be True or False, got str 'no'"),
        ({"return_status": "false"}, TypeError, "return_status must be True or False"),
        ({"batch_size": 0}, ValueError, "batch_size must be a positive integer, got 0"),
        ({"batch_size": 1.5}, TypeError, "batch_size must be a positive integer"),
    ],
)
def test_loose_argument_types_are_refused(tiny, options, error, message):
    from transformers import pipeline

    model, processor = tiny
    pipe = pipeline("report-grounding", model=model, processor=processor)
    with pytest.raises(error, match=message):
        pipe(xray_like(), report=REPORT, **options)


def test_batch_size_zero_at_construction_is_refused(tiny):
    from transformers import pipeline

    model, processor = tiny
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        pipeline("report-grounding", model=model, processor=processor, batch_size=0)


def test_image_inputs_that_hold_no_image_are_named(tiny, tmp_path):
    from transformers import pipeline

    model, processor = tiny
    pipe = pipeline("report-grounding", model=model, processor=processor)
    with pytest.raises(ValueError, match="meta device"):
        pipe(torch.empty(96, 80, device="meta"), report=REPORT)
    with pytest.raises(ValueError, match="meta device"):
        processor(images=[torch.empty(96, 80, device="meta")], text=[REPORT])
    with pytest.raises(ValueError, match=f"Image path {re.escape(str(tmp_path))} is a folder"):
        pipe(str(tmp_path), report=REPORT)
    fifo = tmp_path / "image.fifo"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="is not a regular file"):
        pipe(str(fifo), report=REPORT)


def test_synthcxr_negative_count_is_named():
    with pytest.raises(ValueError, match=r"examples_per_split\['train'\] must be an integer >= 0, got -1"):
        medrg.load_grounding_dataset("synthcxr", examples_per_split={"train": -1}, progress=False)


def test_demo_errors_never_show_the_uploaded_file_name(tiny, tmp_path):
    from medrg.demo import make_grounder

    ground = make_grounder(tiny)
    upload = tmp_path / "Doe_Jane_1970-01-01.png"
    upload.write_bytes(b"not an image")
    with pytest.raises(ValueError) as error:
        ground(str(upload), REPORT)
    assert "Doe_Jane" not in str(error.value) and str(tmp_path) not in str(error.value)
    assert "cannot be read as an image" in str(error.value)


# ------------------------------------------------------------------------------- CLI file handling
def test_report_file_handling(tmp_path, monkeypatch):
    import io

    from medrg.ground_cli import read_image, read_report

    with pytest.raises(ValueError, match="report file /dev/null is empty"):
        read_report(None, "/dev/null")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(REPORT.encode())))
    assert read_report(None, "-") == REPORT
    fifo = tmp_path / "report.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text(REPORT))
    writer.start()
    assert read_report(None, str(fifo)) == REPORT
    writer.join(5)
    with pytest.raises(ValueError, match=f"--report-file {re.escape(str(tmp_path))} is a folder"):
        read_report(None, str(tmp_path))
    with pytest.raises(ValueError, match="report file not found"):
        read_report(None, str(tmp_path / "none.txt"))
    broken = tmp_path / "broken.txt"
    broken.write_text(REPORT)
    real_open = open

    def failing_open(file, *args, **kwargs):
        if str(file) == str(broken):
            raise OSError(5, "Input/output error")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", failing_open)
    with pytest.raises(
        ValueError, match=f"report file {re.escape(str(broken))} cannot be read: Input/output error"
    ):
        read_report(None, str(broken))
    monkeypatch.setattr("builtins.open", real_open)
    with pytest.raises(ValueError, match="is not a regular file"):
        read_image(str(fifo))
    with pytest.raises(ValueError, match="is a folder"):
        read_image(str(tmp_path))


def test_report_file_dev_stdin_and_dash_read_a_pipe():
    import subprocess

    code = (
        "import sys; from medrg.ground_cli import read_report; print(read_report(None, sys.argv[1]), end='')"
    )
    for name in ("/dev/stdin", "-"):
        done = subprocess.run(
            [sys.executable, "-c", code, name], input=REPORT, capture_output=True, text=True, timeout=60
        )
        assert (done.returncode, done.stdout) == (0, REPORT), done.stderr


def test_report_file_from_standard_input_through_the_cli(monkeypatch, capsys):
    import io

    from medrg.cli import main

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"   \n")))
    with pytest.raises(SystemExit, match="report file standard input is empty"):
        main(["ground", "--image", str(REPO_ROOT / "docs" / "example_cxr.png"), "--report-file", "-"])
