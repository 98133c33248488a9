"""``medrg evaluate``: evaluate a model directory or a baseline on a grounding dataset.

Order of work (each step fails with one clear error before the next, slower one): ``--out`` is checked (a
writable folder), the options are parsed, the model is loaded (``medrg.loading.load_medrg``: a folder's own
Python code runs only with ``--trust-remote-code``), then the dataset is built and the split chosen.

Split: ``--split`` if given; otherwise the dataset's evaluation split, ``test`` where the dataset has one, else
``validation`` (the bundled ChestX-ray8 has train and validation only); the output names the split used.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

BASELINE_NAMES = ("center", "prior")  # = sorted(medrg.evaluation.baselines.BASELINES); light for --help
EVALUATION_SPLITS = ("test", "validation")  # preferred evaluation split, in order


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        help="model directory, 'default' (the embedded model medrg/default_model), or a baseline name: "
        + ", ".join(BASELINE_NAMES),
    )
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run the model folder's own Python code (auto_map) if it is not a MedRG model type; "
        "default: never run a folder's code (MedRG folders load with the installed package)",
    )
    parser.add_argument("--dataset", required=True, help="dataset name for medrg.load_grounding_dataset")
    parser.add_argument("--data-dir", default=None, help="folder of the dataset's files (real datasets)")
    parser.add_argument(
        "--dataset-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a builder option (value YAML-parsed), e.g. --dataset-option reports=template; repeatable",
    )
    parser.add_argument(
        "--split",
        default=None,
        help="split to evaluate (default: the dataset's evaluation split: test, else validation)",
    )
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


def parse_dataset_options(assignments: list[str]) -> dict[str, Any]:
    """``["key=value", ...]`` -> ``{key: yaml-parsed value}``; ValueError naming a malformed one."""
    import yaml

    options: dict[str, Any] = {}
    for assignment in assignments:
        key, equals, raw = assignment.partition("=")
        key = key.strip()
        if not equals or not key.isidentifier():
            raise ValueError(f"--dataset-option {assignment!r}: expected KEY=VALUE, e.g. reports=template")
        try:
            options[key] = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError as error:
            raise ValueError(
                f"--dataset-option {assignment!r}: the value is not valid YAML ({error})"
            ) from None
    return options


def choose_split(splits: list[str], requested: str | None, dataset: str) -> tuple[str, str]:
    """``(split, note)``: the requested split (checked) or the dataset's evaluation split, and why."""
    if requested is not None:
        if requested not in splits:
            raise ValueError(
                f"--split {requested!r}: dataset {dataset!r} has no such split; available: {sorted(splits)}"
            )
        return requested, "as requested"
    for name in EVALUATION_SPLITS:
        if name in splits:
            missing = [earlier for earlier in EVALUATION_SPLITS[: EVALUATION_SPLITS.index(name)]]
            note = "the dataset's test split" if not missing else f"dataset {dataset!r} has no test split"
            return name, f"default: {note}"
    raise ValueError(
        f"dataset {dataset!r} has no test or validation split (splits: {sorted(splits)}); pass --split"
    )


def run(args: argparse.Namespace) -> int:
    from .baselines import BASELINES
    from .runner import evaluate_model, metrics_table, prepare_out_dir, resolve_predictor

    prepare_out_dir(args.out)
    options = parse_dataset_options(args.dataset_option)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer, got {args.batch_size}")
    if args.max_samples is not None and args.max_samples < 1:
        raise ValueError(f"--max-samples must be a positive integer, got {args.max_samples}")
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise ValueError(f"--data-dir {args.data_dir} is not a folder (expected the dataset's local copy)")
    import datasets
    from transformers.utils import logging as hf_logging

    # stderr is kept for errors (one line each): no progress bars of transformers (weights) or datasets (build)
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    model: Any = args.model
    model_name = None
    if args.model not in BASELINES:  # load (and refuse) a model before a possibly long dataset build
        model, model_name = resolve_predictor(
            args.model, batch_size=args.batch_size, threshold=0.0, trust_remote_code=args.trust_remote_code
        )
    from medrg.processing.data import load_grounding_dataset

    print(f"building dataset {args.dataset!r} ...", flush=True)
    try:
        dataset = load_grounding_dataset(args.dataset, data_dir=args.data_dir, **options)
    except ValueError as error:
        if args.data_dir is None and "pass data_dir" in str(error):  # say it in the command line's words
            raise ValueError(str(error).replace("pass data_dir", "pass --data-dir FOLDER")) from None
        raise
    split, note = choose_split(list(dataset.keys()), args.split, args.dataset)
    print(f"split: {split} ({note})", flush=True)
    report = evaluate_model(
        model,
        dataset,
        split=split,
        train_split=args.train_split,
        batch_size=args.batch_size,
        max_samples=args.max_samples,
        out_dir=args.out,
        num_overlays=args.num_overlays,
        multi_box=args.multi_box,
        model_name=model_name,
        dataset_name=args.dataset,
        trust_remote_code=args.trust_remote_code,
    )
    if model_name is not None:  # the model was loaded here: record where from, not "function"
        report["config"]["model_source"] = args.model
        metrics_file = Path(args.out) / "metrics.json"
        written = json.loads(metrics_file.read_text())
        written["config"]["model_source"] = args.model
        metrics_file.write_text(json.dumps(written, indent=2) + "\n")
    print(metrics_table([(str(report["model"]), report["metrics"])]), end="")
    keys = ("accuracy@0.1", "accuracy@0.3", "accuracy@0.5", "mean_iou", "label_accuracy@0.5")
    headline = {k: report["metrics"].get(k) for k in keys}
    print(
        json.dumps({"out": str(args.out), "split": split, "num_samples": report["num_samples"], **headline})
    )
    return 0
