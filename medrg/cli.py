"""The ``medrg`` command: ``medrg ground``, ``medrg evaluate``, ``medrg train``, ``medrg export``, ``medrg demo``.

Every error of the user's input (a wrong model folder, a missing file, a bad option or dataset row:
``ValueError``, ``TypeError``, ``OSError``, a missing optional package, a wrong command line) prints ONE line
``medrg COMMAND: error: ...`` to stderr and exits with a non-zero status (1; 2 for a wrong command line, as
argparse does; 130 on Ctrl-C). ``medrg --debug COMMAND ...`` (or ``--debug`` after the command) shows the full
traceback instead.

Start-up: ``import medrg`` is light (no torch / transformers) and only the chosen command's module is
imported, so ``medrg --help`` answers in well under a second.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from typing import NoReturn

# subcommand -> (module that provides ``add_arguments(parser)`` and ``run(args) -> int``, help)
SUBCOMMANDS = {
    "ground": ("medrg.ground_cli", "Ground a report on a chest X-ray image."),
    "evaluate": ("medrg.evaluation.cli", "Evaluate a model or a baseline on a grounding dataset."),
    "train": ("medrg.training.cli", "Fine-tune MedRG from a YAML config."),
    "export": ("medrg.export_cli", "Write a model folder as a Hub folder (weights, code, processor, card)."),
    "demo": ("medrg.demo", "Start the Gradio demo app (needs the [demo] extra)."),
}
UNBUFFERED_COMMANDS = ("demo",)  # a server: its warnings are shown when they happen
USER_ERRORS = (ValueError, TypeError, OSError, ModuleNotFoundError)
DEBUG_HELP = "show the full traceback of an error instead of one line"


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr (exit status 2), naming ``--help``."""

    def error(self, message: str) -> NoReturn:
        text = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {text} (see '{self.prog} --help')\n")


def one_line(error: BaseException) -> str:
    """The error as one line: its message with whitespace collapsed, prefixed by its type unless a ValueError."""
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, ModuleNotFoundError) and error.name:
        extra = {"gradio": "demo", "pydicom": "dicom"}.get(error.name.split(".")[0])
        hint = f"; install it with pip install 'medrg[{extra}]'" if extra else ""
        return f"the optional package {error.name!r} is not installed{hint}"
    if isinstance(error, OSError) and getattr(error, "filename", None) and error.strerror:
        return f"{error.strerror}: {error.filename}"
    return text if isinstance(error, ValueError) else f"{type(error).__name__}: {text}"


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The parser; only the command named in ``argv`` gets its arguments (its module is imported)."""
    parser = OneLineParser(prog="medrg", description="Medical report grounding.")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_module=module_name)
        # also accepted after the command; SUPPRESS keeps a flag given before it
        sub_parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    # Only the chosen command's module is imported (keeps `medrg --help` fast); its arguments are added
    # before parsing so that `medrg evaluate --help` lists them.
    command = next((w for w in argv if not w.startswith("-")), None)
    if command in SUBCOMMANDS:
        module = importlib.import_module(SUBCOMMANDS[command][0])
        module.add_arguments(sub.choices[command])
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``medrg`` command line ``argv`` (default: ``sys.argv[1:]``).

    Returns the command's exit status (0). A user error raises ``SystemExit("medrg COMMAND: error: ...")`` (one
    line, status 1), a wrong command line ``SystemExit(2)`` after one line on stderr; with ``--debug`` the
    original exception propagates."""
    words = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in words
    caught: list[warnings.WarningMessage] = []
    try:
        parser = build_parser(words)
        args = parser.parse_args(words)
        module = importlib.import_module(args._module)
        if debug or args.command in UNBUFFERED_COMMANDS:
            return int(module.run(args) or 0)
        # Warnings (e.g. pydicom's on a broken file) are held back: after a user error only its one line is
        # shown; after success they are shown as usual.
        with warnings.catch_warnings(record=True) as caught:
            status = int(module.run(args) or 0)
        for warning in caught:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
        return status
    except KeyboardInterrupt:
        if debug:
            raise
        print("medrg: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as error:
        if debug:
            raise
        command = next((w for w in words if w in SUBCOMMANDS), None)
        prefix = f"medrg {command}" if command else "medrg"
        # SystemExit with a message: printed as one line on stderr, exit status 1
        raise SystemExit(f"{prefix}: error: {one_line(error)}") from None


if __name__ == "__main__":
    sys.exit(main())
