"""Shared helpers of the benchmark sections: machine info (with the load), timing statistics, inputs (the
example X-ray, reports with N findings), a forced-answer logits processor, RSS, and writing JSON/markdown/PNG."""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DIR = REPO_ROOT / "medrg" / "default_model"

# ten finding phrases the processor's report format knows (MS-CXR / ChestX-ray8 style), used for the scaling runs
FINDING_PHRASES = (
    "right apical pulmonary nodule",
    "blunting of the right costophrenic angle",
    "left lower lobe consolidation",
    "left pleural effusion",
    "right upper lobe atelectasis",
    "enlarged cardiac silhouette",
    "left apical pneumothorax",
    "right lower lobe opacity",
    "right hilar mass",
    "left upper lobe nodule",
)
NORMAL_SENTENCES = (
    "The trachea is midline.",
    "The mediastinal contours are within normal limits.",
    "No acute osseous abnormality is seen.",
    "The visualized upper abdomen is unremarkable.",
    "Support devices are not present.",
    "The osseous structures are intact.",
)


@dataclass
class Settings:
    """What a run measures: `quick` shrinks repeats, `dry_run` shrinks everything to a smoke test."""

    model_dir: str | None
    small_dir: str | None
    out_dir: Path
    quick: bool
    dry_run: bool
    device: str
    dtype: str
    peak_tflops: float | None
    threads: int

    @property
    def max_new_tokens(self) -> int:
        """Generation budget of every call (64 as in the pipeline; 8 in a dry run, a forced answer still fits)."""
        return 8 if self.dry_run else 64

    @property
    def batch(self) -> int:
        """The large batch size of the latency/throughput/roofline runs (8; 2 in a dry run)."""
        return 2 if self.dry_run else 8

    def reps(self, full: int, quick: int, dry: int = 2) -> int:
        return dry if self.dry_run else (quick if self.quick else full)


def machine_info(threads: int | None = None) -> dict[str, Any]:
    """The machine and its load at this moment (1/5/15-min load averages, CPUs, torch threads)."""
    load = os.getloadavg()
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "torch_threads": threads if threads is not None else torch.get_num_threads(),
        "load_average": [round(v, 2) for v in load],
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def load_now() -> float:
    """1-minute load average (processes running or waiting for a CPU), rounded."""
    return round(os.getloadavg()[0], 2)


def summarize(seconds: Sequence[float]) -> dict[str, float]:
    """Milliseconds: p50, p95, mean, min over a list of durations in seconds."""
    values = sorted(seconds)
    if not values:
        raise ValueError("summarize needs at least one duration")

    def pct(q: float) -> float:
        position = (len(values) - 1) * q
        low, high = math.floor(position), math.ceil(position)
        return values[low] + (values[high] - values[low]) * (position - low)

    return {
        "p50_ms": round(pct(0.5) * 1e3, 3),
        "p95_ms": round(pct(0.95) * 1e3, 3),
        "mean_ms": round(statistics.fmean(values) * 1e3, 3),
        "min_ms": round(values[0] * 1e3, 3),
        "n": len(values),
    }


def time_calls(
    fn: Callable[[], Any], reps: int, warmup: int = 1, sync: Callable[[], None] | None = None
) -> list[float]:
    """Durations in seconds of `reps` calls of `fn` after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    out = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        out.append(time.perf_counter() - start)
    return out


def rss_mib() -> float:
    """Resident set size of this process now, MiB (Linux /proc; falls back to the peak)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mib()


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def example_image():
    """The example chest X-ray shipped with the default model (a PIL image)."""
    from PIL import Image

    with Image.open(EXAMPLE_DIR / "example_cxr.png") as image:
        return image.convert("L").copy()


def example_report() -> str:
    return (EXAMPLE_DIR / "example_report.txt").read_text()


def batch_inputs(
    processor, batch: int, device: str = "cpu", dtype: torch.dtype = torch.float32, max_new_tokens: int = 64
) -> dict:
    """`generate_grounding` keyword arguments for `batch` copies of the example X-ray and report."""
    inputs = processor(images=[example_image()] * batch, text=[example_report()] * batch, return_tensors="pt")
    return {
        "input_ids": inputs["input_ids"].to(device),
        "pixel_values": inputs["pixel_values"].to(device=device, dtype=dtype),
        "attention_mask": inputs["attention_mask"].to(device),
        "max_new_tokens": max_new_tokens,
    }


def report_with_findings(count: int, extra_sentences: int = 0) -> str:
    """A report stating the first `count` of FINDING_PHRASES (1-10), plus `extra_sentences` normal sentences."""
    if not 0 <= count <= len(FINDING_PHRASES):
        raise ValueError(f"count must be in 0..{len(FINDING_PHRASES)}, got {count}")
    normal = [NORMAL_SENTENCES[i % len(NORMAL_SENTENCES)] for i in range(extra_sentences)]
    findings = [f"There is {phrase}." for phrase in FINDING_PHRASES[:count]]
    impression = " ".join(f"{i + 1}. {p[0].upper() + p[1:]}." for i, p in enumerate(FINDING_PHRASES[:count]))
    return f"FINDINGS: Portable AP chest radiograph. {' '.join(findings + normal)}\n\nIMPRESSION: {impression or 'Normal.'}"


class ForcedAnswer:
    """A logits processor that makes greedy generation write a given answer (ids incl. EOS), then EOS.

    Used to measure the cost of an answer with N `<BOX>` independently of what the trained model would write.
    """

    def __init__(self, answer_ids: Sequence[int], prompt_length: int, eos_token_id: int):
        self.answer = list(answer_ids)
        self.prompt_length = prompt_length
        self.eos = eos_token_id

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - self.prompt_length
        token = self.answer[step] if step < len(self.answer) else self.eos
        forced = torch.full_like(scores, float("-inf"))
        forced[:, token] = 0.0
        return forced


def finite_numbers(value: Any) -> bool:
    """True when every number inside a nested dict/list is finite (None counts as missing, not finite)."""
    if isinstance(value, dict):
        return all(finite_numbers(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(finite_numbers(v) for v in value)
    if isinstance(value, bool) or isinstance(value, str):
        return True
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    return value is not None


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"a table row has {len(row)} cells for {len(headers)} columns: {list(row)}")
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(out_dir: Path, name: str, data: dict[str, Any], markdown: str) -> dict[str, Path]:
    """Write `bench_<name>.json` and `bench_<name>.md` under `out_dir`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"bench_{name}.json"
    md_path = out_dir / f"bench_{name}.md"
    json_path.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    md_path.write_text(markdown.rstrip() + "\n")
    return {"json": json_path, "md": md_path}


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if torch.is_tensor(value):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def new_figure(ncols: int = 1, width: float = 5.0, height: float = 3.6):
    """A matplotlib figure on the Agg backend (no display needed) with `ncols` axes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    return figure, list(axes[0])


def save_figure(figure, path: Path) -> Path:
    from matplotlib import pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def load_model(model_dir: str | None, device: str = "cpu", dtype: torch.dtype | None = None):
    """`(model, processor, pipeline)` for a saved folder (None: the embedded default) on `device`."""
    from transformers import pipeline

    from medrg.loading import load_medrg

    model, processor = load_medrg(model_dir or "default", dtype=dtype, device=device)
    pipe = pipeline("report-grounding", model=model, processor=processor, device=torch.device(device))
    return model, processor, pipe
