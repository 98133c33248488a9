"""Hub folder export: parquet shards + dataset card, and the load_dataset("parquet") round trip."""

from __future__ import annotations

import yaml
from datasets import load_dataset
from medrg.processing.data import GROUNDING_FEATURES, export_to_hub_folder, load_grounding_dataset


def test_export_round_trip(tmp_path):
    dd = load_grounding_dataset(
        "synthcxr",
        examples_per_split={"train": 5, "test": 3},
        image_size=64,
        cache_dir=str(tmp_path / "c"),
        progress=False,
    )
    out = export_to_hub_folder(dd, tmp_path / "hub", max_rows_per_shard=2)
    shards = sorted(p.name for p in (out / "data").glob("*.parquet"))
    assert shards[0] == "test-00000-of-00002.parquet" and len(shards) == 5
    card = (out / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["configs"][0]["data_files"] == [
        {"split": "train", "path": "data/train-*.parquet"},
        {"split": "test", "path": "data/test-*.parquet"},
    ]
    assert {s["name"]: s["num_examples"] for s in header["dataset_info"]["splits"]} == {"train": 5, "test": 3}
    assert (
        header["license"] and "No protected health information" in card and "## Source and citation" in card
    )
    assert [f["name"] for f in header["dataset_info"]["features"]] == list(GROUNDING_FEATURES)

    back = load_dataset(
        "parquet",
        data_files={s: str(out / f"data/{s}-*.parquet") for s in dd},
        cache_dir=str(tmp_path / "c2"),
    )
    for split in dd:
        assert back[split].features == GROUNDING_FEATURES
        a = dd[split].cast_column("image", dd[split].features["image"].__class__(decode=False))
        b = back[split].cast_column("image", back[split].features["image"].__class__(decode=False))
        assert a.to_list() == b.to_list()
    # the folder itself loads through the card's configs
    again = load_dataset(str(out), cache_dir=str(tmp_path / "c3"))
    assert again["train"].num_rows == 5 and again["train"].features == GROUNDING_FEATURES
