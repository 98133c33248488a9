"""MedRG dataset builders: every source -> one ``datasets.DatasetDict`` with ``GROUNDING_FEATURES``.

``load_grounding_dataset(name, data_dir=None, **options)`` with ``name`` in ``BUILDERS``. Importing this
package is cheap: builders are imported on first use.
"""

from __future__ import annotations

import importlib
import os

from .common import DataFormatError

# name -> (module, function); real sources need data_dir, synthcxr does not.
BUILDERS = {
    "synthcxr": ("synthcxr", "build_synthcxr"),
    "chestxray8": ("chestxray8", "build_chestxray8"),
    "ms-cxr": ("ms_cxr", "build_ms_cxr"),
    "vindr-cxr": ("vindr_cxr", "build_vindr_cxr"),
    "rsna-pneumonia": ("rsna", "build_rsna"),
    "jsonl": ("jsonl", "build_jsonl"),
}


def load_grounding_dataset(name: str, data_dir: str | os.PathLike | None = None, **options):
    """Build dataset ``name`` (one of ``BUILDERS``) from ``data_dir`` as a ``datasets.DatasetDict``.

    ``options`` are the builder's keyword arguments (e.g. ``examples_per_split``, ``seed``, ``image_size``
    for ``synthcxr``; ``cache_dir`` and ``progress`` for all). Raises ``DataFormatError`` (a ``ValueError``)
    naming file, row and field on bad input.
    """
    key = name.strip().lower().replace("_", "-")
    key = {
        "ms_cxr": "ms-cxr",
        "vindr": "vindr-cxr",
        "rsna": "rsna-pneumonia",
        "chestx-ray8": "chestxray8",
    }.get(key, key)
    if key not in BUILDERS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(BUILDERS)}")
    module_name, fn_name = BUILDERS[key]
    fn = getattr(importlib.import_module(f".{module_name}", __name__), fn_name)
    if key != "synthcxr" and key != "jsonl" and data_dir is None:
        raise ValueError(f"dataset {name!r} is read from a local copy: pass data_dir")
    return fn(data_dir, **options)


def __getattr__(name: str):
    # the schema imports `datasets` (slow); load it on first access only
    if name in ("GROUNDING_FEATURES", "FINDING_FEATURES"):
        from . import schema

        return getattr(schema, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def export_to_hub_folder(dataset_dict, out_dir, **kwargs):
    """See ``medrg.processing.data.export.export_to_hub_folder``."""
    from .export import export_to_hub_folder as _export

    return _export(dataset_dict, out_dir, **kwargs)


__all__ = [
    "BUILDERS",
    "DataFormatError",
    "FINDING_FEATURES",
    "GROUNDING_FEATURES",
    "export_to_hub_folder",
    "load_grounding_dataset",
]
