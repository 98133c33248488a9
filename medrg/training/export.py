"""Save a trained MedRG as a hub-ready folder: a thin front of the one writer, `medrg.hub.save_hub_folder`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medrg.hub import merge_adapters


def save_hub_folder(
    model: Any,
    processor: Any,
    out_dir: str | os.PathLike,
    card_text: str | None = None,
    metrics: Mapping | None = None,
    **card_options: Any,
) -> Path:
    """`medrg.hub.save_hub_folder` with the training export's argument names (`card_text` = `card`).

    Writes merged safetensors weights, config.json with `auto_map` and `custom_pipelines`, the processor, the
    flat hub code, `metrics.json` and the rendered model card; returns the folder. `card_options`: `name`,
    `summary`, `datasets`, `base_models`, `license`, `training`, `repo_id` (see `medrg.hub.save_hub_folder`)."""
    from medrg.hub import save_hub_folder as write

    return write(model, processor, out_dir, card=card_text, metrics=metrics, **card_options)


__all__ = ["merge_adapters", "save_hub_folder"]
