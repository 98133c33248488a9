"""Section 1, inference: cold start (fresh subprocesses), latency p50/p95 at batch 1 and 8, throughput, the time
split of one report over the model's public steps, peak RSS and RSS growth over many pipeline calls."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .common import (
    REPO_ROOT,
    Settings,
    example_image,
    example_report,
    load_model,
    load_now,
    md_table,
    new_figure,
    peak_rss_mib,
    report_with_findings,
    rss_mib,
    save_figure,
    summarize,
    time_calls,
)

SPLIT_PARTS = (
    "image_processing",
    "tokenization",
    "lm_prefill",
    "text_generation",
    "grounding_pass",
    "box_decoder",
    "post_processing",
)

_COLD_START_SCRIPT = r"""
import json, sys, time
t0 = time.perf_counter()
import medrg
t1 = time.perf_counter()
from transformers import pipeline
from medrg.loading import load_medrg
model, processor = load_medrg(sys.argv[1] if sys.argv[1] != "default" else "default")
pipe = pipeline("report-grounding", model=model, processor=processor)
t2 = time.perf_counter()
from PIL import Image
image = Image.open(sys.argv[2]).convert("L")
pipe(image, report=open(sys.argv[3]).read())
t3 = time.perf_counter()
print(json.dumps({"import_medrg_s": t1 - t0, "pipeline_load_s": t2 - t1, "first_call_s": t3 - t2}))
"""


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def _wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        command, check=True, capture_output=True, env=_subprocess_env(), cwd=REPO_ROOT, timeout=300
    )
    return time.perf_counter() - start


def cold_start(settings: Settings, model_dir: str | None) -> dict[str, Any]:
    """Fresh-interpreter timings (seconds, medians over repeats): `import medrg`, pipeline load, first call, the
    whole process, `medrg --help`, and an empty interpreter for reference."""
    reps = settings.reps(3, 2, 1)
    from .common import EXAMPLE_DIR

    runs = []
    for _ in range(reps):
        start = time.perf_counter()
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                _COLD_START_SCRIPT,
                model_dir or "default",
                str(EXAMPLE_DIR / "example_cxr.png"),
                str(EXAMPLE_DIR / "example_report.txt"),
            ],
            check=True,
            capture_output=True,
            text=True,
            env=_subprocess_env(),
            cwd=REPO_ROOT,
            timeout=600,
        )
        wall = time.perf_counter() - start
        row = json.loads(result.stdout.strip().splitlines()[-1])
        row["process_wall_s"] = wall
        runs.append(row)
    medrg_exe = shutil.which("medrg") or str(Path(sys.executable).with_name("medrg"))
    help_command = (
        [medrg_exe, "--help"] if Path(medrg_exe).exists() else [sys.executable, "-m", "medrg.cli", "--help"]
    )
    help_s = sorted(_wall(help_command) for _ in range(reps))
    bare_s = sorted(_wall([sys.executable, "-c", "pass"]) for _ in range(reps))
    out = {
        key: round(sorted(r[key] for r in runs)[len(runs) // 2], 4)
        for key in ("import_medrg_s", "pipeline_load_s", "first_call_s", "process_wall_s")
    }
    out["cold_start_total_s"] = round(out["import_medrg_s"] + out["pipeline_load_s"] + out["first_call_s"], 4)
    out["medrg_help_s"] = round(help_s[len(help_s) // 2], 4)
    out["python_bare_s"] = round(bare_s[len(bare_s) // 2], 4)
    out["repeats"] = reps
    out["load_1min"] = load_now()
    return out


class StepTimer:
    """Forward hooks (timing only, outputs untouched) on the model and its parts, to split one
    `generate_grounding` call into LM prefill, text generation, grounding pass and box decoder."""

    def __init__(self, model: torch.nn.Module, sync=None):
        self.model = model
        self.sync = sync or (lambda: None)
        self.spans: dict[str, list[tuple[float, float]]] = {}
        self._open: dict[str, list[float]] = {}
        self._handles = []
        # "top": the LM pass with image merge (MedRGModel), which both generation paths call once per step
        parts = {"top": model.model, "vision": model.model.vision_tower, "box_decoder": model.box_decoder}
        if model.model.grounding_encoder is not None:
            parts["grounding_encoder"] = model.model.grounding_encoder
        for name, module in parts.items():
            self._handles.append(module.register_forward_pre_hook(self._pre(name)))
            self._handles.append(module.register_forward_hook(self._post(name)))

    def _pre(self, name):
        def hook(module, args):
            self.sync()
            self._open.setdefault(name, []).append(time.perf_counter())

        return hook

    def _post(self, name):
        def hook(module, args, output):
            self.sync()
            self.spans.setdefault(name, []).append((self._open[name].pop(), time.perf_counter()))

        return hook

    def reset(self) -> None:
        self.spans, self._open = {}, {}

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()

    def total(self, name: str) -> float:
        return sum(end - start for start, end in self.spans.get(name, []))


def time_split(
    model,
    processor,
    image,
    report: str,
    reps: int,
    sync=None,
    device="cpu",
    batch: int = 1,
    max_new_tokens: int = 64,
    guided: bool = True,
) -> dict:
    """Median seconds per step of the pipeline's path for `batch` copies of (image, report), in ms per call
    (`guided`: with the report guide, as the pipeline runs by default)."""
    sync = sync or (lambda: None)
    timer = StepTimer(model, sync)
    samples: dict[str, list[float]] = {part: [] for part in SPLIT_PARTS}
    samples["total"], samples["vision_tower"] = [], []
    images, reports = [image] * batch, [report] * batch
    try:
        for rep in range(reps + 1):
            timer.reset()
            t0 = time.perf_counter()
            processor.image_processor(images, return_tensors="pt")
            t1 = time.perf_counter()
            # with `guided`, reading the report for the guide counts as tokenization (text preprocessing)
            inputs = processor(
                images=images, text=reports, return_tensors="pt", guided=guided, max_new_tokens=max_new_tokens
            )
            t2 = time.perf_counter()
            inputs = inputs.to(device)
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
            sync()
            t3 = time.perf_counter()
            output = model.generate_grounding(**inputs)
            sync()
            t4 = time.perf_counter()
            processor.post_process_grounding(output, target_sizes=inputs["image_sizes"])
            t5 = time.perf_counter()
            if rep == 0:  # warm-up
                continue
            tops = timer.spans["top"]
            # prefill: encoding the image (before or inside the first forward) + the prompt's LM pass
            encoded_before = sum(
                end - start
                for name in ("vision", "grounding_encoder")
                for start, end in timer.spans.get(name, [])
                if end <= tops[0][0]
            )
            prefill = tops[0][1] - tops[0][0] + encoded_before
            # one-pass grounding: the <BOX> states come from the generation's own steps; what follows the last LM
            # forward (gathering those states, the input embeddings, the box decoder) is the grounding
            generation_end = tops[-1][1]
            box = timer.total("box_decoder")
            samples["image_processing"].append(t1 - t0)
            samples["tokenization"].append(max((t2 - t1) - (t1 - t0), 0.0))
            samples["lm_prefill"].append(prefill)
            samples["text_generation"].append(generation_end - t3 - prefill)
            samples["grounding_pass"].append(max(t4 - generation_end - box, 0.0))
            samples["box_decoder"].append(box)
            samples["post_processing"].append(t5 - t4)
            samples["vision_tower"].append(timer.total("vision") + timer.total("grounding_encoder"))
            samples["total"].append((t1 - t0) + (t5 - t1))
    finally:
        timer.remove()
    medians = {k: round(sorted(v)[len(v) // 2] * 1e3, 3) for k, v in samples.items()}
    parts_sum = sum(medians[p] for p in SPLIT_PARTS)
    medians["share_percent"] = {p: round(100 * medians[p] / parts_sum, 2) for p in SPLIT_PARTS}
    medians["box_decoder_plus_grounding_pass_percent"] = round(
        100 * (medians["box_decoder"] + medians["grounding_pass"]) / parts_sum, 2
    )
    medians["generated_boxes"] = int(output.box_mask.sum())
    medians["generated_tokens"] = int(output.generated_mask.sum())
    medians["batch"] = batch
    return medians


def batch1_latency(settings: Settings, pipe, image, report: str, reps: int) -> dict[str, Any]:
    """Pipeline latency at batch 1 over `reps` calls, the torch thread count, and (with several threads, not in a
    dry run) the same calls on one thread for comparison."""
    mnt = settings.max_new_tokens
    b1 = time_calls(lambda: pipe(image, report=report, max_new_tokens=mnt), reps)
    result: dict[str, Any] = {"batch1": summarize(b1), "threads": torch.get_num_threads()}
    if torch.get_num_threads() > 1 and not settings.dry_run:
        # on a shared CPU, intra-op threads wait for each other: the same calls on one thread, for comparison
        original = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            result["batch1_one_thread"] = summarize(
                time_calls(lambda: pipe(image, report=report, max_new_tokens=mnt), reps)
            )
        finally:
            torch.set_num_threads(original)
    return result


def batch_large_throughput(settings: Settings, pipe, image, report: str, reps: int) -> dict[str, Any]:
    """Per-report latency of the pipeline at the large batch (the example and reports with 1-N findings), and
    reports/s of twice those reports at batch_size 1 vs the large batch (best of a few repeats)."""
    big, mnt = settings.batch, settings.max_new_tokens
    big_reports = ([report] + [report_with_findings(k % 10 + 1) for k in range(big - 1)])[:big]
    big_images = [image] * big
    timed = time_calls(
        lambda: pipe(big_images, report=big_reports, batch_size=big, max_new_tokens=mnt), max(reps // 4, 2)
    )
    reports_n = 2 * big
    both = (big_images * 2, big_reports * 2)
    repeats = settings.reps(3, 2, 1)
    t_b1 = min(time_calls(lambda: pipe(both[0], report=both[1], batch_size=1, max_new_tokens=mnt), repeats))
    t_big = min(
        time_calls(lambda: pipe(both[0], report=both[1], batch_size=big, max_new_tokens=mnt), repeats)
    )
    return {
        "batch_large": big,
        "batch_large_per_report": summarize([t / big for t in timed]),
        "throughput": {
            "reports": reports_n,
            "batch_large": big,
            "batch1_reports_per_s": round(reports_n / t_b1, 3),
            "batch_large_reports_per_s": round(reports_n / t_big, 3),
            "batch_large_over_batch1": round(t_b1 / t_big, 3),
            "note": f"{reports_n} reports ({big} different reports with 1-{big - 1} findings and the example, "
            f"twice) at batch_size 1 vs {big}",
        },
    }


def memory_growth(settings: Settings, pipe, image, report: str) -> dict[str, Any]:
    """RSS (MiB) after a short and after a long run of pipeline calls, its growth in %, and the peak RSS."""
    mnt = settings.max_new_tokens
    short, long = settings.reps(10, 10, 2), settings.reps(1000, 100, 4)
    for _ in range(short):
        pipe(image, report=report, max_new_tokens=mnt)
    rss_short = rss_mib()
    for _ in range(long - short):
        pipe(image, report=report, max_new_tokens=mnt)
    rss_long = rss_mib()
    return {
        "calls_short": short,
        "calls_long": long,
        "rss_mib_after_short": round(rss_short, 2),
        "rss_mib_after_long": round(rss_long, 2),
        "rss_growth_percent": round(100 * (rss_long - rss_short) / rss_short, 3),
        "peak_rss_mib": round(peak_rss_mib(), 2),
    }


def measure_model(settings: Settings, label: str, model_dir: str | None) -> dict[str, Any]:
    """Every inference measurement of one model: parameters, cold start, batch-1 latency, large-batch latency and
    throughput, the time split at batch 1 and at the large batch, and RSS growth."""
    model, processor, pipe = load_model(model_dir)
    image, report = example_image(), example_report()
    reps = settings.reps(40, 15, 3)
    result: dict[str, Any] = {"model": label, "parameters": sum(p.numel() for p in model.parameters())}
    result["cold_start"] = cold_start(settings, model_dir)
    result.update(batch1_latency(settings, pipe, image, report, reps))
    result.update(batch_large_throughput(settings, pipe, image, report, reps))
    big, mnt = settings.batch, settings.max_new_tokens
    result["split_batch1_ms"] = time_split(model, processor, image, report, reps, max_new_tokens=mnt)
    result["split_batch_large_ms"] = time_split(
        model, processor, image, report, max(reps // 4, 2), batch=big, max_new_tokens=mnt
    )
    result["memory"] = memory_growth(settings, pipe, image, report)
    result["load_1min"] = load_now()
    return result


def summary_table(models: dict[str, Any], batch: int) -> str:
    """The markdown table of one row per model: cold start, latency at batch 1 and `batch`, throughput, memory."""
    rows = []
    for name, r in models.items():
        rows.append(
            [
                name,
                r["cold_start"]["import_medrg_s"],
                r["cold_start"]["pipeline_load_s"],
                r["cold_start"]["first_call_s"],
                r["cold_start"]["cold_start_total_s"],
                r["cold_start"]["medrg_help_s"],
                r["batch1"]["p50_ms"],
                r["batch1"]["p95_ms"],
                r.get("batch1_one_thread", {}).get("p50_ms", "-"),
                r["batch_large_per_report"]["p50_ms"],
                r["batch_large_per_report"]["p95_ms"],
                r["throughput"]["batch1_reports_per_s"],
                r["throughput"]["batch_large_reports_per_s"],
                r["memory"]["peak_rss_mib"],
                f"{r['memory']['rss_growth_percent']} ({r['memory']['calls_short']}->{r['memory']['calls_long']})",
                r["load_1min"],
            ]
        )
    headers = [
        "model",
        "import medrg s",
        "pipeline load s",
        "first call s",
        "cold start total s",
        "medrg --help s",
        "b1 p50 ms",
        "b1 p95 ms",
        "b1 p50 ms (1 thread)",
        f"b{batch} p50 ms/report",
        f"b{batch} p95 ms/report",
        "b1 reports/s",
        f"b{batch} reports/s",
        "peak RSS MiB",
        "RSS growth % (calls)",
        "load 1-min",
    ]
    return md_table(headers, rows)


def split_table(models: dict[str, Any]) -> str:
    """The markdown table of the time split per model at batch 1 and at the large batch (ms and share per step,
    vision tower ms, generated tokens and `<BOX>`)."""
    split_rows = []
    for name, r in models.items():
        for key in ("split_batch1_ms", "split_batch_large_ms"):
            s = r[key]
            split_rows.append(
                [f"{name} b{s['batch']}"]
                + [f"{s[p]} ({s['share_percent'][p]}%)" for p in SPLIT_PARTS]
                + [s["vision_tower"], s["generated_tokens"], s["generated_boxes"]]
            )
    return md_table(
        ["model"] + list(SPLIT_PARTS) + ["vision tower ms", "generated tokens", "<BOX>"], split_rows
    )


def render_markdown(models: dict[str, Any], batch: int) -> str:
    """The section's markdown: the summary table per model, then the time split table with how it is taken."""
    return "\n\n".join(
        [
            "## Inference",
            f'torch threads {torch.get_num_threads()}; latency = one `pipeline("report-grounding")` call on the '
            "example X-ray and report; cold start = fresh interpreter (`import medrg`, pipeline load, first call).",
            summary_table(models, batch),
            "Time split of one report through the pipeline's steps (processor, `generate_grounding`, "
            "`post_process_grounding`; ms per call, median; share of the sum), timed by forward hooks that leave "
            "the outputs untouched. lm_prefill = encoding the image + the prompt's LM pass; text_generation = the "
            "decoding steps; grounding_pass = what follows the last LM step without the box decoder (the `<BOX>` "
            "states are taken from the generation's steps: no second pass over prompt + answer); vision_tower = time inside the vision tower over the whole call.",
            split_table(models),
        ]
    )


