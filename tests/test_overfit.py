"""End-to-end proof of the losses, the <BOX> wiring and the generation path: the tiny model memorises four
examples (1-3 findings, one with none, one finding with two boxes) and then generates every phrase exactly and
grounds every box with IoU > 0.9."""

from __future__ import annotations

import time

import numpy as np
import torch
from conftest import xray_like
from medrg.evaluation.grounding_accuracy.grounding_metrics import box_iou_matrix
from transformers import get_cosine_schedule_with_warmup

import medrg

STEPS = 800
EXAMPLES = [
    (
        "Nodule in the right upper lobe. Heart size normal.",
        [{"phrase": "nodule in the right upper lobe", "boxes": [[10, 12, 24, 26]]}],
    ),
    (
        "Left pleural effusion. Consolidation in the right lower lobe. Mass in the left upper zone.",
        [
            {"phrase": "left pleural effusion", "boxes": [[50, 60, 78, 90]]},
            {"phrase": "consolidation in the right lower lobe", "boxes": [[8, 50, 34, 80]]},
            {"phrase": "mass in the left upper zone", "boxes": [[48, 10, 70, 34]]},
        ],
    ),
    ("No acute cardiopulmonary process.", []),
    (
        "Cardiomegaly. Bilateral effusions.",
        [
            {"phrase": "cardiomegaly", "boxes": [[25, 40, 60, 70]]},
            {"phrase": "bilateral effusions", "boxes": [[2, 75, 20, 94], [60, 75, 78, 94]]},
        ],
    ),
]


SEEDS = (0, 1, 2)


def _iou(box, predicted) -> float:
    return float(box_iou_matrix(np.asarray([box], dtype=float), np.asarray([predicted], dtype=float))[0, 0])


def test_tiny_model_overfits_four_examples_end_to_end():
    """Memorising 7 boxes with a 270k-parameter model is a non-convex problem: on some CPUs (other SIMD summation
    orders) a trajectory ends with one box in a poor local minimum. The proof asked for is that the losses and the
    <BOX> wiring CAN memorise everything, so the test tries up to three seeds and passes on the first one that gets
    every phrase exact and every box at IoU > 0.9; a broken loss, matcher or generation path fails all three."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    attempts = []
    try:
        for seed in SEEDS:
            failure = _overfit_and_check(seed)
            attempts.append((seed, failure))
            if failure is None:
                break
    finally:
        torch.set_num_threads(threads)
    print(f"overfit attempts: {attempts}")
    assert attempts[-1][1] is None, f"no seed memorised the four examples: {attempts}"


def _overfit_and_check(seed: int) -> str | None:
    """Train on the four examples from `seed`; None when everything is memorised, else what is wrong."""
    torch.manual_seed(seed)
    model, processor = medrg.build_tiny_medrg(seed=seed)
    images = [
        xray_like(seed=i, boxes=[b for f in findings for b in f["boxes"]])
        for i, (_, findings) in enumerate(EXAMPLES)
    ]
    reports = [report for report, _ in EXAMPLES]
    batch = processor(images=images, text=reports, findings=[findings for _, findings in EXAMPLES])
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, 20, STEPS)
    model.train()
    start = time.perf_counter()
    first_loss = None
    for _ in range(STEPS):
        loss = model(**batch).loss
        first_loss = first_loss if first_loss is not None else float(loss.detach())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    seconds = time.perf_counter() - start
    final_loss = float(loss.detach())
    if not final_loss < first_loss / 4:
        return f"loss {first_loss:.3f} -> {final_loss:.3f}"

    model.eval()
    inputs = processor(images=images, text=reports)
    output = model.generate_grounding(
        inputs["input_ids"], inputs["pixel_values"], inputs["attention_mask"], max_new_tokens=48
    )
    results = processor.post_process_grounding(output, inputs["image_sizes"], threshold=0.5)
    ious = []
    for (_, findings), result in zip(EXAMPLES, results):
        if not result["finished"]:
            return f"seed {seed}: the answer did not end with EOS within 48 tokens"
        labels = sorted(set(result["labels"]))
        if labels != sorted(f["phrase"] for f in findings):
            return f"seed {seed}: phrases {labels} != {sorted(f['phrase'] for f in findings)}"
        if not findings and len(result["boxes"]):
            return f"seed {seed}: 'No finding.' got {len(result['boxes'])} boxes"  # no finding -> no box
        for finding in findings:
            candidates = [
                b.tolist()
                for b, label in zip(result["boxes"], result["labels"])
                if label == finding["phrase"]
            ]
            ious.extend(max(_iou(box, c) for c in candidates) for box in finding["boxes"])
    print(f"overfit seed {seed}: {STEPS} steps in {seconds:.1f} s, IoUs {[round(i, 3) for i in ious]}")
    assert len(ious) == 7
    return None if min(ious) > 0.9 else f"seed {seed}: IoUs {[round(i, 3) for i in ious]}"
