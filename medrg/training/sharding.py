"""Parameter sharding for MedRG (FSDP2 through accelerate; DeepSpeed ZeRO-3 through its own config).

The wrap units are the vision tower, each of the LM's decoder layers and the box decoder (`fsdp_wrap_modules`):
each is gathered for its own forward and backward and resharded after; the rest (embeddings, projector, LM head,
norms) belongs to the root unit, gathered for the whole forward. The box decoder runs its forward on every batch,
also on one without any `<BOX>` (empty predictions, a zero loss through them), so every rank enters its all-gather.
`medrg train` fills these classes into accelerate's FSDP plugin when the launch
config names none, so one committed config (`configs/accelerate_fsdp.yaml`) serves any LM and vision backbone.

accelerate runs FSDP on accelerators only: on CPU it would fall back to plain DDP without a word, so MedRG refuses
`training.fsdp` together with `use_cpu` (`check_sharding`). torch's own `fully_shard` runs on a CPU (gloo) mesh;
`tests/test_train_sharded.py` shards the same wrap units that way.
"""

from __future__ import annotations

import logging
import os

from torch import nn

logger = logging.getLogger("medrg.training")


def _base_model(model: nn.Module) -> nn.Module:
    """The MedRG model inside a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def fsdp_wrap_modules(model: nn.Module) -> list[nn.Module]:
    """The FSDP wrap units of a MedRG model, in forward order: the vision tower, every LM decoder layer, the box
    decoder. ValueError naming what is missing when `model` is not a MedRG."""
    base = _base_model(model)
    inner = getattr(base, "model", None)
    vision = getattr(inner, "vision_tower", None)
    language_model = getattr(inner, "language_model", None)
    box_decoder = getattr(base, "box_decoder", None)
    decoder = language_model.get_decoder() if language_model is not None else None
    layers = getattr(decoder, "layers", None)
    if vision is None or layers is None or box_decoder is None:
        raise ValueError(
            f"{type(base).__name__} is not a MedRG model (expected model.vision_tower, the LM decoder's layers and "
            "box_decoder)"
        )
    return [vision, *layers, box_decoder]


def fsdp_wrap_class_names(model: nn.Module) -> list[str]:
    """Class names of the wrap units (accelerate's `transformer_cls_names_to_wrap`), without repeats."""
    return list(dict.fromkeys(type(module).__name__ for module in fsdp_wrap_modules(model)))


def fill_fsdp_wrap_classes(accelerator, model: nn.Module) -> list[str] | None:
    """Set the wrap units' class names in `accelerator`'s FSDP plugin when the launch config names none (accelerate
    would otherwise wrap the model's `_no_split_modules`: single convolution blocks of a CNN tower, not the tower). Returns the
    names set, or None when FSDP is off or the config names its own."""
    plugin = getattr(getattr(accelerator, "state", None), "fsdp_plugin", None)
    if plugin is None or getattr(plugin, "transformer_cls_names_to_wrap", None):
        return None
    names = fsdp_wrap_class_names(model)
    plugin.transformer_cls_names_to_wrap = names
    logger.info("FSDP wrap units: %s", ", ".join(names))
    return names


def check_sharding(training_args) -> None:
    """ValueError when `training_args` (or an `accelerate launch` config, through its environment) ask for a
    sharding engine that cannot run as configured."""
    launched_fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    launched_deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    if (training_args.fsdp or launched_fsdp) and training_args.use_cpu:
        raise ValueError(
            "FSDP is asked for (training.fsdp or an accelerate FSDP config) with training.use_cpu: true, but accelerate runs FSDP on accelerators only (on "
            "CPU it would train plain DDP instead); drop use_cpu on a GPU machine, or use DDP (ddp_backend: gloo) "
            "on CPU"
        )
    if (training_args.deepspeed or launched_deepspeed) and training_args.use_cpu:
        raise ValueError(
            "DeepSpeed is asked for (training.deepspeed or an accelerate DeepSpeed config) with training.use_cpu: "
            "true; DeepSpeed ZeRO needs its accelerator (GPU)"
        )


__all__ = ["check_sharding", "fill_fsdp_wrap_classes", "fsdp_wrap_class_names", "fsdp_wrap_modules"]
