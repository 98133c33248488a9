"""MedRG benchmarks in one command: inference, scaling, roofline, accelerator mode.

    python benchmarks/run_all.py [--model DIR] [--small DIR] [--quick] [--dry-run] [--out benchmarks/results]
                                 [--device cuda --dtype bf16 --peak-tflops N] [--sections inference,scaling,...]
    python benchmarks/run_all.py --readme-table [--out DIR]    # print the README results section (markdown)

Writes per section `bench_<section>.json` (machine info and 1/5/15-min load at start and end, settings, data),
`bench_<section>.md` and `bench_<section>.png`; then `bench_targets.json/.md` (each target: measured, met, load)
and `bench_run.json` (command, runtime; `bench_run_<sections>.json` for a `--sections` run, which keeps the other
sections' earlier files for the targets). `--quick` shrinks repeats (RSS growth over 100 calls instead of 1,000);
`--dry-run` shrinks everything to a smoke test and runs the accelerator section on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import targets  # noqa: E402
from benchmarks.harness.common import Settings, machine_info, write_section  # noqa: E402

SECTIONS = ("inference", "scaling", "roofline", "gpu")
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="model folder (default: the embedded default model)")
    parser.add_argument(
        "--small", default=None, help="folder of medrg-small, measured in the inference section too"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="results folder (default benchmarks/results)"
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats (RSS growth over 100 calls)")
    parser.add_argument(
        "--dry-run", action="store_true", help="smoke test: minimal repeats, accelerator mode on CPU"
    )
    parser.add_argument("--device", default="cpu", help="device of the accelerator section (e.g. cuda)")
    parser.add_argument(
        "--dtype", default=None, help="bf16 | fp16 | fp32 for the accelerator section (default bf16)"
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="the device's peak TFLOP/s in --dtype"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for the run")
    parser.add_argument("--sections", default=None, help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument(
        "--readme-table", action="store_true", help="print the README results section and exit"
    )
    args = parser.parse_args(argv)
    if args.sections:
        unknown = sorted(set(args.sections.split(",")) - set(SECTIONS))
        if unknown:
            parser.error(f"--sections: unknown {unknown}; choose from {list(SECTIONS)}")
    return args


def readme_table(out_dir: Path) -> str:
    """The README results section, rendered from the `bench_*.md` files in `out_dir`."""
    run_file = out_dir / "bench_run.json"
    if not run_file.is_file():
        raise FileNotFoundError(f"{run_file} is missing: run `python benchmarks/run_all.py` first")
    run = json.loads(run_file.read_text())
    machine = run["machine_start"]
    lines = [
        "## Benchmarks",
        "",
        f"`{run['command']}` ({run['runtime_s']:.0f} s; {machine['cpus']} CPUs, torch {machine['torch']}, "
        f"{machine['torch_threads']} threads, 1/5/15-min load {machine['load_average']} at the start, "
        f"{run['machine_end']['load_average']} at the end; {run['machine_end']['time_utc']}).",
        "",
        "### Targets",
        "",
        (out_dir / "bench_targets.md").read_text().strip(),
    ]
    for section in SECTIONS:
        path = out_dir / f"bench_{section}.md"
        if path.is_file():
            text = path.read_text().strip().replace("\n## ", "\n### ")
            lines += ["", "#" + text if text.startswith("## ") else text]
            if (out_dir / f"bench_{section}.png").is_file():
                lines += ["", f"![{section}](benchmarks/results/bench_{section}.png)"]
    return "\n".join(lines) + "\n"


def make_settings(args: argparse.Namespace) -> Settings:
    """The sections' settings from the command line (sets torch's thread count first when --threads is given)."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    return Settings(
        model_dir=args.model,
        small_dir=args.small,
        out_dir=args.out,
        quick=args.quick,
        dry_run=args.dry_run,
        device=args.device,
        dtype=args.dtype or "bf16",
        peak_tflops=args.peak_tflops,
        threads=torch.get_num_threads(),
    )


def wanted_sections(args: argparse.Namespace) -> list[str]:
    """The sections to run: --sections, else all of them but the accelerator section on a plain CPU run."""
    wanted = args.sections.split(",") if args.sections else list(SECTIONS)
    if "gpu" in wanted and args.device == "cpu" and not args.dry_run and not args.sections:
        wanted.remove("gpu")  # accelerator mode needs --device (or --dry-run to try it on the CPU)
    return wanted


def run_section(section: str, settings: Settings, args: argparse.Namespace) -> dict:
    """Run one section, write its bench_<section>.json (machine at start and end, runtime, settings, data,
    plots) and .md, print the table; returns the section's data."""
    module = __import__(f"benchmarks.harness.{section}", fromlist=["run"])
    section_start = time.perf_counter()
    section_info = machine_info()
    print(f"[run_all] {section} ... (load {section_info['load_average']})", flush=True)
    data, markdown, plots = module.run(settings)
    payload = {
        "section": section,
        "machine_start": section_info,
        "machine_end": machine_info(),
        "runtime_s": round(time.perf_counter() - section_start, 2),
        "settings": {
            "quick": args.quick,
            "dry_run": args.dry_run,
            "model": args.model or "default",
            "small": args.small,
            "device": args.device,
            "dtype": settings.dtype,
        },
        "data": data,
        "plots": [p.name for p in plots],
    }
    write_section(args.out, section, payload, markdown)
    print(markdown + "\n", flush=True)
    return data


def add_earlier_results(results: dict, out_dir: Path) -> None:
    """Fill in the sections this run skipped from their earlier bench_<section>.json in ``out_dir``, if any (a
    partial run keeps the other sections' earlier results for the targets)."""
    for section in SECTIONS:
        earlier = out_dir / f"bench_{section}.json"
        if section not in results and earlier.is_file():
            results[section] = json.loads(earlier.read_text())["data"]


def write_run_record(
    args: argparse.Namespace, argv: list[str] | None, wanted: list[str], runtime: float, start_info, end_info
) -> None:
    """Write bench_run.json (bench_run_<sections>.json for a --sections run): command, runtime, sections and the
    machine at start and end."""
    command = "python benchmarks/run_all.py " + " ".join(sys.argv[1:] if argv is None else argv)
    run_name = "bench_run.json" if not args.sections else f"bench_run_{'_'.join(wanted)}.json"
    (args.out / run_name).write_text(
        json.dumps(
            {
                "command": command.strip(),
                "runtime_s": round(runtime, 2),
                "sections": wanted,
                "machine_start": start_info,
                "machine_end": end_info,
            },
            indent=2,
        )
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the wanted sections, evaluate the targets on their results and write every results file (or, with
    --readme-table, only print the README results section)."""
    args = parse_args(argv)
    if args.readme_table:
        print(readme_table(args.out), end="")
        return 0
    settings = make_settings(args)
    wanted = wanted_sections(args)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    start_info = machine_info()
    results = {section: run_section(section, settings, args) for section in wanted}
    add_earlier_results(results, args.out)
    rows = targets.evaluate(results)
    end_info = machine_info()
    write_section(args.out, "targets", {"machine_end": end_info, "rows": rows}, targets.markdown(rows))
    runtime = time.perf_counter() - start
    write_run_record(args, argv, wanted, runtime, start_info, end_info)
    print(targets.markdown(rows))
    print(f"\n[run_all] done in {runtime:.1f} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
