"""`MedRGDataCollator`: rows of the MedRG dataset schema -> teacher-forced model inputs for `transformers.Trainer`."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from .augment import GroundingAugmentation

REQUIRED_COLUMNS = ("image", "report", "findings")


def check_dataset_columns(dataset, name: str = "dataset") -> None:
    """Raise a ValueError naming the missing columns when `dataset` does not follow the grounding schema."""
    columns = getattr(dataset, "column_names", None)
    if columns is None:
        return
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ValueError(
            f"{name} lacks the grounding schema column(s) {missing}; it has {list(columns)}. Expected the columns "
            f"of medrg.processing.data.schema.GROUNDING_FEATURES (at least {list(REQUIRED_COLUMNS)})"
        )


class MedRGDataCollator:
    """Batch rows `{"image", "report", "findings": [{"phrase", "boxes"}, ...]}` into MedRG training inputs.

    The answer ("{phrase}<BOX>; ...") is teacher-forced: `labels` hold its ids (prompt, image tokens and
    padding are -100) and `target_boxes` / `target_boxes_mask` the boxes of each finding in the model frame.
    Use it with `Trainer(..., args=TrainingArguments(remove_unused_columns=False,
    label_names=["labels", "target_boxes", "target_boxes_mask"]), data_collator=MedRGDataCollator(processor))`.

    Args:
        processor: the model's [`MedRGProcessor`].
        augmentation: a [`GroundingAugmentation`] (or a dict of its fields) applied to each row; `None` for none.
        seed: seed of the augmentation's random stream (each collator call draws from it in order).
        drop_image_sizes: leave `image_sizes` out of the batch (only post-processing needs it).
    """

    def __init__(
        self,
        processor,
        augmentation: GroundingAugmentation | Mapping | None = None,
        seed: int = 0,
        drop_image_sizes: bool = True,
    ):
        self.processor = processor
        if isinstance(augmentation, Mapping):
            augmentation = GroundingAugmentation(**augmentation)
        self.augmentation = augmentation
        self.seed = seed
        self.rng = random.Random(seed)
        self.drop_image_sizes = drop_image_sizes

    def __call__(self, rows: Sequence[Mapping]) -> dict:
        if not rows:
            raise ValueError("MedRGDataCollator got an empty batch")
        images, reports, findings = [], [], []
        for index, row in enumerate(rows):
            missing = [c for c in REQUIRED_COLUMNS if c not in row]
            if missing:
                raise ValueError(
                    f"Row {index} lacks the grounding schema column(s) {missing}; got {sorted(row)}. Pass "
                    "TrainingArguments(remove_unused_columns=False) so Trainer keeps the dataset's columns"
                )
            if self.augmentation is not None:
                row = self.augmentation(dict(row), self.rng)
            images.append(row["image"])
            reports.append(row["report"])
            findings.append([{"phrase": f["phrase"], "boxes": f["boxes"]} for f in (row["findings"] or [])])
        batch = self.processor(images=images, text=reports, findings=findings)
        data = dict(batch)
        if self.drop_image_sizes:
            data.pop("image_sizes", None)
        return data


__all__ = ["MedRGDataCollator", "check_dataset_columns"]
