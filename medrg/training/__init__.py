"""Fine-tuning MedRG with `transformers.Trainer` (+ `peft`, `accelerate`/`torchrun`, DeepSpeed).

- `MedRGDataCollator(processor)`: dataset rows -> teacher-forced model inputs.
- `GroundingAugmentation`: box-consistent scale/translate, brightness/contrast, side-swapping flip.
- `TrainConfig` / `load_config`: the validated YAML config (`training:` is `TrainingArguments`, `lora:` is
  peft's `LoraConfig`); `train(config) -> dict`.
- `MedRGTrainer`: `Trainer` that stops at the first NaN/inf (`NonFiniteLossError`) and marks complete checkpoints.
- `save_hub_folder(model, processor, out_dir)`: merged weights + code + processor + card.
- `default_model_path()`: the small MedRG shipped inside the package.
"""

from __future__ import annotations

from .augment import GroundingAugmentation, swap_sides
from .collator import MedRGDataCollator, check_dataset_columns
from .config import TrainConfig, load_config


def __getattr__(name: str):
    if name in ("train", "build_trainer", "build_model", "apply_lora", "weights_digest"):
        from . import train as _train

        return getattr(_train, name)
    if name in ("MedRGTrainer", "NonFiniteLossError"):
        from . import trainer

        return getattr(trainer, name)
    if name in ("save_hub_folder", "merge_adapters"):  # the one hub-folder writer
        from medrg import hub

        return getattr(hub, name)
    if name in ("GroundingEvalCallback", "grounding_metrics"):
        from . import callbacks

        return getattr(callbacks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def default_model_path() -> str:
    """Folder of the embedded default MedRG (`medrg/default_model/`)."""
    from medrg.defaults import DEFAULT_MODEL_DIR

    return str(DEFAULT_MODEL_DIR)


__all__ = [
    "GroundingAugmentation",
    "MedRGDataCollator",
    "TrainConfig",
    "check_dataset_columns",
    "default_model_path",
    "load_config",
    "swap_sides",
]