def plot(models: dict[str, Any], batch: int, path: Path) -> Path:
    """Write the section's figure to `path`: the batch-1 time split per step, and p50/p95 ms per report at batch 1
    and at `batch`, per model."""
    figure, axes = new_figure(2)
    for name, r in models.items():
        s = r["split_batch1_ms"]
        axes[0].bar(
            [p.replace("_", "\n") for p in SPLIT_PARTS], [s[p] for p in SPLIT_PARTS], label=name, alpha=0.7
        )
        axes[1].bar(
            [
                f"{name}\nb1 p50",
                f"{name}\nb1 p95",
                f"{name}\nb{batch} p50",
                f"{name}\nb{batch} p95",
            ],
            [
                r["batch1"]["p50_ms"],
                r["batch1"]["p95_ms"],
                r["batch_large_per_report"]["p50_ms"],
                r["batch_large_per_report"]["p95_ms"],
            ],
        )
    axes[0].set_ylabel("ms per report (batch 1)")
    axes[0].tick_params(axis="x", labelsize=7)
    axes[0].set_title("time split")
    axes[0].legend()
    axes[1].set_ylabel("ms per report")
    axes[1].set_title("latency")
    return save_figure(figure, path)


def run(settings: Settings) -> tuple[dict[str, Any], str, list[Path]]:
    """Measure the default model (and medrg-small when given); returns the data, the markdown and the figure."""
    models = {"default": measure_model(settings, "default", settings.model_dir)}
    if settings.small_dir:
        models["small"] = measure_model(settings, "small", settings.small_dir)
    md = render_markdown(models, settings.batch)
    plot_path = plot(models, settings.batch, settings.out_dir / "bench_inference.png")
    return {"models": models}, md, [plot_path]
