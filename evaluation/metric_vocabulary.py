"""The finding vocabulary of the ``evaluate`` metric folder, written from the reader's.

The metric's category check (``grounding_metrics.names_category``) reads labels with the same vocabulary data as
``ReportReader``: the finding categories with their wordings (``vocabulary_medrg.default_vocabulary()``) and the
negation triggers (``NEGATION_PRE``, ``NEGATION_POST``, ``PSEUDO_NEGATION``). The metric folder must load with
``evaluate.load(folder)`` where medrg is not installed, so it cannot import them: it imports a generated sibling
file, ``grounding_accuracy/finding_vocabulary.py``, written here and checked by a test to equal what this module
writes (one source: edit the vocabulary, then run ``python -m medrg.evaluation.metric_vocabulary``).

What the generated file holds (plain Python literals, one line per finding category):
- ``VOCABULARY``: the reader's finding vocabulary (``{"version": 1, "findings": {category: {"terms", "related",
  "sided", "grounded", "labels"}}}``; ``terms``/``related`` are lower-case regular expressions read at word
  boundaries; ``labels`` are the dataset labels that mean the category);
- ``NEGATION_PRE`` / ``NEGATION_POST``: triggers that deny a wording after / before them in its clause;
  ``PSEUDO_NEGATION``: phrases that hold a trigger but deny nothing ("no change", "cannot be excluded").
"""

from __future__ import annotations

from pathlib import Path

METRIC_VOCABULARY_FILE = Path(__file__).resolve().parent / "grounding_accuracy" / "finding_vocabulary.py"

_HEADER = (
    '"""The finding vocabulary the metric\'s category check reads labels with. Generated from MedRG\'s report reader\n'
    'by ``python -m medrg.evaluation.metric_vocabulary`` (which documents each name); do not edit by hand."""\n\n'
    "# fmt: off"
)


def metric_vocabulary() -> dict:
    """The data the metric's category check reads with, from the reader's vocabulary module."""
    from medrg.processing.vocabulary_medrg import (
        NEGATION_POST,
        NEGATION_PRE,
        PSEUDO_NEGATION,
        default_vocabulary,
    )

    return {
        "VOCABULARY": default_vocabulary(),
        "NEGATION_PRE": tuple(NEGATION_PRE),
        "NEGATION_POST": tuple(NEGATION_POST),
        "PSEUDO_NEGATION": tuple(PSEUDO_NEGATION),
    }


def metric_vocabulary_source() -> str:
    """The text of ``finding_vocabulary.py``: plain Python literals, importable without medrg, one line per finding
    category and per trigger list."""
    data = metric_vocabulary()
    vocabulary = data.pop("VOCABULARY")
    lines = [_HEADER, f"VOCABULARY = {{'version': {vocabulary['version']!r}, 'findings': {{"]
    lines += [f"    {category!r}: {entry!r}," for category, entry in vocabulary["findings"].items()]
    lines.append("}}")
    lines += [f"{name} = {value!r}" for name, value in data.items()]
    return "\n".join(lines) + "\n# fmt: on\n"


def write_metric_vocabulary(path: Path = METRIC_VOCABULARY_FILE) -> Path:
    """Write the metric folder's ``finding_vocabulary.py``; returns its path."""
    path = Path(path)
    path.write_text(metric_vocabulary_source(), encoding="utf-8")
    return path


if __name__ == "__main__":
    print(write_metric_vocabulary())
