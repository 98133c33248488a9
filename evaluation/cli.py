"""``medrg evaluate``: evaluate a model directory or a baseline on a grounding dataset.

A model folder is loaded with ``medrg.loading.load_medrg``: its own Python code (``auto_map``) runs only
with ``--trust-remote-code``. ``--out`` is checked (a writable folder) before the model or the data load.
"""

from __future__ import annotations

import argparse
import json

from .baselines import BASELINES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        help=f"model directory, 'default' (the embedded model), or a baseline name: {', '.join(sorted(BASELINES))}",
    )
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run the model folder's own Python code (auto_map) if it is not a MedRG model type; "
        "default: never run a folder's code (MedRG folders load with the installed package)",
    )
    parser.add_argument("--dataset", required=True, help="dataset name for medrg.load_grounding_dataset")
    parser.add_argument("--data-dir", default=None, help="folder of the dataset's files (real datasets)")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument("--train-split", default="train", help="split the baselines fit on (default: train)")
    parser.add_argument(
        "--out", required=True, help="output folder for metrics.json, metrics.md and pictures"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-samples", type=int, default=None, help="evaluate only the first N examples")
    parser.add_argument("--num-overlays", type=int, default=8, help="samples in overlays.png")
    parser.add_argument(
        "--multi-box", choices=("max", "union"), default="max", help="several boxes per finding: rule"
    )


def run(args: argparse.Namespace) -> int:
    from .runner import evaluate_model, metrics_table

    report = evaluate_model(
        args.model,
        args.dataset,
        split=args.split,
        train_split=args.train_split,
        data_dir=args.data_dir,
        batch_size=args.batch_size,
        max_samples=args.max_samples,
        out_dir=args.out,
        num_overlays=args.num_overlays,
        multi_box=args.multi_box,
        trust_remote_code=args.trust_remote_code,
    )
    print(metrics_table([(str(report["model"]), report["metrics"])]), end="")
    keys = ("accuracy@0.1", "accuracy@0.3", "accuracy@0.5", "mean_iou", "label_accuracy@0.5")
    headline = {k: report["metrics"].get(k) for k in keys}
    print(json.dumps({"out": str(args.out), "num_samples": report["num_samples"], **headline}))
    return 0
