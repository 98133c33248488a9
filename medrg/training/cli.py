"""`medrg train --config configs/NAME.yaml [--set section.key=value ...] [--resume] [--dry-run]`."""

from __future__ import annotations

import argparse
import json

from .config import apply_overrides  # noqa: F401  (re-exported: `--set` semantics live in config.py)


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
        "--resume",
        action="store_true",
        help="continue from the last complete checkpoint in output_dir (a finished run: nothing to do)",
    )
    parser.add_argument("--output-dir", default=None, help="override training.output_dir")
    parser.add_argument(
        "--dry-run", action="store_true", help="validate the config and data, build, do not train"
    )


def run(args: argparse.Namespace) -> int:
    """Run `medrg train`; user errors (config, data, checkpoints, a diverged run) exit with one line on stderr
    (`--debug`, where the `medrg` command offers it, shows the traceback)."""
    from .checkpoints import resolve_resume_checkpoint
    from .config import load_config
    from .train import build_trainer, train

    overrides = list(args.set)
    if args.resume:
        overrides.append("training.resume_from_checkpoint=true")
    if args.output_dir:
        overrides.append(f"training.output_dir={json.dumps(args.output_dir)}")
    try:
        config = load_config(args.config, overrides)
        if args.dry_run:
            training = config.training
            resolve_resume_checkpoint(training.resume_from_checkpoint, training.output_dir, set_aside=False)
            trainer, _, splits = build_trainer(config)
            rows = trainer.train_dataset
            counted = f"{len(rows)} training rows" if hasattr(rows, "__len__") else "streamed training rows"
            print(f"config OK; {counted}; splits {sorted(splits)}; model {type(trainer.model).__name__}")
            return 0
        summary = train(config)
    except ValueError as error:
        if getattr(args, "debug", False):
            raise
        message = str(error)
        if not message.startswith(str(args.config)):
            message = f"{args.config}: {message}"
        raise SystemExit(f"medrg train: {message}") from None
    if summary.get("already_finished"):
        print(
            f"nothing to do: the run finished at step {summary['global_step']}; {summary['export_dir']} unchanged"
        )
        return 0
    if summary.get("preempted"):
        print(
            f"preempted at step {summary['global_step']}: {summary['checkpoint']} is complete; continue with "
            "the same command and --resume",
            flush=True,
        )
        return 0
    shown = {
        k: summary[k]
        for k in ("global_step", "train_seconds", "resumed_from", "best_checkpoint", "export_dir")
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
