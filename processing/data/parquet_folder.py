"""A folder written by ``export_to_hub_folder`` (``data/{split}-0000i-of-0000n.parquet`` + README.md) read back as
a grounding dataset: ``load_grounding_dataset("parquet", data_dir=folder, streaming=True)`` streams it shard by
shard (rows read and images decoded as they are consumed), the way to train on more rows than fit in memory."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .common import DataFormatError

_SHARD_NAME = re.compile(r"^(?P<split>[A-Za-z0-9_.]+)-\d{5}-of-\d{5}\.parquet$")


def parquet_split_files(data_dir: str | os.PathLike) -> dict[str, list[str]]:
    """split -> its parquet shard files (sorted) in ``data_dir/data``; DataFormatError naming the folder when
    there are none."""
    folder = Path(data_dir) / "data"
    if not folder.is_dir():
        raise DataFormatError(
            f"{data_dir}: no data/ folder (expected the parquet shards written by export_to_hub_folder)"
        )
    files: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.parquet")):
        match = _SHARD_NAME.match(path.name)
        if match is not None:
            files.setdefault(match.group("split"), []).append(str(path))
    if not files:
        raise DataFormatError(f"{folder}: no {{split}}-0000i-of-0000n.parquet shards")
    return files


def build_parquet_folder(
    data_dir: str | os.PathLike,
    cache_dir: str | None = None,
    progress: bool | None = None,
    streaming: bool = False,
):
    """The splits of an exported grounding folder with ``GROUNDING_FEATURES``; a ``DatasetDict`` or, with
    ``streaming``, an ``IterableDatasetDict`` (one shard per parquet file). Shards whose columns are not the
    grounding schema raise a ``DataFormatError`` naming the file. ``progress`` is accepted for the builders'
    uniform signature (``datasets`` shows its own progress)."""
    import datasets
    import pyarrow.parquet as pq

    from .schema import GROUNDING_FEATURES

    files = parquet_split_files(data_dir)
    expected = set(GROUNDING_FEATURES)
    for split_files in files.values():
        for file in split_files:
            columns = set(pq.read_schema(file).names)
            if columns != expected:
                raise DataFormatError(
                    f"{file}: columns {sorted(columns)} are not the grounding schema {sorted(expected)}"
                )
    return datasets.load_dataset(
        "parquet", data_files=files, features=GROUNDING_FEATURES, cache_dir=cache_dir, streaming=streaming
    )
