"""Streamed data: `load_grounding_dataset(..., streaming=True)` and exported parquet folders give
`IterableDataset`s whose rows are made and decoded one at a time; training reads this rank's share
(`split_dataset_by_node`) with flat memory; streamed configs that cannot work are refused before any build."""

from __future__ import annotations

import time

import datasets
import numpy as np
import psutil
import pytest
import torch
from conftest import tiny_train_config
from medrg.processing.data import export_to_hub_folder, load_grounding_dataset

from medrg.training.collator import MedRGDataCollator
from medrg.training.config import load_config
from medrg.training.streaming import StreamPosition
from medrg.training.train import train

STREAMED_ROWS = 10_000


def test_ten_thousand_streamed_rows_pass_the_collator_with_flat_memory(tiny):
    """10,000 distinct SynthCXR rows, drawn as they are read, shuffled, decoded lazily and collated in batches of 50:
    the process's RSS after the last batch is within 10 % of its RSS after the first 1,000 rows."""
    _, processor = tiny
    torch.set_num_threads(1)
    splits = load_grounding_dataset(
        "synthcxr",
        examples_per_split={"train": STREAMED_ROWS},
        image_size=64,
        seed=0,
        streaming=True,
        progress=False,
    )
    assert isinstance(splits["train"], datasets.IterableDataset)
    stream = StreamPosition(splits["train"].shuffle(seed=0, buffer_size=500))
    loader = torch.utils.data.DataLoader(
        stream, batch_size=50, collate_fn=MedRGDataCollator(processor, drop_image_sizes=False)
    )
    process = psutil.Process()
    seen, rss, started = 0, {}, time.perf_counter()
    for batch in loader:
        assert batch["pixel_values"].shape[0] == 50 and torch.isfinite(batch["pixel_values"]).all()
        seen += 50
        if seen in (1_000, STREAMED_ROWS):
            rss[seen] = process.memory_info().rss
        if seen == STREAMED_ROWS:
            break
    seconds = time.perf_counter() - started
    growth = rss[STREAMED_ROWS] / rss[1_000] - 1
    print(
        f"streamed {seen} rows in {seconds:.1f} s; RSS {rss[1_000] >> 20} -> {rss[STREAMED_ROWS] >> 20} MiB ({growth:+.1%})"
    )
    assert stream.state_dict() == {"pass": 0, "rows": STREAMED_ROWS, "rank": 0, "world_size": 1}
    assert growth <= 0.10


def test_exported_parquet_folder_streams_and_splits_per_node(tmp_path):
    """`export_to_hub_folder` shards -> `load_grounding_dataset("parquet", streaming=True)`: the same rows as the
    in-memory split; two ranks read disjoint shares that together are every row, images decoded as PIL images."""
    built = load_grounding_dataset(
        "synthcxr", examples_per_split={"train": 48, "validation": 6}, image_size=64, seed=0, progress=False
    )
    folder = export_to_hub_folder(built, tmp_path / "hub", max_rows_per_shard=12)
    streamed = load_grounding_dataset("parquet", data_dir=folder, streaming=True)
    assert isinstance(streamed, datasets.IterableDatasetDict) and sorted(streamed) == ["train", "validation"]
    assert streamed["train"].n_shards == 4
    rows = list(streamed["train"])
    assert [r["image_id"] for r in rows] == built["train"]["image_id"]
    assert rows[5]["findings"] == built["train"][5]["findings"]
    assert np.array_equal(np.asarray(rows[5]["image"]), np.asarray(built["train"][5]["image"]))
    shares = []
    for rank in (0, 1):
        stream = StreamPosition(streamed["train"], rank=rank, world_size=2)
        reader = iter(stream)
        share = [next(reader) for _ in range(24)]
        assert all(hasattr(r["image"], "size") for r in share)  # PIL images, decoded as read
        assert stream.state_dict() == {"pass": 0, "rows": 24, "rank": rank, "world_size": 2}
        shares.append({r["image_id"] for r in share})
    assert not shares[0] & shares[1] and len(shares[0] | shares[1]) == 48


def test_training_on_a_streamed_parquet_folder_exports_a_model(tmp_path):
    built = load_grounding_dataset(
        "synthcxr", examples_per_split={"train": 24, "validation": 4}, image_size=64, seed=0, progress=False
    )
    folder = export_to_hub_folder(built, tmp_path / "hub", max_rows_per_shard=8)
    config = tiny_train_config(
        tmp_path / "run", training={"max_steps": 8}, export={"evaluate_splits": ["validation"]}
    )
    config["data"] = {
        "sources": [{"name": "parquet", "data_dir": str(folder), "options": {"streaming": True}}]
    }
    summary = train(config)
    assert summary["global_step"] == 8  # 32 rows from 24: the stream went on into its second pass
    assert set(summary["metrics"]) == {"validation"}
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"training": {"max_steps": -1}}, "training.max_steps must be set"),
        ({"training": {"dataloader_num_workers": 2}}, "training.dataloader_num_workers must be 0"),
        ({"mixed": True}, r"data.sources\[1\] \(synthcxr\) do not"),
        ({"data": {"shuffle_buffer_size": 0}}, "data.shuffle_buffer_size must be an integer >= 1"),
    ],
)
def test_streamed_configs_that_cannot_train_are_refused(tmp_path, change, message):
    config = tiny_train_config(tmp_path, **{k: v for k, v in change.items() if k != "mixed"})
    config["data"]["sources"][0]["options"]["streaming"] = True
    if change.get("mixed"):
        config["data"]["sources"].append(
            {"name": "synthcxr", "options": {"examples_per_split": {"train": 4}}}
        )
    with pytest.raises(ValueError, match=message):
        load_config(config)


def test_streaming_option_must_be_a_bool_and_position_must_match_the_world_size():
    with pytest.raises(TypeError, match="option streaming must be True or False, got 'yes'"):
        load_grounding_dataset("synthcxr", examples_per_split={"train": 2}, streaming="yes")
    splits = load_grounding_dataset(
        "synthcxr", examples_per_split={"train": 4}, image_size=64, streaming=True
    )
    stream = StreamPosition(splits["train"], rank=0, world_size=1)
    with pytest.raises(ValueError, match="saved by rank 0 of 2 processes; this is rank 0 of 1"):
        stream.load_state_dict({"pass": 0, "rows": 2, "rank": 0, "world_size": 2})
