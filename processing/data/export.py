"""Export a grounding ``DatasetDict`` as a hub-ready folder: ``data/{split}-0000i-of-0000n.parquet`` + README.md."""

from __future__ import annotations

import math
import os
from pathlib import Path


def export_to_hub_folder(
    dataset_dict,
    out_dir: str | os.PathLike,
    source: str | None = None,
    max_rows_per_shard: int = 2000,
    pretty_name: str | None = None,
    license: str | None = None,
    description: str | None = None,
    citation: str | None = None,
) -> Path:
    """Write parquet shards and a dataset card; returns ``out_dir``.

    The folder loads back with ``load_dataset(out_dir)`` or ``load_dataset("parquet", data_files=...)``
    with identical features and rows (images are stored as PNG bytes inside the parquet).
    """
    from datasets import DatasetInfo
    from medrg.hub_cards.dataset_card import render_dataset_card

    from .schema import GROUNDING_FEATURES

    out = Path(out_dir)
    (out / "data").mkdir(parents=True, exist_ok=True)
    data_files, sizes = {}, {}
    for split, ds in dataset_dict.items():
        if ds.features != GROUNDING_FEATURES:
            raise ValueError(f"split {split!r} does not have GROUNDING_FEATURES: {ds.features}")
        n = max(1, math.ceil(ds.num_rows / max_rows_per_shard))
        for old in (out / "data").glob(f"{split}-*.parquet"):
            old.unlink()
        for i in range(n):
            shard = ds.shard(num_shards=n, index=i, contiguous=True)
            shard.to_parquet(str(out / "data" / f"{split}-{i:05d}-of-{n:05d}.parquet"))
        data_files[split] = f"data/{split}-*.parquet"
        sizes[split] = ds.num_rows
    if source is None:
        first = next(iter(dataset_dict.values()))
        source = first[0]["source"].split(":")[0] if first.num_rows else "unknown"
    features_yaml = DatasetInfo(features=GROUNDING_FEATURES)._to_yaml_dict()["features"]
    card = render_dataset_card(
        features_yaml, sizes, source, data_files, pretty_name=pretty_name, license=license,
        description=description, citation=citation,
    )  # fmt: skip
    (out / "README.md").write_text(card, encoding="utf-8")
    return out
