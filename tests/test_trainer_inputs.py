"""Inputs of `medrg train`: hostile or faulty configs and runs fail at once with one line naming the file and
the key, and a diverging run stops with the step and the loss parts instead of hanging. Runs that could hang are
under ``time_limit``, so a hang fails the test instead of blocking CI.

Resume from the last *complete* checkpoint and the no-op resume of a finished run are in test_train_resume.py."""

from __future__ import annotations

import re

import pytest
from conftest import time_limit

from medrg.cli import main

BASE = """\
data:
  sources:
    - name: synthcxr
      options: {examples_per_split: {train: 8, validation: 4}, image_size: 64, progress: false}
  eval_split: validation
training:
  output_dir: OUT
  use_cpu: true
  max_steps: 2
  per_device_train_batch_size: 4
  logging_steps: 1
  torch_threads: 1
"""


def write_config(tmp_path, text: str | None = None, replace: tuple[str, str] | None = None):
    out = tmp_path / "run"
    text = (BASE if text is None else text).replace("OUT", str(out))
    if replace is not None:
        assert replace[0] in text
        text = text.replace(*replace)
    path = tmp_path / "config.yaml"
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path, out


def run_cli(path, *extra: str) -> str:
    """`medrg train --config path ...`; returns the one-line error (SystemExit) or '' on success."""
    try:
        main(["train", "--config", str(path), *extra])
    except SystemExit as error:
        return str(error)
    return ""


