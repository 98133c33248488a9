"""`medrg export --model DIR --out OUT [--card-metrics metrics.json]`: write a model as a Hub folder.

The model is loaded with `medrg.loading.load_medrg` (checked, no folder code runs) and written by the package's
one hub-folder writer, `medrg.hub.save_hub_folder`: safetensors weights, config with `auto_map` and
`custom_pipelines`, processor, flat hub code, `metrics.json` and the rendered model card `README.md`.

`--card-metrics` takes the `metrics.json` that `medrg evaluate --out` writes (`{"dataset", "split",
"metrics": {...}}`; put in the card as `DATASET_SPLIT`) or a mapping `{name: {"accuracy@0.5": fraction, ...}}`.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="MedRG model folder, or 'default' for the embedded model"
    )
    parser.add_argument("--out", required=True, help="the Hub folder to write (created)")
    parser.add_argument(
        "--card-metrics",
        default=None,
        metavar="METRICS.json",
        help="measured metrics for the model card: the metrics.json of `medrg evaluate --out`, or "
        '{"NAME": {"accuracy@0.5": 0.41, ...}}',
    )
    parser.add_argument("--name", default=None, help="model name in the card (default: from the folder name)")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run the model folder's own Python code (auto_map) if it is not a MedRG model type (default: never)",
    )


def _check_values(path: str, name: str, values: Any) -> dict[str, float]:
    if not isinstance(values, Mapping) or not values:
        raise ValueError(f"--card-metrics {path}: {name!r} must map metric names to numbers, got {values!r}")
    checked = {}
    for key, value in values.items():
        if value is None:
            continue  # an undefined metric (e.g. no negatives): left out of the card
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"--card-metrics {path}: {name}.{key} must be a finite number, got {value!r}")
        checked[str(key)] = float(value)
    return checked


def read_card_metrics(path: str) -> dict[str, dict[str, float]]:
    """`{name: {metric: value}}` from a metrics JSON file; ValueError naming the file and the field at fault."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--card-metrics file not found: {path}")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"--card-metrics {path} is not valid JSON: {error}") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"--card-metrics {path}: expected a JSON object, got {type(data).__name__}")
    if "metrics" in data:  # the metrics.json of `medrg evaluate --out`
        name = "_".join(str(data[k]) for k in ("dataset", "split") if data.get(k)) or "evaluation"
        numbers = {k: v for k, v in data["metrics"].items() if not isinstance(v, (Mapping, list, str))}
        return {name: _check_values(path, name, numbers)}
    return {str(name): _check_values(path, str(name), values) for name, values in data.items()}


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {args.out} is a file; expected a folder to write the Hub folder into")
    model_dir = Path(args.model)
    if (
        args.model != "default"
        and out.exists()
        and model_dir.exists()
        and out.resolve() == model_dir.resolve()
    ):
        raise ValueError(f"--out {args.out} is the --model folder itself; write the Hub folder elsewhere")
    metrics = read_card_metrics(args.card_metrics) if args.card_metrics else None

    from transformers.utils import logging as hf_logging

    from medrg.hub import save_hub_folder
    from medrg.loading import load_medrg

    hf_logging.disable_progress_bar()
    model, processor = load_medrg(args.model, trust_remote_code=args.trust_remote_code)
    folder = save_hub_folder(model, processor, out, name=args.name, metrics=metrics)
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    print(f"wrote {folder}: {', '.join(files)}")
    return 0
