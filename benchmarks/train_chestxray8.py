"""MedRG vs the text-only prior on the ChestX-ray8 val split (../shared/data/chestxray8, patient-disjoint).

    # evaluate a trained MedRG folder (e.g. the embedded default) and the prior
    python benchmarks/train_chestxray8.py --model medrg/default_model
    # or train first with a config, then evaluate its exported folder
    python benchmarks/train_chestxray8.py --config configs/default_model.yaml

Writes benchmarks/results/train_chestxray8[_NAME].json and .md (accuracy@0.1/0.3/0.5 and mIoU, in %, beside
the published MedRG/uMedGround rows).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "chestxray8"
KEYS = ("accuracy@0.1", "accuracy@0.3", "accuracy@0.5", "mean_iou", "label_accuracy@0.5")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="a trained MedRG folder to evaluate")
    parser.add_argument("--config", help="train with this config first (its exported folder is evaluated)")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--split", default="validation")
    parser.add_argument("--out-name", default=None, help="suffix of the result files")
    args = parser.parse_args()
    if not (args.model or args.config):
        parser.error("pass --model or --config")

    from medrg.evaluation import PAPER_REFERENCE_ROWS, evaluate_model

    import medrg

    train_seconds = None
    model_path = args.model
    if args.config:
        from medrg.training import train

        started = time.perf_counter()
        summary = train(args.config)
        train_seconds = round(time.perf_counter() - started, 1)
        model_path = summary["export_dir"]
    data = medrg.load_grounding_dataset("chestxray8", data_dir=args.data_dir, progress=False)
    rows = []
    for name, target in (("prior (text only)", "prior"), (f"MedRG ({Path(model_path).name})", model_path)):
        report = evaluate_model(
            target, data, split=args.split, train_split="train", batch_size=16, show_progress=False
        )
        metrics = report["metrics"]
        rows.append(
            {"method": name, **{k: metrics[k] for k in KEYS}, "num_findings": metrics["num_findings"]}
        )
    result = {
        "dataset": "ChestX-ray8",
        "split": args.split,
        "model": str(model_path),
        "rows": rows,
        "train_seconds": train_seconds,
    }
    suffix = f"_{args.out_name}" if args.out_name else ""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"train_chestxray8{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# ChestX-ray8 {args.split} split ({rows[0]['num_findings']} findings): MedRG vs the text-only prior",
        "",
        f"Model: `{model_path}`. Values in %.",
        "",
        "| method | accuracy@0.1 | accuracy@0.3 | accuracy@0.5 | mIoU | label-aware accuracy@0.5 |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['method']} | " + " | ".join(f"{100 * row[k]:.2f}" for k in KEYS) + " |")
    for ref in PAPER_REFERENCE_ROWS:
        if ref["dataset"] == "ChestX-ray8":
            lines.append(
                f"| {ref['method']}, other split | "
                + " | ".join(f"{ref[k]:.2f}" if k in ref else "–" for k in KEYS)
                + " |"
            )
    (RESULTS / f"train_chestxray8{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
