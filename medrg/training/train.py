"""`train(config) -> dict`: build MedRG, (optionally) wrap the LM with LoRA, train with `transformers.Trainer`,
keep the best checkpoint by validation mIoU and save a hub-ready folder with its measured metrics."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import torch

from .config import DataSection, LoraSection, ModelSection, TrainConfig, TrainingSection, load_config

LABEL_NAMES = ["labels", "target_boxes", "target_boxes_mask"]


# ------------------------------------------------------------------------------------------------
# model
# ------------------------------------------------------------------------------------------------
def check_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint's config.json and refuse anything that is not a MedRG (before any training)."""
    folder = Path(path)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ValueError(
            f"model.checkpoint {str(folder)!r} has no config.json (expected a saved MedRG folder)"
        )
    config = json.loads(config_file.read_text())
    model_type = config.get("model_type")
    if model_type != "medrg":
        raise ValueError(
            f"model.checkpoint {str(folder)!r} is a {model_type!r} model, not a MedRG (model_type 'medrg'); "
            "to start from a pretrained LM and vision model use model.source: backbones"
        )
    return config


def build_model(section: ModelSection):
    """(model, processor) from the model section: tiny from scratch, from local backbones, or a MedRG checkpoint."""
    import medrg

    if section.source == "tiny":
        return medrg.build_tiny_medrg(
            seed=section.seed,
            image_size=section.image_size,
            max_length=section.max_length,
            **section.overrides,
        )
    if section.source == "backbones":
        torch.manual_seed(section.seed)
        return medrg.build_medrg_from_backbones(
            section.text_model,
            section.vision_model,
            image_size=section.image_size,
            gguf_file=section.gguf_file,
            image_mean=section.image_mean,
            image_std=section.image_std,
            max_length=section.max_length,
            **section.overrides,
        )
    check_checkpoint(section.checkpoint)
    model = medrg.MedRGForReportGrounding.from_pretrained(section.checkpoint)
    processor = medrg.MedRGProcessor.from_pretrained(section.checkpoint)
    for name, value in section.overrides.items():
        if not hasattr(model.config, name):
            raise ValueError(f"model.overrides.{name} is not a MedRGConfig field")
        setattr(model.config, name, value)
    return model, processor


def apply_lora(model, section: LoraSection, box_token_id: int):
    """Wrap `model` with LoRA on the LM projections; heads in `modules_to_save`; `<BOX>` rows trainable."""
    import warnings

    from peft import LoraConfig, get_peft_model

    token_indices = None
    if section.train_box_token:
        # only the <BOX> rows of the input embeddings and of the (untied) output head are trained
        token_indices = {"embed_tokens": [box_token_id]}
        if not getattr(model.config.text_config, "tie_word_embeddings", False):
            token_indices["lm_head"] = [box_token_id]
    lora_config = LoraConfig(
        r=section.r,
        lora_alpha=section.alpha,
        lora_dropout=section.dropout,
        target_modules=section.target_modules,
        modules_to_save=list(section.modules_to_save),
        trainable_token_indices=token_indices,
    )
    with warnings.catch_warnings():
        # peft 0.21 reads the deprecated `is_gradient_checkpointing` of transformers 5
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, lora_config)


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------
def build_datasets(section: DataSection) -> tuple:
    """(train dataset, eval dataset or None, {split: dataset} of every source, concatenated)."""
    import datasets

    import medrg

    from .collator import check_dataset_columns

    per_split: dict[str, list] = {}
    train_parts = []
    for i, source in enumerate(section.sources):
        built = medrg.load_grounding_dataset(source.name, data_dir=source.data_dir, **source.options)
        if section.train_split not in built:
            raise ValueError(
                f"data.sources[{i}] ({source.name}) has no split {section.train_split!r}; it has {list(built)}"
            )
        for split, dataset in built.items():
            check_dataset_columns(dataset, f"data.sources[{i}] ({source.name}) split {split!r}")
            keep = [
                c for c in dataset.column_names if c in ("image", "report", "findings", "image_id", "source")
            ]
            per_split.setdefault(split, []).append(dataset.select_columns(keep))
        train_parts.extend([per_split[section.train_split][-1]] * source.repeat)
    splits = {
        split: parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
        for split, parts in per_split.items()
    }
    train = train_parts[0] if len(train_parts) == 1 else datasets.concatenate_datasets(train_parts)
    evaluation = splits.get(section.eval_split)
    return train, evaluation, splits