# (case, YAML text (None: BASE), (old, new) text replacement, extra CLI arguments, expected error regex).
# Every error must be one line naming the config file and the key.
CONFIG_CASES = [
    # configs that reach a NaN loss
    ("lr .inf", None, ("max_steps: 2", "max_steps: 2\n  learning_rate: .inf"), (),
     r"training\.learning_rate must be a finite number > 0, got inf"),
    # configs that would train nothing, or wrongly, and exit 0
    ("negative epochs", None, ("max_steps: 2", "max_steps: -1\n  num_train_epochs: -1"), (),
     r"training\.num_train_epochs must be a finite number > 0, got -1\.0"),
    ("YAML syntax error", "training:\n  max_steps: [1, 2\n", None, (), r"config\.yaml: invalid YAML \(line 3, column 1\)"),
    ("top-level list", "- training\n- model\n", None, (), r"config\.yaml: the config must be a mapping .* got a list"),
    ("empty file", "", None, (), r"config\.yaml: the config file is empty"),
    ("only a comment", "# nothing yet\n", None, (), r"config\.yaml: the config file is empty"),
    # what a demanding user tries next
    ("key typo", None, ("max_steps: 2", "max_steps: 2\n  learnig_rate: 1e-3"), (),
     r"unknown key training\.learnig_rate in the training config \(did you mean 'learning_rate'\?\)"),
    ("trainer_args section", None, ("max_steps: 2", "max_steps: 2\n  trainer_args: {seed: 1}"), (),
     r"unknown key training\.trainer_args .*set TrainingArguments fields directly"),
    ("repeat 0", None, ("progress: false}", "progress: false}\n      repeat: 0"), (),
     r"data\.sources\[0\]\.repeat must be an integer >= 1, got 0"),
    ("unknown source key", None, ("progress: false}", "progress: false}\n      dir: x"), (),
     r"unknown key data\.sources\[0\]\.dir"),
    ("unknown dataset name", None, ("name: synthcxr", "name: synthcrx"), ("--dry-run",),
     r"data\.sources\[0\] \(synthcrx\): unknown dataset 'synthcrx'"),
    ("unknown dataset option", None, ("progress: false}", "progress: false, colour: red}"), ("--dry-run",),
     r"data\.sources\[0\] \(synthcxr\)\.options: .*colour"),
    ("eval_split typo", None, ("eval_split: validation", "eval_split: valdation"), ("--dry-run",),
     r"data\.eval_split 'valdation' is not a split of the sources; they have \['train', 'validation'\]"),
    ("train_split typo", None, ("eval_split: validation", "eval_split: validation\n  train_split: trian"),
     ("--dry-run",), r"data\.sources\[0\] \(synthcxr\) has no split 'trian' \(data\.train_split\)"),
    ("export split typo", None, None, ("--set", "export.evaluate_splits=[tset]", "--dry-run"),
     r"export\.evaluate_splits names \['tset'\], not splits of the sources"),
    ("eval without a split", None, ("eval_split: validation", "eval_split: null"),
     ("--set", "training.eval_strategy=steps"), r"training\.eval_strategy is 'steps' but data\.eval_split is not set"),
    ("resume, no checkpoint at all", None, None, ("--resume", "--dry-run"),
     r"training\.resume_from_checkpoint: no complete checkpoint-N folder in '.*run' to resume from"),
    ("resume from a missing folder", None, None, ("--set", "training.resume_from_checkpoint=/nonexistent/ckpt", "--dry-run"),
     r"training\.resume_from_checkpoint '/nonexistent/ckpt' is not a complete MedRG checkpoint"),
]  # fmt: skip
# case -> (the one `--set` override of BASE, expected error regex): the same checks as CONFIG_CASES.
SET_CASES = {
    # configs that reach a NaN loss
    "lr .nan": ("training.learning_rate=.nan", r"training\.learning_rate must be a finite number > 0, got nan"),
    "max_grad_norm -1": ("training.max_grad_norm=-1", r"training\.max_grad_norm must be a finite number >= 0 \(0 or null: no gradient clipping\)"),
    "max_grad_norm .inf": ("training.max_grad_norm=.inf", r"training\.max_grad_norm must be a finite number >= 0"),
    # configs that would train nothing, or wrongly, and exit 0
    "max_steps < -1": ("training.max_steps=-5", r"training\.max_steps must be -1 \(use epochs\) or >= 1, got -5"),
    "lr 0": ("training.learning_rate=0", r"training\.learning_rate must be a finite number > 0"),
    "negative lr": ("training.learning_rate=-1e-3", r"training\.learning_rate must be a finite number > 0, got -0\.001"),
    "negative weight_decay": ("training.weight_decay=-0.01", r"training\.weight_decay must be a finite number >= 0, got -0\.01"),
    "typo in model.overrides": ("model.overrides={box_decoder_dimm: 64}", r"unknown key model\.overrides\.box_decoder_dimm: not a MedRGConfig field \(did you mean 'box_decoder_dim'\?\)"),
    # what a demanding user tries next
    "lora.alpha (peft names it lora_alpha)": ("lora.alpha=16", r"unknown key lora\.alpha .*lora\.lora_alpha"),
    "removed HF key": ("training.warmup_ratio=0.1", r"unknown key training\.warmup_ratio in the training config \(did you mean 'warmup_steps'\?\)"),
    "lr as words": ("training.learning_rate=fast", r"training\.learning_rate: invalid float value: 'fast'"),
    "float steps": ("training.max_steps=2.5", r"training\.max_steps: invalid int value: '2\.5'"),
    "batch size 0": ("training.per_device_train_batch_size=0", r"training\.per_device_train_batch_size must be an integer >= 1, got 0"),
    "accumulation 0": ("training.gradient_accumulation_steps=0", r"training\.gradient_accumulation_steps must be an integer >= 1, got 0"),
    "no sources": ("data.sources=[]", r"data\.sources must name at least one dataset"),
    "unknown scheduler": ("training.lr_scheduler_type=cosin", r"training\.lr_scheduler_type: invalid choice: 'cosin'"),
    "label_names changed": ("training.label_names=[labels]", r"training\.label_names must be \['labels', 'target_boxes', 'target_boxes_mask'\] for MedRG"),
    "lora rank 0": ("lora.r=0", r"lora\.r must be an integer >= 1, got 0"),
    "lora dropout 1": ("lora.lora_dropout=1", r"lora\.lora_dropout must be a number in \[0, 1\)"),
    "--set without =": ("training.max_steps", r"--set expects SECTION\.KEY=VALUE \(e\.g\. training\.max_steps=100\), got 'training\.max_steps'"),
    "--set without section": ("max_steps=3", r"--set expects SECTION\.KEY=VALUE"),
    "--set below a value": ("training.max_steps.x=3", r"--set training\.max_steps\.x: training\.max_steps is not a section"),
    "--set bad YAML": ("training.max_steps=[1", r"--set training\.max_steps: invalid YAML"),
    "threads 0": ("training.torch_threads=0", r"training\.torch_threads must be null or an integer >= 1, got 0"),
}  # fmt: skip


ALL_CONFIG_CASES = CONFIG_CASES + [
    (case, None, None, ("--set", assignment), expected) for case, (assignment, expected) in SET_CASES.items()
]


