"""Resume: a run killed mid-way and restarted with resume ends with the same weights and metrics."""

from __future__ import annotations

import pytest
from conftest import tiny_train_config
from transformers import TrainerCallback

from medrg.training.train import train


class Killed(RuntimeError):
    pass


class KillAfterStep(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Killed(f"killed after step {self.step}")


def tiny_run_config(output_dir, **training) -> dict:
    config = tiny_train_config(
        output_dir,
        train_examples=48,
        validation_examples=8,
        training={"max_steps": 8, "warmup_steps": 2, "save_steps": 3, "save_total_limit": 5, **training},
        export={"evaluate_splits": ["validation"]},
    )
    config["data"]["augmentation"] = None
    return config


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    full = train(tiny_run_config(tmp_path / "full"))

    with pytest.raises(Killed):
        train(tiny_run_config(tmp_path / "killed"), extra_callbacks=[KillAfterStep(5)])
    assert sorted(p.name for p in (tmp_path / "killed").glob("checkpoint-*")) == ["checkpoint-3"]
    resumed = train(tiny_run_config(tmp_path / "killed", resume_from_checkpoint=True))

    assert resumed["global_step"] == full["global_step"] == 8
    assert resumed["weights_sha256"] == full["weights_sha256"]
    assert resumed["metrics"] == full["metrics"]

    # the loss curve after the checkpoint is the same too (same data order, same optimizer/scheduler state);
    # the first logging window after the checkpoint (step 4) averages fewer steps on resume, so compare after it
    def losses(summary):
        return {h["step"]: h["loss"] for h in summary["log_history"] if "loss" in h and h["step"] > 4}

    assert losses(resumed) == losses(full)
