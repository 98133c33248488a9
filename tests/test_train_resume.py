"""Resume: a run killed mid-way and restarted with resume ends with the same weights and metrics; only complete
checkpoints are resumed from; resuming a finished run changes nothing."""

from __future__ import annotations

import hashlib
import logging

import pytest
from conftest import tiny_train_config
from transformers import TrainerCallback

from medrg.training.checkpoints import COMPLETE_MARKER
from medrg.training.train import train


class Killed(RuntimeError):
    pass


class KillAfterStep(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Killed(f"killed after step {self.step}")


class KillWhileSaving(TrainerCallback):
    """Dies in `on_save` of `step`: after Trainer wrote checkpoint-`step`, before MedRG marked it complete (the
    state a SIGKILL during the save leaves, as far as resume can tell)."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Killed(f"killed while saving checkpoint-{self.step}")


def tiny_run_config(output_dir, **training) -> dict:
    config = tiny_train_config(
        output_dir,
        train_examples=48,
        validation_examples=8,
        training={
            "max_steps": 8,
            "warmup_steps": 2,
            "save_strategy": "steps",
            "save_steps": 3,
            "save_total_limit": 5,
            **training,
        },
        export={"evaluate_splits": ["validation"]},
    )
    config["data"]["augmentation"] = None
    return config


def test_killed_run_resumes_to_the_same_weights(tmp_path, caplog):
    full = train(tiny_run_config(tmp_path / "full"))

    killed = tmp_path / "killed"
    with pytest.raises(Killed):
        train(tiny_run_config(killed), extra_callbacks=[KillAfterStep(5)])
    assert sorted(p.name for p in killed.glob("checkpoint-*")) == ["checkpoint-3"]
    assert (killed / "checkpoint-3" / COMPLETE_MARKER).is_file()
    assert not (killed / "final").exists()  # a killed run exports nothing
    # what a kill during a save leaves: a newer checkpoint folder with only some files
    (killed / "checkpoint-99").mkdir()
    (killed / "checkpoint-99" / "config.json").write_text("{}")
    with caplog.at_level(logging.WARNING, logger="medrg.training"):
        resumed = train(tiny_run_config(killed, resume_from_checkpoint=True))
    assert resumed["resumed_from"] == "checkpoint-3"
    assert "resuming from checkpoint-3, the last complete checkpoint" in caplog.text
    assert "set aside the incomplete checkpoint checkpoint-99 as incomplete-checkpoint-99" in caplog.text
    assert (killed / "incomplete-checkpoint-99" / "config.json").is_file()

    assert resumed["global_step"] == full["global_step"] == 8
    assert resumed["weights_sha256"] == full["weights_sha256"]
    assert resumed["metrics"] == full["metrics"]

    # the loss curve after the checkpoint is the same too (same data order, same optimizer/scheduler state);
    # the first logging window after the checkpoint (step 4) averages fewer steps on resume, so compare after it
    def losses(summary):
        return {h["step"]: h["loss"] for h in summary["log_history"] if "loss" in h and h["step"] > 4}

    assert losses(resumed) == losses(full)

    # resuming the finished run is a no-op: no training step, final/ not rewritten
    weights = killed / "final" / "model.safetensors"
    before = (hashlib.sha256(weights.read_bytes()).hexdigest(), weights.stat().st_mtime_ns)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medrg.training"):
        again = train(tiny_run_config(killed, resume_from_checkpoint=True))
    assert again["already_finished"] and again["global_step"] == 8
    assert again["weights_sha256"] == full["weights_sha256"]
    assert "nothing to resume: the run in" in caplog.text and "finished at step 8" in caplog.text
    assert (hashlib.sha256(weights.read_bytes()).hexdigest(), weights.stat().st_mtime_ns) == before


def test_run_killed_while_saving_resumes_from_the_previous_complete_checkpoint(tmp_path):
    full = train(tiny_run_config(tmp_path / "full"))
    killed = tmp_path / "killed"
    with pytest.raises(Killed, match="while saving checkpoint-6"):
        train(tiny_run_config(killed), extra_callbacks=[KillWhileSaving(6)])
    assert (killed / "checkpoint-6" / "model.safetensors").is_file()
    assert not (killed / "checkpoint-6" / COMPLETE_MARKER).exists()
    resumed = train(tiny_run_config(killed, resume_from_checkpoint=True))
    assert resumed["resumed_from"] == "checkpoint-3"
    assert (killed / "incomplete-checkpoint-6").is_dir()
    assert (
        killed / "checkpoint-6" / COMPLETE_MARKER
    ).is_file()  # written again, completely, by the resumed run
    assert resumed["weights_sha256"] == full["weights_sha256"]
