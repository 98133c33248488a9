"""The ``medrg`` command: ``medrg ground``, ``medrg evaluate``, ``medrg train``.

Errors of the user's input (a wrong model folder, a missing file, a bad dataset row: ``ValueError``,
``TypeError``, ``OSError``) print one line ``medrg COMMAND: error: ...`` to stderr and exit with status 1;
``medrg --debug COMMAND ...`` shows the full traceback instead.
"""

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
USER_ERRORS = (ValueError, TypeError, OSError)
DEBUG_HELP = "show the full traceback of an error instead of one line"


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if isinstance(error, ValueError) else f"{type(error).__name__}: {text}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medrg", description="Medical report grounding.")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_module=module_name)
        # also accepted after the command; SUPPRESS keeps a flag given before it
        sub_parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    # Only the chosen command's module is imported (keeps `medrg --help` fast); its arguments are added
    # before parsing so that `medrg evaluate --help` lists them.
    words = sys.argv[1:] if argv is None else list(argv)
    command = next((w for w in words if not w.startswith("-")), None)
    if command in SUBCOMMANDS:
        module = importlib.import_module(SUBCOMMANDS[command][0])
        module.add_arguments(sub.choices[command])
    args = parser.parse_args(words)
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except USER_ERRORS as error:
        if args.debug:
            raise
        raise SystemExit(f"medrg {args.command}: error: {_one_line(error)}") from None


if __name__ == "__main__":
    sys.exit(main())
