"""Grounding evaluation during training: metrics by generation (through `medrg.evaluation.predict_groundings`,
the package's one prediction path) and a Trainer callback."""

from __future__ import annotations

import math

from transformers import TrainerCallback


def grounding_metrics(
    model, processor, dataset, batch_size: int = 16, max_samples: int | None = None
) -> dict:
    """accuracy@t / mean_iou / ... of `model` on `dataset` rows (the grounding schema), by generation."""
    from medrg.evaluation import compute_grounding_metrics, predict_groundings

    count = len(dataset) if max_samples is None else min(len(dataset), max_samples)
    rows = [dataset[i] for i in range(count)]
    predictions = predict_groundings(model, processor, rows, batch_size=batch_size)
    metrics = compute_grounding_metrics(predictions, [r["findings"] for r in rows])
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) or v is None}


class GroundingEvalCallback(TrainerCallback):
    """Runs grounding metrics on a validation split at every evaluation and hands them to the Trainer's log, so
    `metric_for_best_model="eval_mean_iou"` keeps the best checkpoint by mIoU.

    `Trainer.evaluate` computes the teacher-forced loss; this callback adds `eval_accuracy@0.5`, `eval_mean_iou`,
    ... to the same metrics dict (before best-checkpoint selection, which reads it after `on_evaluate`).
    """

    def __init__(self, processor, dataset, batch_size: int = 16, max_samples: int | None = None):
        self.processor = processor
        self.dataset = dataset
        self.batch_size = batch_size
        self.max_samples = max_samples
        self.history: list[dict] = []

    def on_evaluate(self, args, state, control, model=None, metrics=None, **kwargs):
        if model is None or metrics is None:
            return
        base = getattr(model, "module", model)
        result = grounding_metrics(base, self.processor, self.dataset, self.batch_size, self.max_samples)
        for key in ("accuracy@0.1", "accuracy@0.3", "accuracy@0.5", "mean_iou", "phrase_token_f1"):
            value = result.get(key)
            metrics[f"eval_{key}"] = float("nan") if value is None else float(value)
        # Trainer logged the evaluation before this hook ran: add the grounding metrics to that log entry too
        last = state.log_history[-1] if state.log_history else None
        if last is not None and last.get("step") == state.global_step and "eval_loss" in last:
            last.update({k: v for k, v in metrics.items() if k.startswith("eval_") and k not in last})
        self.history.append(
            {"step": state.global_step, **{k: metrics[k] for k in metrics if k.startswith("eval_")}}
        )
        if state.is_world_process_zero:
            shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float) and not math.isnan(v)}
            print(f"[step {state.global_step}] validation {shown}", flush=True)


__all__ = ["GroundingEvalCallback", "grounding_metrics"]
