"""GPU check of the training path without `datasets`: Trainer on CUDA with bf16 + activation checkpointing on
SynthCXR rows generated in memory, then grounding accuracy on held-out SynthCXR.

    python scripts/gpu_train_check.py OUT_DIR [--steps 300] [--batch 64]

Writes OUT_DIR/gpu_train_check.json and prints one line 'GPU TRAIN CHECK {...}'.
Under `torchrun --nproc_per_node=N` it runs as DDP (each rank reports; rank 0 writes the file).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from medrg.evaluation import compute_grounding_metrics, predict_groundings
from medrg.processing.data.synthcxr import generate_example
from PIL import Image
from transformers import TrainingArguments

import medrg
from medrg.training.collator import MedRGDataCollator
from medrg.training.trainer import MedRGTrainer


def rows(split: str, count: int, image_size: int) -> list[dict]:
    out = []
    for index in range(count):
        row = generate_example(index, split=split, seed=0, image_size=image_size, encode=False).row
        array = row["image"]["array"] if isinstance(row["image"], dict) else row["image"]
        out.append({**row, "image": Image.fromarray(np.asarray(array))})
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--train-examples", type=int, default=4096)
    parser.add_argument("--test-examples", type=int, default=256)
    parser.add_argument(
        "--dry-run-cpu", action="store_true", help="a few steps on the CPU to check the script"
    )
    args = parser.parse_args()
    assert args.dry_run_cpu or torch.cuda.is_available(), "no CUDA device"
    rank = int(os.environ.get("RANK", "0"))
    torch.manual_seed(0)
    model, processor = medrg.build_tiny_medrg(
        seed=0, image_size=128, image_token_pooling=2, box_decoder_dim=64, box_decoder_ffn_dim=128
    )
    start = time.perf_counter()
    train_rows = rows("train", args.train_examples, 128)
    test_rows = rows("test", args.test_examples, 128)
    data_seconds = time.perf_counter() - start
    training_args = TrainingArguments(
        output_dir=os.path.join(args.out, "trainer"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        learning_rate=2e-3,
        warmup_steps=20,
        lr_scheduler_type="cosine",
        bf16=True,
        activation_checkpointing=True,
        logging_steps=50,
        save_strategy="no",
        report_to="none",
        remove_unused_columns=False,
        label_names=["labels", "target_boxes", "target_boxes_mask"],
        dataloader_num_workers=4,
        ddp_find_unused_parameters=True,
        seed=0,
        use_cpu=args.dry_run_cpu,
    )
    trainer = MedRGTrainer(
        model=model, args=training_args, train_dataset=train_rows, data_collator=MedRGDataCollator(processor)
    )
    if not args.dry_run_cpu:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = trainer.train()
    train_seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if not args.dry_run_cpu else 0.0
    model = trainer.model.eval()
    start = time.perf_counter()
    # the package's one prediction path (the same as the training callback and `medrg evaluate`)
    predictions = predict_groundings(model, processor, test_rows, batch_size=64)
    infer_seconds = time.perf_counter() - start
    metrics = compute_grounding_metrics(predictions, [r["findings"] for r in test_rows])
    report = {
        "device": torch.cuda.get_device_name(0) if not args.dry_run_cpu else "cpu",
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "rank": rank,
        "torch": torch.__version__,
        "bf16": True,
        "activation_checkpointing": bool(model.is_activation_checkpointing),
        "steps": args.steps,
        "batch_per_device": args.batch,
        "train_samples_per_second": round(args.steps * args.batch / train_seconds, 1),
        "trainer_reported_samples_per_second": result.metrics.get("train_samples_per_second"),
        "peak_gpu_memory_mib": round(peak, 1),
        "final_train_loss": round(float(result.training_loss), 4),
        "data_generation_seconds": round(data_seconds, 1),
        "inference_seconds_for_test": round(infer_seconds, 1),
        "synthcxr_test": {
            k: round(float(metrics[k]), 4)
            for k in ("accuracy@0.1", "accuracy@0.3", "accuracy@0.5", "mean_iou")
        },
    }
    print("GPU TRAIN CHECK", json.dumps(report), flush=True)
    if rank == 0:
        with open(os.path.join(args.out, "gpu_train_check.json"), "w") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
