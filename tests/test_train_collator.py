"""MedRGDataCollator and GroundingAugmentation: schema rows -> teacher-forced inputs, box-consistent changes."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

import medrg
from medrg.training import GroundingAugmentation, MedRGDataCollator, check_dataset_columns, swap_sides


def make_rows(count: int = 4, seed: int = 0) -> list[dict]:
    rng = np.random.RandomState(seed)
    rows = []
    for i in range(count):
        image = (rng.rand(80, 96) * 60).astype(np.uint8)
        x0, y0 = 10 + 5 * i, 20
        image[y0 : y0 + 20, x0 : x0 + 16] = 230
        findings = (
            []
            if i == 0
            else [
                {
                    "phrase": "nodule in the right upper zone",
                    "category": "nodule",
                    "boxes": [[float(x0), float(y0), float(x0 + 16), float(y0 + 20)]],
                }
            ]
        )
        report = "Normal chest." if i == 0 else "There is a nodule in the right upper zone. No effusion."
        rows.append(
            {"image": Image.fromarray(image), "report": report, "findings": findings, "image_id": str(i)}
        )
    return rows


@pytest.fixture(scope="module")
def tiny_pair():
    return medrg.build_tiny_medrg(seed=0)


def test_collator_teacher_forces_answers(tiny_pair):
    model, processor = tiny_pair
    batch = MedRGDataCollator(processor)(make_rows())
    assert set(batch) == {
        "input_ids",
        "attention_mask",
        "labels",
        "pixel_values",
        "target_boxes",
        "target_boxes_mask",
    }
    labels = batch["labels"]
    assert (labels[batch["attention_mask"] == 0] == -100).all()
    assert (labels[batch["input_ids"] == processor.image_token_id] == -100).all()
    # every sample with a finding has exactly one <BOX> in its supervised answer
    boxes_in_answers = (labels == processor.box_token_id).sum(1).tolist()
    assert boxes_in_answers == [0, 1, 1, 1]
    assert batch["target_boxes_mask"].sum().item() == 3
    out = model(**batch)
    assert torch.isfinite(out.loss) and out.box_l1_loss is not None


def test_collator_names_missing_columns(tiny_pair):
    _, processor = tiny_pair
    rows = [{"image": Image.new("L", (32, 32)), "text": "x"}]
    with pytest.raises(ValueError, match=r"\['report', 'findings'\].*remove_unused_columns=False"):
        MedRGDataCollator(processor)(rows)
    datasets = pytest.importorskip("datasets")
    with pytest.raises(ValueError, match="lacks the grounding schema column"):
        check_dataset_columns(datasets.Dataset.from_dict({"image_path": ["a"], "report": ["r"]}))


def test_swap_sides_keeps_case_and_words():
    assert (
        swap_sides("Left lower lobe; right apex. LEFT. leftover")
        == "Right lower lobe; left apex. RIGHT. leftover"
    )


def test_flip_swaps_words_and_boxes():
    row = make_rows()[2]
    aug = GroundingAugmentation(
        scale=0, translate=0, brightness=0, contrast=0, hflip_probability=1, probability=1
    )
    out = aug(row, random.Random(0))
    assert out["report"] == "There is a nodule in the left upper zone. No effusion."
    assert out["findings"][0]["phrase"] == "nodule in the left upper zone"
    x0, y0, x1, y1 = row["findings"][0]["boxes"][0]
    assert out["findings"][0]["boxes"][0] == [96 - x1, y0, 96 - x0, y1]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_scale_translate_moves_boxes_with_pixels(seed):
    row = make_rows()[1]
    aug = GroundingAugmentation(scale=0.2, translate=0.1, brightness=0, contrast=0, probability=1)
    out = aug(row, random.Random(seed))
    array = np.asarray(out["image"])
    ys, xs = np.nonzero(array > 150)
    drawn = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    assert np.allclose(drawn, out["findings"][0]["boxes"][0], atol=1.6)


def test_augmentation_rejects_bad_values():
    with pytest.raises(ValueError, match="GroundingAugmentation.scale"):
        GroundingAugmentation(scale=2.0)


def test_plain_trainer_trains_with_the_collator(tmp_path, tiny_pair):
    datasets = pytest.importorskip("datasets")
    from transformers import Trainer, TrainingArguments

    _, processor = tiny_pair
    model, _ = medrg.build_tiny_medrg(seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = make_rows(8)
    from medrg.processing.data.schema import GROUNDING_FEATURES as features

    table = {k: [r.get(k, "") for r in rows] for k in ("image", "report", "findings", "image_id")}
    table["patient_id"] = table["image_id"]
    table["source"] = ["test"] * len(rows)
    dataset = datasets.Dataset.from_dict(table, features=features)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        use_cpu=True,
        remove_unused_columns=False,
        label_names=["labels", "target_boxes", "target_boxes_mask"],
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=dataset, data_collator=MedRGDataCollator(processor)
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is faster, and much faster on a busy machine
    try:
        result = trainer.train()
    finally:
        torch.set_num_threads(threads)
    assert np.isfinite(result.training_loss)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("box_decoder") for k in changed) and any("language_model" in k for k in changed)
