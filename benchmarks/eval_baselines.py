"""Measure the text-only baselines (``prior``, ``center``) with the MedRG evaluation runner.

Writes ``benchmarks/results/eval_baselines_<dataset>.json`` (full runner reports) and ``.md`` (table with
the published reference rows). Usage::

    python benchmarks/eval_baselines.py                       # synthcxr (test) and chestxray8 (validation)
    python benchmarks/eval_baselines.py --datasets synthcxr --max-samples 200
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from medrg.evaluation import evaluate_model, metrics_table
from medrg.evaluation.runner import per_category_table

ROOT = Path(__file__).resolve().parents[1]
# dataset name -> (split to evaluate, default data dir, paper rows to show)
DATASETS = {
    "synthcxr": ("test", None, None),
    "chestxray8": ("validation", str(ROOT.parent / "shared" / "data" / "chestxray8"), "ChestX-ray8"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--baselines", nargs="+", default=["prior", "center"])
    parser.add_argument(
        "--data-dir", action="append", default=[], help="NAME=DIR, overrides a dataset's folder"
    )
    parser.add_argument("--max-samples", type=int, default=None)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    overrides = dict(item.split("=", 1) for item in args.data_dir)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from medrg.processing.data import load_grounding_dataset

    for name in args.datasets:
        split, default_dir, paper = DATASETS[name]
        data_dir = overrides.get(name, default_dir)
        dataset = load_grounding_dataset(name, data_dir=data_dir)
        reports = []
        for baseline in args.baselines:
            start = time.perf_counter()
            report = evaluate_model(
                baseline, dataset, split=split, max_samples=args.max_samples, dataset_name=name
            )
            report["seconds"] = round(time.perf_counter() - start, 2)
            reports.append(report)
            print(
                f"{name}/{split} {baseline}: {json.dumps({k: report['metrics'][k] for k in ('accuracy@0.1', 'accuracy@0.3', 'accuracy@0.5', 'mean_iou')})}"
            )
        payload = {
            "dataset": name,
            "split": split,
            "data_dir": data_dir,
            "machine": {"python": platform.python_version(), "platform": platform.platform()},
            "reports": reports,
        }
        (out / f"eval_baselines_{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
        n = reports[0]["num_samples"] if reports else 0
        markdown = f"# Baselines on {name} ({split}, {n} samples)\n\n"
        markdown += (
            "Accuracies, mIoU, AP, phrase F1, no-finding accuracy in %; ECE and AURC as fractions.\n\n"
        )
        markdown += metrics_table([(r["model"], r["metrics"]) for r in reports], paper_dataset=paper)
        for report in reports:
            markdown += f"\n## {report['model']}: per category\n\n" + per_category_table(report["metrics"])
        (out / f"eval_baselines_{name}.md").write_text(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