@pytest.mark.parametrize(
    ("text", "replace", "extra", "expected"),
    [case[1:] for case in ALL_CONFIG_CASES],
    ids=[case[0] for case in ALL_CONFIG_CASES],
)
def test_bad_config_fails_with_one_line_naming_file_and_key(tmp_path, text, replace, extra, expected):
    path, out = write_config(tmp_path, text, replace)
    with time_limit(120):
        message = run_cli(path, *extra)
    assert message.startswith(f"medrg train: {path}: "), message
    assert "\n" not in message and "Traceback" not in message
    assert re.search(expected, message), message
    assert not (out / "final").exists()


def test_output_dir_that_is_a_file(tmp_path):
    path, _ = write_config(tmp_path)
    (tmp_path / "taken").write_text("not a folder")
    message = run_cli(path, "--output-dir", str(tmp_path / "taken"))
    assert f"training.output_dir '{tmp_path / 'taken'}' exists and is not a folder" in message


def test_deepspeed_config_without_deepspeed_installed(tmp_path):
    import importlib.util

    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("deepspeed is installed here")
    path, _ = write_config(tmp_path)
    message = run_cli(path, "--set", "training.deepspeed=configs/deepspeed_zero2.json")
    assert message.startswith(f"medrg train: {path}: training: ") and "deepspeed" in message, message
    assert "\n" not in message


def test_missing_and_non_utf8_config_files(tmp_path):
    assert run_cli(tmp_path / "nope.yaml") == f"medrg train: {tmp_path / 'nope.yaml'}: config file not found"
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("training:\n  output_dir: r\xe9sultats\n".encode("latin-1"))
    assert "latin.yaml: not UTF-8 text" in run_cli(latin)


@pytest.mark.parametrize(
    ("assignment", "key", "expected"),
    [
        ("training.learning_rate=2e-3", "learning_rate", 2e-3),
        ("training.learning_rate='2e-3'", "learning_rate", 2e-3),
        (
            "training.max_grad_norm=0",
            "max_grad_norm",
            0.0,
        ),  # 0 = no gradient clipping (HF semantics), allowed
        ("training.bf16=no", "bf16", False),
    ],
    ids=["lr 2e-3", "lr quoted", "max_grad_norm 0", "bf16 no"],
)
def test_accepted_values_reach_training_arguments(tmp_path, assignment, key, expected):
    from medrg.training.config import load_config

    path, _ = write_config(tmp_path, replace=("max_steps: 2", "max_steps: 2\n  learning_rate: 5e-4"))
    assert load_config(path).training.learning_rate == 5e-4  # YAML 1.1 would read 5e-4 as a string
    value = getattr(load_config(path, [assignment]).training, key)
    assert value == expected and type(value) is type(expected)


# (case, --set overrides, expected error regex): legal configs whose training diverges. Training stops at once
# (instead of spinning in the box matcher on NaN costs or exporting an untrained model), names the step and the
# loss parts, and exports nothing.
DIVERGING_CASES = [
    ("lr 1e30 without clipping (a finite lr that makes the boxes non-finite)",
     ["training.learning_rate=1e30", "training.max_grad_norm=0", "training.max_steps=4"],
     r"training stopped at step 2: the box decoder predicted non-finite boxes .*last finite step 1: "
     r"lm=[\d.]+, box_l1=[\d.]+, box_giou=[\d.]+, box_confidence=[\d.]+\)"),
    ("a loss weight that overflows float32",
     ["model.overrides={lm_loss_weight: 1.0e39}"],
     r"training stopped at step 1: non-finite loss inf \(lm=[\d.]+, box_l1=[\d.]+, box_giou=[\d.]+, "
     r"box_confidence=[\d.]+; no finite step before it\)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "expected"), [c[1:] for c in DIVERGING_CASES], ids=[c[0] for c in DIVERGING_CASES]
)
def test_diverging_run_stops_with_step_and_loss_parts(tmp_path, overrides, expected):
    path, out = write_config(tmp_path)
    extra = [word for assignment in overrides for word in ("--set", assignment)]
    with time_limit(180):
        message = run_cli(path, *extra)
    assert re.search(expected, message), message
    assert "lower training.learning_rate" in message and "\n" not in message
    assert not (out / "final").exists() and not (out / "train_summary.json").exists()
