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
    # Only the chosen command's module is imported (keeps `medrg --help` fast); its arguments are added
    # before parsing so that `medrg evaluate --help` lists them.
    words = sys.argv[1:] if argv is None else list(argv)
    command = next((w for w in words if not w.startswith("-")), None)
    if command in SUBCOMMANDS:
        module = importlib.import_module(SUBCOMMANDS[command][0])
        module.add_arguments(sub.choices[command])
    args = parser.parse_args(words)
    module = importlib.import_module(args._module)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