# ------------------------------------------------------------------------------------------------
# trainer
# ------------------------------------------------------------------------------------------------
def training_arguments(section: TrainingSection, has_eval: bool):
    """TrainingArguments for MedRG (remove_unused_columns=False, all label names, best model by mIoU)."""
    from transformers import TrainingArguments

    kwargs = dict(
        output_dir=section.output_dir,
        max_steps=section.max_steps,
        num_train_epochs=section.num_train_epochs,
        per_device_train_batch_size=section.per_device_train_batch_size,
        per_device_eval_batch_size=section.per_device_eval_batch_size,
        gradient_accumulation_steps=section.gradient_accumulation_steps,
        learning_rate=section.learning_rate,
        weight_decay=section.weight_decay,
        warmup_steps=section.warmup_steps,
        lr_scheduler_type=section.lr_scheduler_type,
        max_grad_norm=section.max_grad_norm,
        logging_steps=section.logging_steps,
        save_total_limit=section.save_total_limit,
        bf16=section.bf16,
        activation_checkpointing=section.activation_checkpointing,
        use_cpu=section.use_cpu,
        dataloader_num_workers=section.dataloader_num_workers,
        seed=section.seed,
        data_seed=section.data_seed,
        deepspeed=section.deepspeed,
        ddp_find_unused_parameters=section.ddp_find_unused_parameters,
        remove_unused_columns=False,
        label_names=list(LABEL_NAMES),
        report_to="none",
        disable_tqdm=not os.isatty(2),
    )
    if section.save_steps is None:
        kwargs["save_strategy"] = "no"
    else:
        kwargs.update(save_strategy="steps", save_steps=section.save_steps)
    if has_eval and section.eval_steps:
        kwargs.update(eval_strategy="steps", eval_steps=section.eval_steps)
        if section.save_steps is not None:
            kwargs.update(
                load_best_model_at_end=True, metric_for_best_model="eval_mean_iou", greater_is_better=True
            )
    overlap = sorted(set(section.trainer_args) & set(kwargs))
    if overlap:
        raise ValueError(f"training.trainer_args.{overlap[0]} is set by the training section; set it there")
    kwargs.update(section.trainer_args)
    try:
        return TrainingArguments(**kwargs)
    except TypeError as error:
        raise ValueError(f"training.trainer_args: {error}") from None


def weights_digest(model, parameters_only: bool = False) -> str:
    """SHA-256 of every parameter and buffer (name, dtype, bytes): equal digests = identical weights.

    `parameters_only` leaves buffers out (under DDP each rank updates BatchNorm running statistics with its own
    last batch; rank 0's are the ones saved)."""
    model = getattr(model, "module", model)
    tensors = dict(model.named_parameters()) if parameters_only else model.state_dict()
    digest = hashlib.sha256()
    for name, tensor in sorted(tensors.items()):
        digest.update(name.encode())
        data = tensor.detach().to("cpu").contiguous()
        digest.update(str(data.dtype).encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def build_trainer(config: TrainConfig, extra_callbacks: list | None = None):
    """Everything before `trainer.train()`: validated config -> (trainer, processor, splits). All input
    errors (config, dataset columns, checkpoint architecture) surface here, before any training step."""
    from transformers import Trainer

    from .callbacks import GroundingEvalCallback
    from .collator import MedRGDataCollator

    config = load_config(config)
    t = config.training
    if t.torch_threads:
        torch.set_num_threads(t.torch_threads)
    if config.model.source == "checkpoint":
        check_checkpoint(config.model.checkpoint)
    train_dataset, eval_dataset, splits = build_datasets(config.data)
    if eval_dataset is not None and config.data.max_eval_samples is not None:
        eval_dataset = eval_dataset.select(range(min(len(eval_dataset), config.data.max_eval_samples)))
    args = training_arguments(t, has_eval=eval_dataset is not None)
    model, processor = build_model(config.model)
    if config.lora.enabled:
        model = apply_lora(model, config.lora, processor.box_token_id)
    callbacks = list(extra_callbacks or [])
    if eval_dataset is not None and t.eval_steps:
        callbacks.append(
            GroundingEvalCallback(processor, eval_dataset, batch_size=t.per_device_eval_batch_size)
        )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset if t.eval_steps else None,
        data_collator=MedRGDataCollator(processor, augmentation=config.data.augmentation, seed=t.seed),
        callbacks=callbacks,
    )
    return trainer, processor, splits


def train(config: TrainConfig | dict | str, extra_callbacks: list | None = None) -> dict:
    """Train MedRG as configured; returns a summary (train metrics, best checkpoint, exported folder, metrics per
    split, weights digest, seconds). See `docs/training.md`."""
    from .callbacks import grounding_metrics
    from .export import merge_adapters, save_hub_folder

    config = load_config(config)
    trainer, processor, splits = build_trainer(config, extra_callbacks)
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=config.training.resume_from_checkpoint or None)
    seconds = time.perf_counter() - started
    model = getattr(trainer.model, "module", trainer.model)
    summary = {
        "train_metrics": output.metrics,
        "train_seconds": seconds,
        "global_step": trainer.state.global_step,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_metric": trainer.state.best_metric,
        "weights_sha256": weights_digest(model),
        "parameters_sha256": weights_digest(model, parameters_only=True),
        "log_history": trainer.state.log_history,
    }
    if not trainer.is_world_process_zero():
        return summary
    merged = merge_adapters(model)
    metrics = {}
    for split in config.export.evaluate_splits:
        if split in splits:
            metrics[split] = grounding_metrics(
                merged,
                processor,
                splits[split],
                batch_size=config.training.per_device_eval_batch_size,
                max_samples=config.export.max_eval_samples,
            )
    export_dir = config.export.dir or str(Path(config.training.output_dir) / "final")
    save_hub_folder(merged, processor, export_dir, card_text=config.export.card_text, metrics=metrics)
    summary.update(export_dir=export_dir, metrics=metrics)
    (Path(config.training.output_dir) / "train_summary.json").write_text(
        json.dumps({k: v for k, v in summary.items() if k != "log_history"}, indent=2, default=str) + "\n"
    )
    return summary


__all__ = [
    "LABEL_NAMES",
    "apply_lora",
    "build_datasets",
    "build_model",
    "build_trainer",
    "check_checkpoint",
    "train",
    "training_arguments",
    "weights_digest",
]
