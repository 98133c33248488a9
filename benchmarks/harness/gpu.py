"""Section 4, accelerator mode (`--device cuda --dtype bf16`): batch sweep of `generate_grounding`, samples/s and
model FLOPs utilisation (counted FLOPs / time / the device's peak). `--dry-run` runs the same code on the CPU
(the peak is then this CPU's measured matmul rate in that dtype)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from . import common
from .common import (
    Settings,
    batch_inputs,
    load_model,
    load_now,
    md_table,
    new_figure,
    save_figure,
    summarize,
    time_calls,
)
from .roofline import count_flops, matmul_gflops

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# dense (no sparsity) peak TFLOP/s per dtype of common accelerators, from the vendors' data sheets
PEAK_TFLOPS = {
    "H200": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "H100": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "A100": {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5},
    "L40S": {"bf16": 362.0, "fp16": 362.0, "fp32": 91.6},
    "L4": {"bf16": 121.0, "fp16": 121.0, "fp32": 30.3},
    "A10": {"bf16": 125.0, "fp16": 125.0, "fp32": 31.2},
    "V100": {"fp16": 125.0, "fp32": 15.7},
    "T4": {"fp16": 65.0, "fp32": 8.1},
}


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"--dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def device_peak_tflops(device: str, dtype_name: str, given: float | None) -> tuple[float | None, str]:
    """The device's peak TFLOP/s in `dtype_name` and where it came from (None when unknown)."""
    if given is not None:
        return given, "--peak-tflops"
    if device.startswith("cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name(torch.device(device))
        for key, peaks in PEAK_TFLOPS.items():
            if key in name and dtype_name in peaks:
                return peaks[dtype_name], f"table ({name})"
        return None, f"unknown device {name!r}: pass --peak-tflops"
    return None, "cpu"


def peak_and_matmul(settings: Settings, dtype: torch.dtype) -> tuple[float, str, dict[str, float]]:
    """The peak TFLOP/s the MFU is taken against and where it came from, and the dense-matmul rate measured on the
    device in `dtype` (which stands in for the peak when neither --peak-tflops nor the table gives one)."""
    device = settings.device
    peak, source = device_peak_tflops(device, settings.dtype, settings.peak_tflops)
    matmul = matmul_gflops(
        256 if settings.dry_run else 4096 if device != "cpu" else 1024,
        settings.reps(10, 5, 2),
        dtype=dtype,
        device=device,
    )
    if peak is None:
        peak, source = (
            matmul["median_gflops"] / 1e3,
            f"measured {settings.dtype} matmul on {device} (no table entry)",
        )
    return peak, source, matmul


def batch_sweep(
    settings: Settings, model, processor, dtype: torch.dtype, sync, peak: float, reps: int
) -> list[dict[str, Any]]:
    """Per batch size: median ms of `generate_grounding` over `reps` calls (after one warm-up), samples/s, counted
    GFLOP per call, achieved TFLOP/s and MFU against `peak`."""
    device = settings.device
    batches = (
        [1, 2] if settings.dry_run else ([1, 8, 32] if settings.quick else [1, 2, 4, 8, 16, 32, 64, 128])
    )
    rows = []
    for batch in batches:
        inputs = batch_inputs(processor, batch, device, dtype, settings.max_new_tokens)
        flops = count_flops(model, inputs)
        model.generate_grounding(**inputs)
        sync()
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            model.generate_grounding(**inputs)
            sync()
            times.append(time.perf_counter() - start)
        seconds = sorted(times)[len(times) // 2]
        rows.append(
            {
                "batch": batch,
                "ms_per_call": round(seconds * 1e3, 3),
                "samples_per_s": round(batch / seconds, 3),
                "gflops_per_call": round(flops / 1e9, 6),
                "achieved_tflops": round(flops / seconds / 1e12, 6),
                "mfu_percent": round(100 * flops / seconds / 1e12 / peak, 5),
            }
        )
    return rows


def pipeline_batch1(settings: Settings, pipe, sync, reps: int) -> dict[str, float]:
    """Latency statistics of the pipeline on the example X-ray and report at batch 1 on the device (on CUDA, the
    peak-memory statistics are reset first)."""
    if settings.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    image, report = common.example_image(), common.example_report()
    return summarize(
        time_calls(
            lambda: pipe(image, report=report, max_new_tokens=settings.max_new_tokens), reps, sync=sync
        )
    )


def render_markdown(data: dict[str, Any], settings: Settings) -> str:
    """The section's markdown: device, dtype, peak and its source, matmul rate, pipeline latency, and the batch
    sweep table."""
    matmul, pipeline_ms = data["matmul"], data["pipeline_batch1"]
    return "\n\n".join(
        [
            f"## Accelerator mode ({data['device_name']}, {settings.dtype}{', dry run on CPU' if settings.dry_run else ''})",
            f"Peak {data['peak_tflops']:.4g} TFLOP/s ({data['peak_source']}); measured matmul "
            f"{matmul['median_gflops']} GFLOP/s; pipeline batch-1 p50 {pipeline_ms['p50_ms']} ms; "
            f"load {data['load_1min']}.",
            md_table(
                ["batch", "ms/call", "samples/s", "GFLOP/call", "TFLOP/s", "MFU %"],
                [
                    [
                        r["batch"],
                        r["ms_per_call"],
                        r["samples_per_s"],
                        r["gflops_per_call"],
                        r["achieved_tflops"],
                        r["mfu_percent"],
                    ]
                    for r in data["rows"]
                ],
            ),
        ]
    )


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write the section's figure to `path`: samples/s and MFU % vs batch size."""
    figure, axes = new_figure(2)
    axes[0].plot([r["batch"] for r in rows], [r["samples_per_s"] for r in rows], marker="o")
    axes[0].set_xscale("log", base=2)
    axes[0].set_xlabel("batch")
    axes[0].set_ylabel("samples/s")
    axes[1].plot([r["batch"] for r in rows], [r["mfu_percent"] for r in rows], marker="o")
    axes[1].set_xscale("log", base=2)
    axes[1].set_xlabel("batch")
    axes[1].set_ylabel("MFU %")
    return save_figure(figure, path)


def run(settings: Settings) -> tuple[dict[str, Any], str, list[Path]]:
    """Load the model on the device in the dtype, take the peak and the matmul rate, sweep the batch size and time
    the pipeline at batch 1; returns the data, the markdown and the figure."""
    device = settings.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"--device {device} asked for, but torch sees no CUDA device (torch {torch.__version__})"
        )
    dtype = parse_dtype(settings.dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    model, processor, pipe = load_model(settings.model_dir, device=device, dtype=dtype)
    peak, source, matmul = peak_and_matmul(settings, dtype)
    reps = settings.reps(10, 4, 1)
    rows = batch_sweep(settings, model, processor, dtype, sync, peak, reps)
    pipeline_ms = pipeline_batch1(settings, pipe, sync, reps)
    data = {
        "device": device,
        "device_name": torch.cuda.get_device_name(torch.device(device))
        if device.startswith("cuda")
        else "cpu",
        "dtype": settings.dtype,
        "dry_run": settings.dry_run,
        "peak_tflops": peak,
        "peak_source": source,
        "matmul": matmul,
        "rows": rows,
        "pipeline_batch1": pipeline_ms,
        "load_1min": load_now(),
    }
    return data, render_markdown(data, settings), [plot(rows, settings.out_dir / "bench_gpu.png")]
