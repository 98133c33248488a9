"""Section 3, roofline: FLOPs per report (torch.utils.flop_counter) over the measured time, as a fraction of
this machine's dense-matmul rate measured in the same run, and where the rest of the time goes (torch.profiler
op table: Python/framework overhead, small kernels, memory-bound ops, compute ops)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from .common import Settings, batch_inputs, load_model, load_now, md_table, new_figure, save_figure

COMPUTE_OPS = (
    "mm",
    "bmm",
    "addmm",
    "baddbmm",
    "matmul",
    "linear",
    "conv",
    "scaled_dot_product",
    "flash_attention",
)
SMALL_KERNEL_US = 20.0  # an op whose average self time is below this is launch/dispatch-bound


def matmul_gflops(
    size: int, reps: int, dtype: torch.dtype = torch.float32, device: str = "cpu"
) -> dict[str, float]:
    """Dense `size x size` matmul rate (GFLOP/s): median and best of `reps` timed runs."""
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    torch.mm(a, b)
    sync()
    rates = []
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        sync()
        rates.append(2 * size**3 / (time.perf_counter() - start) / 1e9)
    rates.sort()
    return {
        "size": size,
        "median_gflops": round(rates[len(rates) // 2], 3),
        "best_gflops": round(rates[-1], 3),
    }


def count_flops(model, inputs: dict) -> int:
    """Total FLOPs of one `generate_grounding` call (matmuls, convolutions, attention; elementwise ops are not
    counted by torch's counter)."""
    with FlopCounterMode(display=False) as counter:
        model.generate_grounding(**inputs)
    return int(counter.get_total_flops())


def op_breakdown(model, inputs: dict, calls: int) -> dict[str, Any]:
    """Where the time of `calls` generate_grounding calls goes, per call (ms): aten ops by category, and the
    rest of the wall time (Python + framework overhead outside any aten op)."""
    from torch.profiler import ProfilerActivity, profile

    model.generate_grounding(**inputs)
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            model.generate_grounding(**inputs)
    wall_ms = (time.perf_counter() - start) * 1e3 / calls
    categories = {
        "compute (matmul/conv/attention)": 0.0,
        "small kernels (<20 us avg)": 0.0,
        "memory-bound/other ops": 0.0,
    }
    counts = dict.fromkeys(categories, 0)
    top = []
    for event in prof.key_averages():
        if not event.key.startswith("aten::"):
            continue
        self_ms = event.self_cpu_time_total / 1e3 / calls
        average_us = event.self_cpu_time_total / max(event.count, 1)
        name = event.key[len("aten::") :]
        if any(op in name for op in COMPUTE_OPS):
            category = "compute (matmul/conv/attention)"
        elif average_us < SMALL_KERNEL_US:
            category = "small kernels (<20 us avg)"
        else:
            category = "memory-bound/other ops"
        categories[category] += self_ms
        counts[category] += event.count // calls
        top.append(
            {
                "op": event.key,
                "self_ms_per_call": round(self_ms, 4),
                "calls_per_call": event.count // calls,
                "avg_us": round(average_us, 2),
                "category": category,
            }
        )
    ops_ms = sum(categories.values())
    categories["Python/framework overhead (wall - ops)"] = max(wall_ms - ops_ms, 0.0)
    counts["Python/framework overhead (wall - ops)"] = 0
    top.sort(key=lambda row: -row["self_ms_per_call"])
    return {
        "wall_ms_per_call_profiled": round(wall_ms, 3),
        "categories_ms": {k: round(v, 3) for k, v in categories.items()},
        "categories_percent": {k: round(100 * v / wall_ms, 2) for k, v in categories.items()},
        "op_calls_per_call": counts,
        "top_ops": top[:15],
        "note": "profiled times include the profiler's own overhead; the split is what matters",
    }


def roofline_at(
    model,
    processor,
    batch: int,
    reps: int,
    matmul: float,
    device="cpu",
    dtype=torch.float32,
    sync=None,
    max_new_tokens: int = 64,
) -> dict[str, Any]:
    sync = sync or (lambda: None)
    inputs = batch_inputs(processor, batch, device, dtype, max_new_tokens)
    flops = count_flops(model, inputs)
    model.generate_grounding(**inputs)
    times = []
    for _ in range(reps):
        sync()
        start = time.perf_counter()
        model.generate_grounding(**inputs)
        sync()
        times.append(time.perf_counter() - start)
    seconds = sorted(times)[len(times) // 2]
    achieved = flops / seconds / 1e9
    return {
        "batch": batch,
        "flops_per_call": flops,
        "mflops_per_report": round(flops / batch / 1e6, 3),
        "model_ms_per_call": round(seconds * 1e3, 3),
        "achieved_gflops": round(achieved, 4),
        "fraction_of_matmul": round(achieved / matmul, 5),
    }


def render_markdown(data: dict[str, Any], settings: Settings) -> str:
    """The section's markdown: the matmul rate, the roofline table per batch size, the time split by op category
    at batch 1 and at the large batch, and the top aten ops at batch 1."""
    matmul, breakdown, breakdown8 = data["matmul"], data["breakdown_batch1"], data["breakdown_batch8"]
    md_parts = [
        "## Roofline",
        f"Dense matmul ({matmul['size']}x{matmul['size']} fp32, {torch.get_num_threads()} threads): "
        f"{matmul['median_gflops']} GFLOP/s median ({matmul['best_gflops']} best); load {data['load_1min']}.",
        md_table(
            ["batch", "MFLOP/report", "model ms/call", "achieved GFLOP/s", "fraction of matmul"],
            [
                [
                    r["batch"],
                    r["mflops_per_report"],
                    r["model_ms_per_call"],
                    r["achieved_gflops"],
                    r["fraction_of_matmul"],
                ]
                for r in data["rows"]
            ],
        ),
        "Where the time goes (ms per generate_grounding call under torch.profiler):",
        md_table(
            ["category", "b1 ms", "b1 %", f"b{settings.batch} ms", f"b{settings.batch} %"],
            [
                [
                    k,
                    breakdown["categories_ms"][k],
                    breakdown["categories_percent"][k],
                    breakdown8["categories_ms"][k],
                    breakdown8["categories_percent"][k],
                ]
                for k in breakdown["categories_ms"]
            ],
        ),
        "Top aten ops (batch 1, self time per call):",
        md_table(
            ["op", "ms/call", "calls/call", "avg us", "category"],
            [
                [o["op"], o["self_ms_per_call"], o["calls_per_call"], o["avg_us"], o["category"]]
                for o in breakdown["top_ops"][:10]
            ],
        ),
    ]
    return "\n\n".join(md_parts)


def plot(data: dict[str, Any], path: Path) -> Path:
    """Write the section's figure to `path`: ms per report by op category (batch 1), and the matmul rate next to the
    model's achieved GFLOP/s per batch size."""
    breakdown, matmul, rows = data["breakdown_batch1"], data["matmul"], data["rows"]
    figure, axes = new_figure(2)
    labels = list(breakdown["categories_ms"])
    axes[0].barh([label.split(" (")[0] for label in labels], [breakdown["categories_ms"][k] for k in labels])
    axes[0].set_xlabel("ms per report (batch 1)")
    axes[1].bar(
        ["matmul"] + [f"model b{r['batch']}" for r in rows],
        [matmul["median_gflops"]] + [r["achieved_gflops"] for r in rows],
    )
    axes[1].set_yscale("log")
    axes[1].set_ylabel("GFLOP/s")
    return save_figure(figure, path)


def run(settings: Settings) -> tuple[dict[str, Any], str, list[Path]]:
    """Measure the matmul rate, the model's achieved FLOP/s at batch 1 and at the large batch, and the profiled op
    breakdown at both; returns the data, the markdown and the figure."""
    model, processor, _ = load_model(settings.model_dir)
    reps = settings.reps(20, 8, 2)
    matmul = matmul_gflops(256 if settings.dry_run else 1024, settings.reps(10, 5, 2))
    mnt = settings.max_new_tokens
    rows = [
        roofline_at(model, processor, batch, reps, matmul["median_gflops"], max_new_tokens=mnt)
        for batch in (1, settings.batch)
    ]
    breakdown = op_breakdown(model, batch_inputs(processor, 1, max_new_tokens=mnt), settings.reps(10, 4, 1))
    breakdown8 = op_breakdown(
        model, batch_inputs(processor, settings.batch, max_new_tokens=mnt), settings.reps(4, 2, 1)
    )
    data = {
        "matmul": matmul,
        "rows": rows,
        "breakdown_batch1": breakdown,
        "breakdown_batch8": breakdown8,
        "load_1min": load_now(),
    }
    return data, render_markdown(data, settings), [plot(data, settings.out_dir / "bench_roofline.png")]
