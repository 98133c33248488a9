"""The learning proof: a tiny MedRG trained from scratch on SynthCXR (CPU, 1500 steps: 5-15 minutes
depending on the machine) grounds held-out
reports at top-1 accuracy@0.5 >= 0.7, at least 0.3 above the text-only prior and above any image-only method
(~0.36, see benchmarks/results/synthcxr_baselines.md) by 0.3.

Measured 2026-11-29: 0.763 (mIoU 0.590; prior 0.313). The bar was 0.8 while the metric scored the best of the K
hypotheses of a phrase (0.904 then); since the evaluation scores the one box a user is shown (top_k=1) and the
tokenizer reads ordinary English (4x the vocabulary to learn in the same 1500 steps), 0.7 is the absolute bar and
the two relative bars carry the proof."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "synthcxr_tiny.yaml"
IMAGE_ONLY_BOUND = 0.36  # an oracle image-only detector that picks a random drawn lesion


@pytest.mark.slow
def test_tiny_medrg_learns_to_ground_synthcxr(tmp_path):
    from medrg.evaluation import evaluate_model

    from medrg.training import load_config
    from medrg.training.train import build_datasets, train

    config = load_config(CONFIG)
    config.training.output_dir = str(tmp_path / "run")
    started = time.perf_counter()
    summary = train(config)
    seconds = time.perf_counter() - started
    test = summary["metrics"]["test"]

    _, _, splits = build_datasets(config.data)
    prior = evaluate_model("prior", splits, split="test", train_split="train", show_progress=False)
    prior = prior.get("metrics", prior)
    report = {
        "seconds": round(seconds, 1),
        "medrg": {k: test[k] for k in ("accuracy@0.5", "mean_iou")},
        "prior": {k: prior[k] for k in ("accuracy@0.5", "mean_iou")},
    }
    print(json.dumps(report))  # the training time is reported, not asserted: speed lives in benchmarks/
    assert test["num_findings"] >= 300
    assert test["accuracy@0.5"] >= 0.7, report
    assert test["accuracy@0.5"] >= prior["accuracy@0.5"] + 0.3, report
    assert test["accuracy@0.5"] >= IMAGE_ONLY_BOUND + 0.3, report
