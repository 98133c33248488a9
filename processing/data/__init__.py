"""MedRG dataset builders: every source -> one ``datasets.DatasetDict`` with ``GROUNDING_FEATURES``.

``load_grounding_dataset(name, data_dir=None, **options)`` with ``name`` in ``BUILDERS``. Importing this
package is cheap: builders are imported on first use.

Every real-data builder parses its annotations into ``records.ImageRecord`` objects and builds through
``records.build_from_records`` (one path for validation, the patient-disjoint split check, rows, features).
ChestX-ray8 takes ``reports="template" | "gpt" | "llama" | "all"`` (or a list): the project's template
reports, the narrative reports of the GPT / LLaMA writers (one sample per box, answer = a key phrase in
the report's own words; ``source`` is ``chestxray8:gpt`` / ``chestxray8:llama``), or each image once per
available source. Patient ids are keyed hashes (HMAC-SHA256) with a secret that never leaves the machine:
``id_secret=`` / ``$MEDRG_ID_SECRET`` / ``<data_dir>/.medrg_id_secret`` (per-user file under
``~/.cache/medrg/id_secrets/`` for a read-only data folder); published image ids never hold paths.
"""

from __future__ import annotations

import importlib
import inspect
import os

from .common import DataFormatError

# name -> (module, function), the function of module `m` being `build_m`; real sources need data_dir, synthcxr
# and jsonl do not.
BUILDERS = {
    name: (module, f"build_{module}")
    for name, module in {
        "synthcxr": "synthcxr",
        "chestxray8": "chestxray8",
        "ms-cxr": "ms_cxr",
        "vindr-cxr": "vindr_cxr",
        "rsna-pneumonia": "rsna",
        "jsonl": "jsonl",
        "parquet": "parquet_folder",
    }.items()
}


def load_grounding_dataset(name: str, data_dir: str | os.PathLike | None = None, **options):
    """Build dataset ``name`` (one of ``BUILDERS``) from ``data_dir`` as a ``datasets.DatasetDict``.

    ``options`` are the builder's keyword arguments (e.g. ``examples_per_split``, ``seed``, ``image_size``
    for ``synthcxr``; ``reports`` for ``chestxray8``; ``id_secret`` for the real sources; ``cache_dir`` and
    ``progress`` for all). ``streaming=True`` (every builder) gives an ``IterableDatasetDict`` instead: rows are made
    (drawn, read, decoded) one at a time as they are consumed, so memory stays flat over any number of rows;
    ``parquet`` streams a folder written by ``export_to_hub_folder`` shard by shard. An unknown option is a
    ``TypeError`` naming it and the accepted ones. Raises
    ``DataFormatError`` (a ``ValueError``) naming file, row and field on bad input. Real sources publish
    patient ids only as keyed hashes (secret: ``id_secret`` / ``$MEDRG_ID_SECRET`` / a file beside the data).
    """
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, one of {sorted(BUILDERS)}; got {name!r}")
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
    accepted = [p for p in inspect.signature(fn).parameters if p != "data_dir"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for dataset {key!r}; accepted options: {accepted}")
    size = options.get("image_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise ValueError(f"option image_size must be a positive integer (pixels), got {size!r}")
    streaming = options.get("streaming", False)
    if not isinstance(streaming, bool):
        raise TypeError(f"option streaming must be True or False, got {streaming!r}")
    if key != "synthcxr" and key != "jsonl" and data_dir is None:
        raise ValueError(f"dataset {name!r} is read from a local copy: pass data_dir")
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise TypeError(f"data_dir must be a path (str or os.PathLike), got {type(data_dir).__name__}")
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
