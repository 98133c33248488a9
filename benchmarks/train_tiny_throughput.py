"""Training throughput (samples/s) and peak memory (RSS) of the tiny MedRG configs on CPU with Trainer.

    python benchmarks/train_tiny_throughput.py [--steps 60] [--threads 1]

Writes benchmarks/results/train_tiny_throughput.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"

CASES = {
    # name: (model section, batch size)
    "tiny 64px (tests)": ({"source": "tiny", "image_size": 64}, 8),
    "tiny 96px pool 2, decoder 64 (learning proof)": (
        {
            "source": "tiny",
            "image_size": 96,
            "overrides": {"image_token_pooling": 2, "box_decoder_dim": 64, "box_decoder_ffn_dim": 128},
        },
        16,
    ),
}


def measure(name: str, model: dict, batch: int, steps: int, threads: int, out: Path) -> dict:
    from medrg.training.train import build_trainer

    size = model["image_size"]
    config = {
        "model": model,
        "data": {
            "sources": [
                {
                    "name": "synthcxr",
                    "options": {
                        "examples_per_split": {"train": 512, "validation": 8},
                        "image_size": size,
                        "seed": 0,
                        "progress": False,
                    },
                }
            ]
        },
        "training": {
            "output_dir": str(out),
            "max_steps": steps,
            "save_strategy": "no",
            "per_device_train_batch_size": batch,
            "learning_rate": 1e-3,
            "logging_steps": steps,
            "use_cpu": True,
            "torch_threads": threads,
            "seed": 0,
        },
    }
    trainer, _, _ = build_trainer(config)
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    return {
        "case": name,
        "batch_size": batch,
        "steps": steps,
        "threads": threads,
        "wall_seconds": round(wall, 2),
        "samples_per_second": round(steps * batch / wall, 1),
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="/tmp/medrg_throughput")
    args = parser.parse_args()
    rows = [
        measure(name, model, batch, args.steps, args.threads, Path(args.out) / str(i))
        for i, (name, (model, batch)) in enumerate(CASES.items())
    ]
    info = {
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "note": "peak RSS is of the whole process (cumulative over cases, includes the data build); "
        "samples/s depends strongly on other load on the machine (see load_average_1min_at_end)",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "train_tiny_throughput.json").write_text(
        json.dumps({"info": info, "rows": rows}, indent=2) + "\n"
    )
    lines = [
        "# Tiny MedRG training throughput on CPU (transformers.Trainer)",
        "",
        f"torch {info['torch']}, {info['cpus']} CPUs, {args.threads} thread(s), {args.steps} steps per case, "
        f"1-min load average at the end {info['load_average_1min_at_end']}; {info['note']}.",
        "",
        "| case | batch | samples/s | parameters | peak RSS (MiB) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['batch_size']} | {r['samples_per_second']} | {r['parameters']:,} | "
            f"{r['peak_rss_mib']} |"
        )
    (RESULTS / "train_tiny_throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
