"""The ``medrg`` command: ``medrg ground``, ``medrg evaluate``, ``medrg train``."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module that provides ``add_arguments(parser)`` and ``run(args) -> int``
SUBCOMMANDS = {
    "ground": ("medrg.ground_cli", "Ground a report on a chest X-ray image."),
    "evaluate": ("medrg.evaluation.cli", "Evaluate a model or a baseline on a grounding dataset."),
    "train": ("medrg.training.cli", "Fine-tune MedRG from a YAML config."),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medrg", description="Medical report grounding.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_module=module_name)
    # Parse the command first so only its module is imported (keeps `medrg --help` fast).
    args, _ = parser.parse_known_args(argv)
    module = importlib.import_module(args._module)
    module.add_arguments(sub.choices[args.command])
    args = parser.parse_args(argv)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
