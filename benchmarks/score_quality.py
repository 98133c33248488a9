"""Does the box score mean something? AUROC of the top box's score for "IoU >= 0.5", and its calibration error.

    python benchmarks/score_quality.py --model default
    python benchmarks/score_quality.py --model runs/medrg_small/final --name medrg-small --synthcxr-examples 100

Report-guided predictions (the pipeline's default), every phrase's top box, on ChestX-ray8 val (GPT and LLaMA
reports) and SynthCXR test (seed 0). AUROC 0.5 = the score says nothing, 1.0 = it separates hits from misses.
Writes benchmarks/results/score_quality_<name>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibrate_scores import DATA, ece, score_hit_pairs, write_results  # noqa: E402
from reading_reports import synthcxr_test_set  # noqa: E402


def auroc(scores, hits) -> float | None:
    """Probability that a hit outscores a miss (ties count half); None without both."""
    s, h = np.asarray(scores, dtype=float), np.asarray(hits, dtype=bool)
    pos, neg = s[h], s[~h]
    if not len(pos) or not len(neg):
        return None
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="default")
    parser.add_argument("--name", default=None)
    parser.add_argument("--synthcxr-examples", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--data-dir", default=str(DATA))
    args = parser.parse_args()

    import medrg
    from medrg.loading import load_medrg

    model, processor = load_medrg(args.model)
    model.eval()
    name = args.name or ("default" if args.model == "default" else Path(args.model).name)
    sets = {}
    for writer in ("gpt", "llama"):
        data = medrg.load_grounding_dataset(
            "chestxray8", data_dir=args.data_dir, reports=writer, progress=False
        )
        sets[f"ChestX-ray8 val, {writer} reports"] = list(data["validation"])
    size = processor.image_processor.image_size
    synth = synthcxr_test_set(size, args.synthcxr_examples)
    sets[f"SynthCXR test ({size} px)"] = list(synth["test"])
    a, b = processor.score_calibration
    rows = []
    for data_name, examples in sets.items():
        scores, hits = score_hit_pairs(model, processor, examples, args.batch_size)
        calibrated = processor.calibrate_scores(torch.tensor(scores, dtype=torch.float64))
        rows.append(
            {
                "data": data_name,
                "top_boxes": len(scores),
                "hit_rate": float(np.mean(hits)),
                "auroc": auroc(scores, hits),
                "ece_raw": ece(scores, hits),
                "ece_calibrated": ece(calibrated.tolist(), hits),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    result = {"model": name, "score_calibration": [a, b], "rows": rows}
    lines = [
        f"# Score quality: `{name}`",
        "",
        f"Report-guided, every phrase's top box; hit = IoU >= 0.5. Calibration `[a, b]` = {[a, b]} "
        "(`benchmarks/calibrate_scores.py`).",
        "",
        "| data | top boxes | hit rate | AUROC (score -> hit) | ECE raw | ECE calibrated |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        auc = "–" if row["auroc"] is None else f"{row['auroc']:.3f}"
        lines.append(
            f"| {row['data']} | {row['top_boxes']} | {100 * row['hit_rate']:.1f} % | {auc} | "
            f"{100 * row['ece_raw']:.1f} % | {100 * row['ece_calibrated']:.1f} % |"
        )
    write_results(f"score_quality_{name}", result, lines)


if __name__ == "__main__":
    main()
