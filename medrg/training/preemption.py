"""Preemption-safe training: a termination signal (SIGTERM, what SLURM, Kubernetes and spot-instance reclaimers
send before they kill a job) ends the current optimizer step, writes a complete `checkpoint-N` and stops training
without exporting; `medrg train` then exits 0 and `--resume` continues from that checkpoint with the same data
order.

The signal handler only sets a flag (nothing else is safe inside a handler); the flag is read at the end of every
optimizer step and, in a multi-process run, combined over all ranks (one all-reduce of one number per step), so
every rank stops at the same step and takes part in the same save, whichever rank the signal reached.
"""

from __future__ import annotations

import logging
import signal
import threading

import torch
from transformers import TrainerCallback

logger = logging.getLogger("medrg.training")

PREEMPTION_SIGNALS = (signal.SIGTERM,)


class PreemptionCallback(TrainerCallback):
    """Turns a termination signal into "save a checkpoint at the end of this step, then stop".

    The handlers are installed when training begins and the previous ones restored when it ends. After a stop,
    `preempted_at_step` holds the step whose checkpoint was written (None when training was not preempted)."""

    def __init__(self, signals: tuple[int, ...] = PREEMPTION_SIGNALS):
        self.signals = tuple(signals)
        self.received: int | None = None
        self.preempted_at_step: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        self.received = signum

    def on_train_begin(self, args, state, control, **kwargs):
        self.received, self.preempted_at_step = None, None
        if threading.current_thread() is not threading.main_thread():
            logger.warning(
                "training runs outside the main thread: no preemption handling (signals reach only it)"
            )
            return
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore_handlers(self) -> None:
        """Put back the handlers that were installed before training (also after a training step raised)."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def on_train_end(self, args, state, control, **kwargs):
        self.restore_handlers()

    def _any_rank_received(self, device) -> bool:
        received = self.received is not None
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            flag = torch.tensor([1.0 if received else 0.0], device=device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            received = bool(flag.item() > 0)
        return received

    def on_step_end(self, args, state, control, **kwargs):
        if self.preempted_at_step is not None or not self._any_rank_received(args.device):
            return control
        self.preempted_at_step = state.global_step
        name = signal.Signals(self.received).name if self.received is not None else "a signal on another rank"
        logger.warning(
            "%s received: saving checkpoint-%d and stopping (continue with --resume)", name, state.global_step
        )
        control.should_save = True
        control.should_evaluate = False  # the grace period before a kill is short: save only
        control.should_training_stop = True
        return control


__all__ = ["PREEMPTION_SIGNALS", "PreemptionCallback"]
