"""Streamed training data: a `datasets.IterableDataset` (`load_grounding_dataset(..., streaming=True)`) read one row
at a time, split per node with `datasets.distributed.split_dataset_by_node`, repeated pass after pass (reshuffled
each pass) so that no rank runs dry before `max_steps`, with a position that a checkpoint saves and resume
restores exactly.

The position is (pass, rows read in that pass) of this rank's share. It is exact because the DataLoader reads in
the training process (`dataloader_num_workers: 0`): every row handed out belongs to a batch that training consumed
when the checkpoint is written. Resume reads past the rows already trained on without decoding their images and
continues with the same order, on the same world size. Images are decoded lazily, row by row, as they are handed
to the collator.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch

STREAM_STATE_FILE = "medrg_stream_state_rank{rank}.json"


def is_streamed(dataset) -> bool:
    """True for a `datasets.IterableDataset` (a streamed split)."""
    import datasets

    return isinstance(dataset, datasets.IterableDataset)


def materialize(dataset, limit: int | None = None):
    """A streamed split as a list of its first `limit` rows (all rows when None): evaluation needs `len` and
    indexing. Any other dataset is returned as it is."""
    if not is_streamed(dataset):
        return dataset
    return list(dataset.take(limit) if limit is not None else dataset)


class StreamPosition(torch.utils.data.IterableDataset):
    """This rank's share of a streamed split, endless: pass after pass, each reshuffled by `set_epoch(pass)`
    (a no-op for an unshuffled stream), reading from the saved position on resume.

    Args:
        dataset: the streamed split (`datasets.IterableDataset`), shuffled or not.
        rank, world_size: this process and the number of processes (`split_dataset_by_node`).
    """

    def __init__(self, dataset, rank: int = 0, world_size: int = 1):
        import datasets
        from datasets.distributed import split_dataset_by_node

        self.rank, self.world_size = int(rank), int(world_size)
        # images stay encoded in the stream and are decoded here, only for the rows handed out (not for the rows
        # skipped on resume); `IterableDataset.skip` is not used: on a shuffled stream it changes the order
        self.image_feature = None
        if isinstance((dataset.features or {}).get("image"), datasets.Image):
            self.image_feature = datasets.Image()
            dataset = dataset.cast_column("image", datasets.Image(decode=False))
        self.dataset = split_dataset_by_node(dataset, rank=self.rank, world_size=self.world_size)
        self.pass_index = 0
        self.rows = 0

    def state_dict(self) -> dict:
        return {"pass": self.pass_index, "rows": self.rows, "rank": self.rank, "world_size": self.world_size}

    def load_state_dict(self, state: dict, where: str = "the stream state") -> None:
        if state.get("world_size") != self.world_size or state.get("rank") != self.rank:
            raise ValueError(
                f"{where} was saved by rank {state.get('rank')} of {state.get('world_size')} processes; this is "
                f"rank {self.rank} of {self.world_size}. A streamed run resumes on the number of processes it was "
                "saved with (each process reads its own share of the stream)"
            )
        self.pass_index, self.rows = int(state["pass"]), int(state["rows"])

    def __iter__(self) -> Iterator[dict]:
        if torch.utils.data.get_worker_info() is not None:
            raise ValueError(
                "a streamed training split is read in the training process: set training.dataloader_num_workers: 0 "
                "(the saved stream position is exact only then)"
            )
        while True:
            self.dataset.set_epoch(self.pass_index)
            skip, read = self.rows, 0
            for index, row in enumerate(self.dataset):
                read += 1
                if index < skip:
                    continue
                if self.image_feature is not None:
                    row["image"] = self.image_feature.decode_example(row["image"])
                self.rows += 1
                yield row
            if read == 0:
                raise ValueError(f"the streamed training split has no row for rank {self.rank}")
            self.pass_index += 1
            self.rows = 0

    def save(self, folder: str | Path) -> Path:
        """Write this rank's position into the checkpoint `folder`."""
        path = Path(folder) / STREAM_STATE_FILE.format(rank=self.rank)
        path.write_text(json.dumps(self.state_dict()) + "\n")
        return path

    def restore(self, folder: str | Path) -> None:
        """Read this rank's position from the checkpoint `folder` (ValueError naming the file when it is missing)."""
        path = Path(folder) / STREAM_STATE_FILE.format(rank=self.rank)
        if not path.is_file():
            raise ValueError(
                f"{folder} holds no stream position for rank {self.rank} ({path.name}): it was not written by a "
                "streamed run, so the streamed data cannot continue where it stopped"
            )
        self.load_state_dict(json.loads(path.read_text()), where=str(path))


__all__ = ["STREAM_STATE_FILE", "StreamPosition", "is_streamed", "materialize"]
