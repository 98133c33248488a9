"""Training config validation and bad input: clear errors before any training starts."""

from __future__ import annotations

import json

import pytest

from medrg.training import TrainConfig, load_config
from medrg.training.cli import apply_overrides


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"training": {"learning_rat": 1e-3}},
            r"unknown key training\.learning_rat .*did you mean 'learning_rate'",
        ),
        ({"modle": {}}, r"unknown key modle"),
        ({"training": {"learning_rate": "fast"}}, r"training\.learning_rate: invalid float value: 'fast'"),
        ({"training": {"max_steps": 1.5}}, r"training\.max_steps: invalid int value: '1\.5'"),
        ({"training": {"bf16": "maybe"}}, r"training\.bf16: Truthy value expected"),
        (
            {"training": {"lr_scheduler_type": "cosin"}},
            r"training\.lr_scheduler_type: invalid choice: 'cosin'",
        ),
        ({"model": {"image_size": True}}, r"model\.image_size: invalid int value: 'True'"),
        ({"data": {"sources": [{"name": "synthcxr", "dir": "x"}]}}, r"unknown key data\.sources\[0\]\.dir"),
        ({"data": {"sources": "synthcxr"}}, r"data\.sources must be a list"),
        ({"lora": {"r": 0}}, r"lora\.r must be an integer >= 1"),
        ({"lora": {"alpha": 16}}, r"unknown key lora\.alpha .*lora\.lora_alpha"),
        ({"lora": {"lora_dropout": 1.0}}, r"lora\.lora_dropout must be a number in \[0, 1\)"),
        (
            {"lora": {"trainable_token_indices": [3]}},
            r"lora\.trainable_token_indices is set and lora\.train_box_token",
        ),
        ({"model": {"source": "huge"}}, r"model\.source must be one of"),
        ({"model": {"source": "checkpoint"}}, r"model\.checkpoint is required"),
        ({"data": {"augmentation": {"zoom": 0.1}}}, r"data\.augmentation"),
        ({"training": "fast"}, r"training must be a mapping"),
        ({"training": {"trainer_args": {"ddp_backend": "gloo"}}}, r"unknown key training\.trainer_args"),
        (
            {"training": {"label_names": ["labels"]}},
            r"training\.label_names must be \['labels', 'target_boxes'",
        ),
    ],
)
def test_bad_configs_name_the_key(data, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(data)


def test_yaml_round_trip_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  learning_rate: 1\n  max_steps: 5\n  torch_threads: 2\n")
    config = load_config(path)
    assert config.training.learning_rate == 1.0 and isinstance(config.training.learning_rate, float)
    assert config.medrg_training.torch_threads == 2
    data = apply_overrides({}, ["training.max_steps=7", "lora.enabled=true"])
    assert TrainConfig.from_dict(data).training.max_steps == 7 and TrainConfig.from_dict(data).lora.enabled


def test_training_section_is_training_arguments_and_lora_is_peft(tmp_path):
    """`training:` builds `TrainingArguments` (any field, HF defaults), `lora:` builds peft's `LoraConfig`."""
    from peft import LoraConfig
    from transformers import TrainingArguments

    config = TrainConfig.from_dict(
        {
            "training": {"output_dir": str(tmp_path), "optim": "adamw_torch", "adam_beta2": "0.95"},
            "lora": {"enabled": True, "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]},
        }
    )
    assert isinstance(config.training, TrainingArguments)
    assert config.training.adam_beta2 == 0.95 and config.training.optim == "adamw_torch"
    assert config.training.learning_rate == TrainingArguments(output_dir=str(tmp_path)).learning_rate
    assert not config.training.remove_unused_columns
    assert config.training.label_names == ["labels", "target_boxes", "target_boxes_mask"]
    peft = config.lora.peft_config
    assert isinstance(peft, LoraConfig) and (peft.r, peft.lora_alpha, peft.target_modules) == (
        4,
        8,
        {"q_proj"},
    )
    assert peft.modules_to_save == ["multi_modal_projector", "box_decoder"]  # MedRG's default


@pytest.mark.parametrize(
    "yaml_text",
    [
        "training:\n  learning_rate: 5e-4\n",
        "training:\n  learning_rate: '5e-4'\n",
        "training:\n  learning_rate: 5.0e-4\n",
    ],
)
def test_yaml_numbers_in_exponent_form_are_numbers(tmp_path, yaml_text):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    assert load_config(path).training.learning_rate == 5e-4
    assert load_config(path, ["training.learning_rate=2e-3"]).training.learning_rate == 2e-3


def test_shipped_configs_are_valid():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "configs"
    names = sorted(folder.glob("*.yaml"))
    # accelerate launch configs are checked in test_train_sharded.py
    names = [n for n in names if not n.name.startswith("accelerate_")]
    assert names
    for path in names:
        load_config(path)


def test_dataset_without_schema_columns_fails_before_training(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    import medrg
    from medrg.training.train import build_trainer

    wrong = datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"image_path": ["a.png"], "text": ["r"]})}
    )
    monkeypatch.setattr(medrg, "load_grounding_dataset", lambda *a, **k: wrong, raising=False)
    config = {"training": {"output_dir": str(tmp_path / "run"), "max_steps": 1, "use_cpu": True}}
    with pytest.raises(
        ValueError,
        match=r"split 'train' lacks the grounding schema column\(s\) \['image', 'report', 'findings'\]",
    ):
        build_trainer(config)
    assert not (tmp_path / "run").exists()


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    from medrg.training.train import build_trainer

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    config = {"model": {"source": "checkpoint", "checkpoint": str(tmp_path)}, "training": {"use_cpu": True}}
    with pytest.raises(ValueError, match="is a 'bert' model, not a MedRG"):
        build_trainer(config)
    with pytest.raises(ValueError, match="has no config.json"):
        build_trainer({"model": {"source": "checkpoint", "checkpoint": str(tmp_path / "none")}})


def test_medrg_train_cli_reports_bad_config_and_dry_runs(tmp_path, capsys):
    from medrg.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  learning_rat: 0.1\n")
    with pytest.raises(SystemExit, match=r"unknown key training\.learning_rat"):
        main(["train", "--config", str(bad)])
    good = tmp_path / "good.yaml"
    good.write_text(
        "data:\n  sources:\n    - name: synthcxr\n      options: {examples_per_split: {train: 8}, "
        "image_size: 64, progress: false}\ntraining:\n  use_cpu: true\n"
    )
    assert main(["train", "--config", str(good), "--output-dir", str(tmp_path / "r"), "--dry-run"]) == 0
    assert "config OK; 8 training rows" in capsys.readouterr().out
    typo = tmp_path / "typo.yaml"
    typo.write_text(good.read_text().replace("data:\n", "data:\n  eval_split: valdation\n"))
    with pytest.raises(
        SystemExit, match=r"data\.eval_split 'valdation' is not a split of the sources; they have \['train'\]"
    ):
        main(["train", "--config", str(typo), "--output-dir", str(tmp_path / "r"), "--dry-run"])
    with pytest.raises(SystemExit, match=r"training\.learning_rate: invalid float value: 'fast'"):
        main(["train", "--config", str(good), "--set", "training.learning_rate=fast", "--dry-run"])
