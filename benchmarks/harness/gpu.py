"""Section 4, accelerator mode (`--device cuda --dtype bf16`): batch sweep of `generate_grounding`, samples/s and
model FLOPs utilisation (counted FLOPs / time / the device's peak). `--dry-run` runs the same code on the CPU
(the peak is then this CPU's measured matmul rate in that dtype)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from .common import Settings, batch_inputs, load_model, load_now, md_table, new_figure, save_figure
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


def run(settings: Settings) -> tuple[dict[str, Any], str, list[Path]]:
    device = settings.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"--device {device} asked for, but torch sees no CUDA device (torch {torch.__version__})"
        )
    dtype = parse_dtype(settings.dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    model, processor, pipe = load_model(settings.model_dir, device=device, dtype=dtype)
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
    batches = (
        [1, 2] if settings.dry_run else ([1, 8, 32] if settings.quick else [1, 2, 4, 8, 16, 32, 64, 128])
    )
    reps = settings.reps(10, 4, 1)
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
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    from .common import example_image, example_report, summarize, time_calls

    image, report = example_image(), example_report()
    pipeline_ms = summarize(
        time_calls(
            lambda: pipe(image, report=report, max_new_tokens=settings.max_new_tokens), reps, sync=sync
        )
    )
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
    md = "\n\n".join(
        [
            f"## Accelerator mode ({data['device_name']}, {settings.dtype}{', dry run on CPU' if settings.dry_run else ''})",
            f"Peak {peak:.4g} TFLOP/s ({source}); measured matmul {matmul['median_gflops']} GFLOP/s; pipeline "
            f"batch-1 p50 {pipeline_ms['p50_ms']} ms; load {data['load_1min']}.",
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
                    for r in rows
                ],
            ),
        ]
    )
    figure, axes = new_figure(2)
    axes[0].plot([r["batch"] for r in rows], [r["samples_per_s"] for r in rows], marker="o")
    axes[0].set_xscale("log", base=2)
    axes[0].set_xlabel("batch")
    axes[0].set_ylabel("samples/s")
    axes[1].plot([r["batch"] for r in rows], [r["mfu_percent"] for r in rows], marker="o")
    axes[1].set_xscale("log", base=2)
    axes[1].set_xlabel("batch")
    axes[1].set_ylabel("MFU %")
    plot = save_figure(figure, settings.out_dir / "bench_gpu.png")
    return data, md, [plot]
