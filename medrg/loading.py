"""Load a MedRG model and its processor for inference, with one clear error naming the file at fault.

``load_medrg(path_or_name)`` is what ``medrg ground``, ``medrg evaluate`` and the evaluation runner use.
It checks the folder before transformers reads it, so that each broken or wrong folder gives one
``ModelLoadError`` (a ``ValueError``) naming the folder or file and what was expected:

- a missing folder, or a file where a folder was expected;
- a Trainer ``checkpoint-N`` folder (``trainer_state.json``): resume it with ``medrg train --resume`` or load
  the exported ``final/`` folder;
- no or unreadable ``config.json``; a ``model_type`` other than ``medrg`` (a BERT, GPT-2 ... folder);
- a folder that brings its own Python code (``auto_map``) for a model type the installed package does
  not provide, without ``trust_remote_code=True``: the code is never imported unless asked;
- no ``processor_config.json`` or no tokenizer file (transformers would otherwise fall back to
  defaults and fail later with an unrelated token-count mismatch); a ``score_calibration`` that is not two
  numbers or that saturates;
- a ``config.json`` / ``processor_config.json`` nested too deeply to parse, or a config value out of range
  (e.g. ``num_box_queries`` over its bound): named before any weight is allocated;
- no ``model.safetensors`` (pickled ``.bin`` weights are refused), or a truncated / corrupt one;
- weights that do not fit the config (missing, unexpected or mismatched tensors).

Remote code: MedRG classes are registered by ``import medrg``, so a MedRG folder loads with the
installed code and its own ``.py`` files are ignored unless ``trust_remote_code=True``.
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path
from typing import Any

DEFAULT_NAME = "default"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
_CHECKPOINT_NAME = re.compile(r"^checkpoint-\d+$")


class ModelLoadError(ValueError):
    """A model folder that cannot be loaded for inference; the message names the folder or file."""


def _resolve_folder(path_or_name: str | os.PathLike | None) -> Path:
    if path_or_name is None or str(path_or_name) == DEFAULT_NAME:
        from medrg.defaults import DEFAULT_MODEL_DIR

        return DEFAULT_MODEL_DIR
    folder = Path(path_or_name).expanduser()
    if not folder.exists():
        raise ModelLoadError(
            f"model folder not found: {folder} (expected a saved MedRG folder, or {DEFAULT_NAME!r} for the "
            "embedded model)"
        )
    if not folder.is_dir():
        raise ModelLoadError(
            f"{folder} is a file; expected a MedRG model folder (config.json, model.safetensors)"
        )
    return folder


def _check_not_training_checkpoint(folder: Path) -> None:
    if (folder / "trainer_state.json").is_file() or _CHECKPOINT_NAME.match(folder.name):
        raise ModelLoadError(
            f"{folder} is a Trainer training checkpoint (trainer_state.json, optimizer state), not an exported "
            "model: continue training with `medrg train --config CONFIG --resume`, or load the exported "
            f"folder {folder.parent / 'final'} that training writes at the end"
        )


def read_json_file(file: Path) -> Any:
    """The JSON value of ``file``; ``ModelLoadError`` naming it when it is unreadable, not UTF-8 JSON or nested too
    deeply for Python's parser (a hostile 200k-deep file is refused instead of raising ``RecursionError``)."""
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"{file} is not valid JSON: {error}") from None
    except RecursionError:
        raise ModelLoadError(f"{file} is not a usable JSON file: it is nested too deeply") from None
    except OSError as error:
        raise ModelLoadError(f"{file} cannot be read: {error.strerror or error}") from None


def _read_config(folder: Path, trust_remote_code: bool) -> dict:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"{config_file} not found: {folder} is not a saved model folder")
    config = read_json_file(config_file)
    if not isinstance(config, dict):
        raise ModelLoadError(f"{config_file}: expected a JSON object, got {type(config).__name__}")
    model_type = config.get("model_type")
    if model_type != "medrg":
        own_code = sorted({str(ref).split(".")[0] + ".py" for ref in (config.get("auto_map") or {}).values()})
        if own_code and not trust_remote_code:
            raise ModelLoadError(
                f"{config_file}: model_type {model_type!r} is not a MedRG model and the folder brings its own "
                f"code ({', '.join(own_code)}); it was not run. Only if you trust that code, pass "
                "--trust-remote-code (trust_remote_code=True)"
            )
        if not own_code:
            raise ModelLoadError(
                f"{config_file}: model_type {model_type!r} is not a MedRG model (expected 'medrg'); "
                "medrg loads only report-grounding models"
            )
    return config


def _check_processor_files(folder: Path) -> None:
    if not (folder / "processor_config.json").is_file():
        raise ModelLoadError(
            f"{folder / 'processor_config.json'} not found: the folder has no MedRG processor (image size, "
            "image tokens, prompt); save it with processor.save_pretrained(folder)"
        )
    processor_config = read_json_file(folder / "processor_config.json")
    if not isinstance(processor_config, dict):
        raise ModelLoadError(
            f"{folder / 'processor_config.json'}: expected a JSON object, got {type(processor_config).__name__}"
        )
    if "score_calibration" in processor_config:
        from medrg.processing.processing_medrg import MedRGProcessor

        try:
            MedRGProcessor._check_calibration(processor_config["score_calibration"])
        except ValueError as error:
            raise ModelLoadError(f"{folder / 'processor_config.json'}: {error}") from None
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(
            f"{folder} has no tokenizer ({' / '.join(TOKENIZER_FILES)}); save it with processor.save_pretrained"
        )


