"""Training configuration: nested dataclasses read from YAML, validated before anything is built.

Unknown keys and wrong types raise a `ValueError` that names the key (e.g. `training.learning_rate`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODEL_SOURCES = ("tiny", "backbones", "checkpoint")


@dataclass
class ModelSection:
    source: str = field(
        default="tiny", metadata={"help": "tiny (random, from scratch) | backbones | checkpoint"}
    )
    checkpoint: str | None = field(
        default=None, metadata={"help": "MedRG folder to continue from (source=checkpoint)"}
    )
    text_model: str | None = field(
        default=None, metadata={"help": "local causal-LM folder (source=backbones)"}
    )
    vision_model: str | None = field(
        default=None, metadata={"help": "local vision-model folder (source=backbones)"}
    )
    gguf_file: str | None = field(default=None, metadata={"help": "GGUF file inside text_model (optional)"})
    image_size: int = field(default=64, metadata={"help": "square model input side in pixels"})
    max_length: int = field(default=384, metadata={"help": "longest token sequence"})
    image_mean: list[float] | None = field(default=None, metadata={"help": "normalisation mean (backbones)"})
    image_std: list[float] | None = field(default=None, metadata={"help": "normalisation std (backbones)"})
    seed: int = field(default=0, metadata={"help": "seed of the random initialisation"})
    overrides: dict[str, Any] = field(default_factory=dict, metadata={"help": "MedRGConfig fields to set"})


@dataclass
class DataSource:
    name: str = field(default="synthcxr", metadata={"help": "a medrg.load_grounding_dataset name"})
    data_dir: str | None = field(default=None, metadata={"help": "local data folder (real sources)"})
    options: dict[str, Any] = field(default_factory=dict, metadata={"help": "builder keyword arguments"})
    repeat: int = field(default=1, metadata={"help": "repeat this source's train split (oversampling)"})


@dataclass
class DataSection:
    sources: list[DataSource] = field(default_factory=lambda: [DataSource()])
    train_split: str = "train"
    eval_split: str = "validation"
    max_eval_samples: int | None = field(default=200, metadata={"help": "validation rows used for metrics"})
    augmentation: dict[str, Any] | None = field(
        default=None, metadata={"help": "GroundingAugmentation fields (scale, translate, brightness, ...)"}
    )


@dataclass
class LoraSection:
    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: str = r".*language_model.*\.(q_proj|v_proj)"
    modules_to_save: list[str] = field(default_factory=lambda: ["multi_modal_projector", "box_decoder"])
    train_box_token: bool = field(
        default=True, metadata={"help": "train the <BOX> rows of embeddings + lm_head"}
    )


@dataclass
class TrainingSection:
    output_dir: str = "runs/medrg"
    max_steps: int = -1
    num_train_epochs: float = 1.0
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_scheduler_type: str = "cosine"
    max_grad_norm: float = 1.0
    logging_steps: int = 50
    eval_steps: int | None = None
    save_steps: int | None = None
    save_total_limit: int | None = 2
    bf16: bool = False
    activation_checkpointing: bool = False
    use_cpu: bool = False
    torch_threads: int | None = field(default=None, metadata={"help": "torch.set_num_threads (CPU)"})
    dataloader_num_workers: int = 0
    seed: int = 0
    data_seed: int | None = None
    resume_from_checkpoint: bool | str | None = None
    deepspeed: str | None = field(default=None, metadata={"help": "DeepSpeed JSON config (e.g. ZeRO-2)"})
    ddp_find_unused_parameters: bool | None = None
    trainer_args: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "any other TrainingArguments"}
    )


@dataclass
class ExportSection:
    dir: str | None = field(default=None, metadata={"help": "hub-ready folder (default: <output_dir>/final)"})
    card_text: str | None = None
    evaluate_splits: list[str] = field(default_factory=lambda: ["validation", "test"])
    max_eval_samples: int | None = 500


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    lora: LoraSection = field(default_factory=LoraSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    export: ExportSection = field(default_factory=ExportSection)

    def __post_init__(self):
        check_values(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        return _build(cls, data, "")

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config file not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the config must be a mapping of sections, got {type(data).__name__}")
        return cls.from_dict(data)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin is list:
        (item,) = typing.get_args(annotation) or (Any,)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if dataclasses.is_dataclass(annotation):
        return isinstance(value, (dict, annotation))
    return isinstance(value, annotation)


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _build(cls, data: Any, prefix: str):
    if isinstance(data, cls):
        return data
    where = prefix.rstrip(".") or "config"
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ValueError(
            f"unknown key {prefix}{unknown[0]!s} in the training config; expected one of {sorted(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        annotation = hints[name]
        key = f"{prefix}{name}"
        item_type = typing.get_args(annotation)[0] if typing.get_origin(annotation) is list else None
        if item_type is not None and dataclasses.is_dataclass(item_type):
            if not isinstance(value, list):
                raise ValueError(f"{key} must be a list, got {type(value).__name__}")
            kwargs[name] = [_build(item_type, v, f"{key}[{i}].") for i, v in enumerate(value)]
            continue
        if dataclasses.is_dataclass(annotation):
            kwargs[name] = _build(annotation, value, f"{key}.")
            continue
        if not _type_ok(value, annotation):
            raise ValueError(
                f"{key} must be of type {_type_name(annotation)}, got {value!r} ({type(value).__name__})"
            )
        if annotation is float or (
            typing.get_origin(annotation) in (typing.Union, types.UnionType)
            and float in typing.get_args(annotation)
            and isinstance(value, int)
            and not isinstance(value, bool)
            and int not in typing.get_args(annotation)
        ):
            value = float(value)
        kwargs[name] = value
    if cls is TrainConfig:
        return cls(**kwargs)
    return cls(**kwargs)


def check_values(config: TrainConfig) -> None:
    """Value checks across sections (after the type checks); raises ValueError naming the key."""
    m, t, lo, d = config.model, config.training, config.lora, config.data
    if m.source not in MODEL_SOURCES:
        raise ValueError(f"model.source must be one of {MODEL_SOURCES}, got {m.source!r}")
    if m.source == "checkpoint" and not m.checkpoint:
        raise ValueError("model.checkpoint is required when model.source is 'checkpoint'")
    if m.source == "backbones" and not (m.text_model and m.vision_model):
        raise ValueError(
            "model.text_model and model.vision_model are required when model.source is 'backbones'"
        )
    for key, value in (("model.image_size", m.image_size), ("model.max_length", m.max_length)):
        if value < 8:
            raise ValueError(f"{key} must be >= 8, got {value}")
    if not d.sources:
        raise ValueError("data.sources must name at least one dataset")
    for i, source in enumerate(d.sources):
        if source.repeat < 1:
            raise ValueError(f"data.sources[{i}].repeat must be >= 1, got {source.repeat}")
    positive = {
        "training.per_device_train_batch_size": t.per_device_train_batch_size,
        "training.per_device_eval_batch_size": t.per_device_eval_batch_size,
        "training.gradient_accumulation_steps": t.gradient_accumulation_steps,
        "training.logging_steps": t.logging_steps,
        "lora.r": lo.r,
        "lora.alpha": lo.alpha,
    }
    for key, value in positive.items():
        if value < 1:
            raise ValueError(f"{key} must be >= 1, got {value}")
    if not t.learning_rate > 0:
        raise ValueError(f"training.learning_rate must be > 0, got {t.learning_rate}")
    if t.max_steps == 0 or t.max_steps < -1:
        raise ValueError(f"training.max_steps must be -1 (use epochs) or >= 1, got {t.max_steps}")
    if not 0 <= lo.dropout < 1:
        raise ValueError(f"lora.dropout must be in [0, 1), got {lo.dropout}")
    if d.augmentation is not None:
        from .augment import GroundingAugmentation

        try:
            GroundingAugmentation(**d.augmentation)
        except TypeError as error:
            raise ValueError(f"data.augmentation: {error}") from None


def load_config(path_or_dict: str | Path | dict | TrainConfig) -> TrainConfig:
    """A `TrainConfig` from a YAML path, a dict or a config (returned as is)."""
    if isinstance(path_or_dict, TrainConfig):
        return path_or_dict
    if isinstance(path_or_dict, dict):
        return TrainConfig.from_dict(path_or_dict)
    return TrainConfig.from_yaml(path_or_dict)


__all__ = [
    "DataSection",
    "DataSource",
    "ExportSection",
    "LoraSection",
    "ModelSection",
    "TrainConfig",
    "TrainingSection",
    "load_config",
]
