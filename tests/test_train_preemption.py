"""Preemption: a SIGTERM during training writes a complete checkpoint and stops cleanly (`medrg train` exits 0),
and resuming continues with the same data order (for streamed data, from the saved stream position) to the same
per-step loss curve and weights as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from conftest import tiny_train_config
from transformers import TrainerCallback

from medrg.training.checkpoints import checkpoint_problem
from medrg.training.streaming import STREAM_STATE_FILE
from medrg.training.train import train


class SigtermAtStep(TrainerCallback):
    """Sends this process a real SIGTERM at the end of optimizer step `step` (as a scheduler would)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def run_config(output_dir, streaming: bool = False, max_steps: int = 8, train_examples: int = 40) -> dict:
    config = tiny_train_config(
        output_dir,
        train_examples=train_examples,
        validation_examples=4,
        training={"max_steps": max_steps, "logging_steps": 1, "save_strategy": "no", "warmup_steps": 2},
    )
    config["data"]["augmentation"] = None
    if streaming:
        config["data"]["sources"][0]["options"]["streaming"] = True
        config["data"]["shuffle_buffer_size"] = 16
    return config


def step_losses(summary: dict) -> dict[int, float]:
    return {h["step"]: h["loss"] for h in summary["log_history"] if "loss" in h}


def check_preempted_run_resumes_exactly(tmp_path, streaming: bool, stop_at: int, rows: int) -> None:
    full = train(run_config(tmp_path / "full", streaming, train_examples=rows))
    killed = tmp_path / "killed"
    before_training = signal.getsignal(signal.SIGTERM)
    stopped = train(
        run_config(killed, streaming, train_examples=rows), extra_callbacks=[SigtermAtStep(stop_at)]
    )
    assert stopped["preempted"] is True and stopped["global_step"] == stop_at
    checkpoint = killed / f"checkpoint-{stop_at}"
    assert stopped["checkpoint"] == str(checkpoint)
    assert checkpoint_problem(checkpoint) is None  # marked complete, every file at its recorded size
    assert not (killed / "final").exists() and not (killed / "train_summary.json").exists()
    assert signal.getsignal(signal.SIGTERM) is before_training  # the handler is removed after training
    if streaming:
        # batches of 4 rows: the stream stopped 4 * stop_at rows in, counted in passes over its `rows` rows
        position = json.loads((checkpoint / STREAM_STATE_FILE.format(rank=0)).read_text())
        passes, into = divmod(4 * stop_at, rows)
        assert position == {"pass": passes, "rows": into, "rank": 0, "world_size": 1}
    config = run_config(killed, streaming, train_examples=rows)
    config["training"]["resume_from_checkpoint"] = True
    resumed = train(config)
    assert resumed["resumed_from"] == f"checkpoint-{stop_at}" and resumed["global_step"] == 8
    before = step_losses(stopped)
    after = {step: loss for step, loss in step_losses(resumed).items() if step > stop_at}
    reference = step_losses(full)
    assert sorted(before) == list(range(1, stop_at + 1))
    assert sorted(after) == list(range(stop_at + 1, 9))
    # the interrupted run's losses up to the stop and the resumed run's after it are the uninterrupted curve,
    # exactly (same data order, optimizer, scheduler and RNG state; one thread, deterministic kernels)
    assert {**before, **after} == reference
    assert resumed["weights_sha256"] == full["weights_sha256"]


def test_sigterm_handler_is_restored_when_a_training_step_raises(tmp_path):
    class Boom(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            raise RuntimeError("a step failed")

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RuntimeError, match="a step failed"):
        train(run_config(tmp_path / "raised", max_steps=2), extra_callbacks=[Boom()])
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_checkpoints_and_resume_gives_the_same_loss_curve(tmp_path):
    check_preempted_run_resumes_exactly(tmp_path, streaming=False, stop_at=3, rows=40)


def test_streamed_run_preempted_in_its_second_pass_resumes_at_the_same_row(tmp_path):
    # 20 streamed rows, 5 steps per pass: step 6 stops 4 rows into the second (reshuffled) pass
    check_preempted_run_resumes_exactly(tmp_path, streaming=True, stop_at=6, rows=20)


def test_medrg_train_exits_0_on_sigterm_with_a_complete_checkpoint_and_resumes(tmp_path):
    """The command a scheduler stops: `python -m medrg.training` (= `medrg train`) gets a SIGTERM from outside while
    it trains, writes checkpoint-N, exits 0; `--resume` finishes the run and exports."""
    output_dir = tmp_path / "run"
    config = run_config(output_dir, max_steps=60)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    command = [sys.executable, "-m", "medrg.training", "--config", str(config_file)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.monotonic() + 180
    for line in process.stdout:  # Trainer prints one dict per logged step (logging_steps 1)
        lines.append(line)
        if "'loss'" in line:
            process.send_signal(signal.SIGTERM)
            break
        assert time.monotonic() < deadline, "".join(lines[-20:])
    output, _ = process.communicate(timeout=180)
    lines.append(output)
    assert process.returncode == 0, "".join(lines)[-3000:]
    stopped = [line for line in output.splitlines() if line.startswith("preempted at step ")]
    assert len(stopped) == 1, output[-3000:]
    step = int(stopped[0].split()[3].rstrip(":"))
    assert 1 <= step < 60
    assert checkpoint_problem(output_dir / f"checkpoint-{step}") is None
    assert not (output_dir / "final").exists()

    resumed = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout[resumed.stdout.index("{\n") :])
    assert summary["resumed_from"] == f"checkpoint-{step}" and summary["global_step"] == 60
    assert (output_dir / "final" / "model.safetensors").is_file()
