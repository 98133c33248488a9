"""`MedRGTrainer`: `transformers.Trainer` that stops at the first non-finite loss or box, marks complete
checkpoints and turns SIGTERM into a checkpoint and a clean stop (`preemption.py`).

A diverged run (too high a learning rate, no gradient clipping) used to hang: NaN boxes make the Hungarian
matcher's costs NaN. Here the box decoder's output and every loss are checked for NaN/inf as they are computed,
and training stops with `NonFiniteLossError` naming the step and the loss parts, before any export.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback

from .checkpoints import mark_complete
from .preemption import PreemptionCallback
from .streaming import StreamPosition, is_streamed

LOSS_PARTS = {
    "lm_loss": "lm",
    "box_l1_loss": "box_l1",
    "box_giou_loss": "box_giou",
    "box_confidence_loss": "box_confidence",
}
ADVICE = (
    "lower training.learning_rate, keep training.max_grad_norm > 0 (gradient clipping) or add warmup_steps"
)


class NonFiniteLossError(ValueError):
    """Training produced NaN or inf (loss or predicted boxes); the message names the step and the loss parts."""


def format_loss_parts(parts: dict | None) -> str:
    """`lm=0.512, box_l1=nan, ...` from a mapping of loss-part name to a scalar tensor (or float)."""
    if not parts:
        return "none recorded"
    shown = []
    for name, short in LOSS_PARTS.items():
        value = parts.get(name)
        if value is not None:
            shown.append(f"{short}={float(value):.4g}")
    return ", ".join(shown) or "none recorded"


class CheckpointCompletionCallback(TrainerCallback):
    """After `Trainer` has written `checkpoint-N/` (all ranks done), write the completeness marker into it."""

    def on_save(self, args, state, control, **kwargs):
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()  # every rank has written its files (e.g. rng_state_{rank}.pth)
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if args.should_save and folder.is_dir():
            mark_complete(folder, state.global_step)


class MedRGTrainer(Trainer):
    """`Trainer` + a finiteness check of every loss and of the box decoder's boxes + checkpoint markers +
    preemption handling (`self.preemption.preempted_at_step` after a SIGTERM stop)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_callback(CheckpointCompletionCallback())
        self.preemption = PreemptionCallback()
        self.add_callback(self.preemption)
        self.stream: StreamPosition | None = None
        self._last_finite_parts: dict | None = None
        self._last_finite_step: int | None = None

    # -- streamed training data: this rank's share, endless, its position saved with every checkpoint ----------
    def get_train_dataloader(self):
        if not is_streamed(self.train_dataset):
            return super().get_train_dataloader()
        if self.stream is None:
            self.stream = StreamPosition(self.train_dataset, self.args.process_index, self.args.world_size)
        # not through `accelerator.prepare`: it would split the stream over the processes a second time
        return torch.utils.data.DataLoader(
            self.stream,
            batch_size=self._train_batch_size,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )

    def get_resumed_dataloader(self, dataloader, num_batches: int):
        if self.stream is not None:
            return dataloader  # positioned by `StreamPosition.restore`: no batch to read and drop
        return super().get_resumed_dataloader(dataloader, num_batches)

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        if self.stream is not None:
            self.stream.save(Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}")

    def _step_label(self) -> str:
        if self.model.training:
            return f"training stopped at step {self.state.global_step + 1}"
        return f"evaluation at step {self.state.global_step} stopped"

    def _last_parts(self) -> str:
        if self._last_finite_parts is None:
            return "no finite step before it"
        return f"last finite step {self._last_finite_step}: {format_loss_parts(self._last_finite_parts)}"

    def _check_boxes(self, module, inputs, output) -> None:
        boxes = output[0] if isinstance(output, (tuple, list)) else output
        if isinstance(boxes, torch.Tensor) and not bool(torch.isfinite(boxes).all()):
            raise NonFiniteLossError(
                f"{self._step_label()}: the box decoder predicted non-finite boxes (NaN/inf), the weights or "
                f"activations diverged; stopped before the loss ({self._last_parts()}). {ADVICE}"
            )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(
            model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        parts = {name: outputs[name].detach() for name in LOSS_PARTS if outputs.get(name) is not None}
        if not bool(torch.isfinite(loss.detach()).all()):
            raise NonFiniteLossError(
                f"{self._step_label()}: non-finite loss {float(loss.detach().float().mean()):.4g} "
                f"({format_loss_parts(parts)}; {self._last_parts()}). {ADVICE}"
            )
        if self.model.training:
            self._last_finite_parts, self._last_finite_step = parts, self.state.global_step + 1
        return (loss, outputs) if return_outputs else loss

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        """`Trainer.train` with the box-decoder check hooked in for its duration (and, for streamed data, the
        stream position of `resume_from_checkpoint` restored)."""
        if is_streamed(self.train_dataset) and isinstance(resume_from_checkpoint, (str, Path)):
            if self.stream is None:
                self.stream = StreamPosition(
                    self.train_dataset, self.args.process_index, self.args.world_size
                )
            self.stream.restore(resume_from_checkpoint)
        decoders = [m for name, m in self.model.named_modules() if name.rsplit(".", 1)[-1] == "box_decoder"]
        hooks = [m.register_forward_hook(self._check_boxes) for m in decoders]
        try:
            return super().train(resume_from_checkpoint, *args, **kwargs)
        finally:
            for hook in hooks:
                hook.remove()
            self.preemption.restore_handlers()  # `on_train_end` does not run when a step raised


__all__ = ["CheckpointCompletionCallback", "MedRGTrainer", "NonFiniteLossError", "format_loss_parts"]