def check_safetensors(path: Path) -> None:
    """Raise ``ModelLoadError`` naming ``path`` if it is not a complete safetensors file.

    The format is an 8-byte little-endian header length, a JSON header whose tensors give
    ``data_offsets`` into the data that follows; the file must be exactly as long as they say.
    """
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise ModelLoadError(f"{path} is truncated or not a safetensors file ({size} bytes)")
        (header_length,) = struct.unpack("<Q", prefix)
        if header_length > size - 8:
            raise ModelLoadError(
                f"{path} is truncated or not a safetensors file (header of {header_length} bytes, file {size})"
            )
        try:
            header = json.loads(handle.read(header_length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ModelLoadError(f"{path} is corrupt: its safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{path} is corrupt: its safetensors header is not a JSON object")
    ends = [
        entry["data_offsets"][1]
        for name, entry in header.items()
        if name != "__metadata__" and isinstance(entry, dict) and len(entry.get("data_offsets", ())) == 2
    ]
    expected = 8 + header_length + max(ends, default=0)
    if size != expected:
        raise ModelLoadError(
            f"{path} is truncated or corrupt: {size} bytes, its header describes {expected} "
            "(re-copy or re-export the model)"
        )


def _check_weights(folder: Path) -> None:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise ModelLoadError(f"{index} is not a valid safetensors index (weight_map)") from None
        files = [folder / shard for shard in shards]
    else:
        files = [folder / "model.safetensors"]
    for file in files:
        if not file.is_file():
            pickled = [p.name for p in folder.glob("*.bin")]
            hint = f" (found {', '.join(pickled)}: pickled weights are not loaded, convert to safetensors)"
            raise ModelLoadError(f"{file} not found{hint if pickled else ''}")
        check_safetensors(file)


def _load_config_object(folder: Path, trust_remote_code: bool) -> Any:
    """The model config, built (and validated: sizes, ids) before any weight is allocated; errors name config.json
    (a value that MedRGConfig's `@strict` validation refuses raises a `StrictDataclassError` naming the field)."""
    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoConfig

    config_file = folder / "config.json"
    try:
        return AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    except RecursionError:
        raise ModelLoadError(f"{config_file} is not a usable JSON file: it is nested too deeply") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, StrictDataclassError) as error:
        raise ModelLoadError(f"{config_file}: {' '.join(str(error).split())}") from None


def check_model_folder(folder: str | os.PathLike, trust_remote_code: bool = False) -> Any:
    """Every check ``load_medrg`` makes before loading weights (see the module docstring); returns the validated
    model config. ``ModelLoadError`` names the folder or file (and the field) at fault."""
    import medrg  # noqa: F401  (registers the MedRG Auto classes)

    folder = _resolve_folder(folder)
    _check_not_training_checkpoint(folder)
    _read_config(folder, trust_remote_code)
    _check_processor_files(folder)
    _check_weights(folder)
    return _load_config_object(folder, trust_remote_code)


def _load_model(folder: Path, trust_remote_code: bool, dtype: Any, config: Any = None) -> Any:
    from transformers import AutoModel

    kwargs = {"trust_remote_code": trust_remote_code}
    if config is not None:
        kwargs["config"] = config
    if dtype is not None:
        kwargs["dtype"] = dtype
    try:
        # MedRG's from_pretrained refuses a checkpoint with missing, unexpected or mismatched weights
        model = AutoModel.from_pretrained(str(folder), **kwargs)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError) as error:
        raise ModelLoadError(f"{folder / 'model.safetensors'}: the model cannot be loaded: {error}") from None
    if not callable(getattr(model, "generate_grounding", None)):
        raise ModelLoadError(
            f"{folder / 'config.json'}: {type(model).__name__} is not a report-grounding model "
            "(no generate_grounding)"
        )
    return model


def load_medrg(
    path_or_name: str | os.PathLike | None = DEFAULT_NAME,
    *,
    trust_remote_code: bool = False,
    dtype: Any = None,
    device: Any = None,
) -> tuple[Any, Any]:
    """Load ``(model, processor)`` for inference from a saved MedRG folder (or ``"default"``).

    Args:
        path_or_name: a local folder written by ``save_pretrained`` / ``medrg train`` (its ``final/``), or
            ``"default"`` (or None) for the embedded model ``medrg/default_model``.
        trust_remote_code: run the folder's own Python code (``auto_map``). Default False: MedRG folders
            load with the installed classes and any other folder that brings code is refused.
        dtype: torch dtype of the weights (default: as saved).
        device: where to put the model (e.g. ``"cpu"``, ``"cuda:0"``; default: left on the CPU).

    Returns:
        ``(model, processor)``: the model in eval mode and its ``MedRGProcessor``.

    Raises:
        ModelLoadError (a ValueError): naming the folder or file that is missing, wrong or corrupt.
    """
    import medrg  # noqa: F401  (registers the MedRG Auto classes)

    folder = _resolve_folder(path_or_name)
    config = check_model_folder(folder, trust_remote_code)
    model = _load_model(folder, trust_remote_code, dtype, config)
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
        raise ModelLoadError(
            f"{folder / 'processor_config.json'}: the processor cannot be loaded: {error}"
        ) from None
    if device is not None:
        model = model.to(device)
    return model.eval(), processor


__all__ = [
    "DEFAULT_NAME",
    "ModelLoadError",
    "check_model_folder",
    "check_safetensors",
    "load_medrg",
    "read_json_file",
]
