"""Training config validation and bad input: clear errors before any training starts."""

from __future__ import annotations

import json

import pytest

from medrg.training import TrainConfig, load_config
from medrg.training.cli import apply_overrides


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"training": {"learning_rat": 1e-3}}, r"unknown key training\.learning_rat"),
        ({"modle": {}}, r"unknown key modle"),
        ({"training": {"learning_rate": "fast"}}, r"training\.learning_rate must be of type float"),
        ({"training": {"max_steps": 1.5}}, r"training\.max_steps must be of type int"),
        ({"training": {"bf16": "yes"}}, r"training\.bf16 must be of type bool"),
        ({"model": {"image_size": True}}, r"model\.image_size must be of type int"),
        ({"data": {"sources": [{"name": "synthcxr", "dir": "x"}]}}, r"unknown key data\.sources\[0\]\.dir"),
        ({"data": {"sources": "synthcxr"}}, r"data\.sources must be a list"),
        ({"lora": {"r": 0}}, r"lora\.r must be >= 1"),
        ({"model": {"source": "huge"}}, r"model\.source must be one of"),
        ({"model": {"source": "checkpoint"}}, r"model\.checkpoint is required"),
        ({"data": {"augmentation": {"zoom": 0.1}}}, r"data\.augmentation"),
        ({"training": "fast"}, r"training must be a mapping"),
    ],
)
def test_bad_configs_name_the_key(data, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(data)


def test_yaml_round_trip_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  learning_rate: 1\n  max_steps: 5\n")
    config = load_config(path)
    assert config.training.learning_rate == 1.0 and isinstance(config.training.learning_rate, float)
    data = apply_overrides({}, ["training.max_steps=7", "lora.enabled=true"])
    assert TrainConfig.from_dict(data).training.max_steps == 7 and TrainConfig.from_dict(data).lora.enabled


def test_shipped_configs_are_valid():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "configs"
    names = sorted(folder.glob("*.yaml"))
    names = [n for n in names if n.name != "accelerate_ddp.yaml"]
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


def test_unknown_trainer_args_are_a_value_error(tmp_path):
    from medrg.training.train import training_arguments

    config = TrainConfig.from_dict(
        {"training": {"output_dir": str(tmp_path), "trainer_args": {"warp_speed": 9}}}
    )
    with pytest.raises(ValueError, match="warp_speed"):
        training_arguments(config.training, has_eval=False)
    config = TrainConfig.from_dict({"training": {"trainer_args": {"learning_rate": 9.0}}})
    with pytest.raises(ValueError, match=r"trainer_args\.learning_rate is set by the training section"):
        training_arguments(config.training, has_eval=False)


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
