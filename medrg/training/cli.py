"""`medrg train --config configs/NAME.yaml [--set section.key=value ...] [--resume]`."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", required=True, help="YAML training config (see configs/ and docs/training.md)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value (YAML-parsed), e.g. --set training.max_steps=100; repeatable",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint in output_dir"
    )
    parser.add_argument("--output-dir", default=None, help="override training.output_dir")
    parser.add_argument(
        "--dry-run", action="store_true", help="validate the config and data, build, do not train"
    )


def apply_overrides(data: dict, assignments: list[str]) -> dict:
    """Set `section.key=value` (value parsed as YAML) in the raw config mapping."""
    import yaml

    for assignment in assignments:
        if "=" not in assignment:
            raise ValueError(f"--set expects SECTION.KEY=VALUE, got {assignment!r}")
        dotted, raw = assignment.split("=", 1)
        keys = dotted.strip().split(".")
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {dotted}: {key} is not a section")
        node[keys[-1]] = yaml.safe_load(raw)
    return data


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import yaml

    from .config import TrainConfig
    from .train import build_trainer, train

    path = Path(args.config)
    if not path.is_file():
        raise SystemExit(f"medrg train: config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    apply_overrides(data, args.set)
    if args.resume:
        data.setdefault("training", {})["resume_from_checkpoint"] = True
    if args.output_dir:
        data.setdefault("training", {})["output_dir"] = args.output_dir
    try:
        config = TrainConfig.from_dict(data)
    except ValueError as error:
        raise SystemExit(f"medrg train: {path}: {error}") from None
    if args.dry_run:
        trainer, _, _ = build_trainer(config)
        print(f"config OK; {len(trainer.train_dataset)} training rows; model {type(trainer.model).__name__}")
        return 0
    summary = train(config)
    shown = {
        k: summary[k]
        for k in ("global_step", "train_seconds", "best_checkpoint", "export_dir")
        if k in summary
    }
    shown["metrics"] = summary.get("metrics")
    print(json.dumps(shown, indent=2, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medrg.training", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
