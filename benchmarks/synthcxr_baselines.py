"""SynthCXR: generation speed and the baselines that show grounding needs report AND image.

Measures, on the test split (accuracy@0.5 = IoU >= 0.5 between the predicted box and the finding's box):
  (a) text-only prior: the mean TRAIN box for (category, side, zone), given the test finding's true
      category/side/zone -- an upper bound for any method that reads only the report;
  (b) image-only oracle detector: knows the exact box of every drawn lesion (mentioned and distractor)
      but not the report. "random": expected accuracy of picking one lesion uniformly; "largest": always
      the largest lesion. Any image-only method is bounded by picking among these boxes without text;
  (c) report + image oracle: category and side parsed from the phrase, matched to the drawn lesions --
      checks that report + image determine every answer (should be 1.0).
Writes benchmarks/results/synthcxr_baselines.json + .md and docs/synthcxr_examples.png.

Usage: python benchmarks/synthcxr_baselines.py [--train 2000] [--test 500] [--seed 0] [--image-size 256]
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from medrg.evaluation.grounding_accuracy.grounding_metrics import box_iou_matrix, names_category
from medrg.processing.data.synthcxr import CATEGORIES, build_synthcxr, generate_example

ROOT = Path(__file__).resolve().parents[1]


def iou(a, b) -> float:
    """IoU of two xyxy boxes (the package's one implementation, ``box_iou_matrix``)."""
    return float(box_iou_matrix([a], [b])[0, 0])


def parse_phrase(phrase: str) -> tuple[str, str]:
    """(category, side) a phrase names: category by the metric's label rule (``names_category``)."""
    p = phrase.lower()
    category = next(c for c in CATEGORIES if names_category(phrase, c))
    side = "right" if "right" in p else ("left" if ("left" in p or "lingul" in p) else "")
    return category, side


def time_build(seed: int, image_size: int, timing_images: int) -> tuple[float, float]:
    """(wall, CPU) seconds of the full datasets build (drawing, PNG encoding, arrow writing) of ``timing_images``
    train images into a temporary cache."""
    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), time.process_time()
        dd = build_synthcxr(
            examples_per_split={"train": timing_images}, seed=seed, image_size=image_size, cache_dir=tmp
        )
        build_s, build_cpu_s = time.perf_counter() - t0, time.process_time() - c0
        assert dd["train"].num_rows == timing_images
    return build_s, build_cpu_s


def fit_prior(train: list) -> dict[tuple, np.ndarray]:
    """The text-only prior: the mean box of the mentioned train lesions per (category, side, zone) and, as the
    fallback, per (category,)."""
    sums: dict[tuple, np.ndarray] = defaultdict(lambda: np.zeros(4))
    counts: dict[tuple, int] = defaultdict(int)
    for ex in train:
        for le in ex.lesions:
            if le.mentioned:
                for key in ((le.category, le.side, le.zone), (le.category,)):
                    sums[key] += np.asarray(le.box)
                    counts[key] += 1
    return {k: sums[k] / counts[k] for k in sums}


def score_test(test: list, prior: dict[tuple, np.ndarray]) -> dict:
    """Hits (IoU >= 0.5) over the mentioned test findings of the text-only prior, the image-only oracle (random
    lesion: expected; largest lesion) and the report + image oracle, with the number of findings and per category
    [prior hits, random-lesion hits, findings]."""
    text_hits, rand_hits, large_hits, oracle_hits, n = 0.0, 0.0, 0.0, 0.0, 0
    per_cat: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for ex in test:
        cands = [le.box for le in ex.lesions]
        largest = max(cands, key=lambda b: (b[2] - b[0]) * (b[3] - b[1])) if cands else None
        for le in ex.lesions:
            if not le.mentioned:
                continue
            n += 1
            key = (le.category, le.side, le.zone)
            pbox = prior.get(key, prior.get((le.category,)))
            t = float(iou(pbox, le.box) >= 0.5)
            r = sum(iou(c, le.box) >= 0.5 for c in cands) / len(cands)
            text_hits += t
            rand_hits += r
            large_hits += float(iou(largest, le.box) >= 0.5)
            cat, side = parse_phrase(le.phrase)
            match = [o for o in ex.lesions if o.category == cat and o.side == side]
            oracle_hits += float(len(match) == 1 and iou(match[0].box, le.box) >= 0.5)
            pc = per_cat[le.category]
            pc[0] += t
            pc[1] += r
            pc[2] += 1
    return {
        "text": text_hits,
        "random": rand_hits,
        "largest": large_hits,
        "oracle": oracle_hits,
        "n": n,
        "per_cat": per_cat,
    }


def run(n_train: int, n_test: int, seed: int, image_size: int, timing_images: int) -> dict:
    """Every measure of the module docstring: the build timing, then the baselines with the prior fitted on
    ``n_train`` train examples and scored on ``n_test`` test examples."""
    build_s, build_cpu_s = time_build(seed, image_size, timing_images)
    train = [generate_example(i, "train", seed, image_size, encode=False) for i in range(n_train)]
    test = [generate_example(i, "test", seed, image_size, encode=False) for i in range(n_test)]
    hits = score_test(test, fit_prior(train))
    n = hits["n"]
    return {
        "seed": seed,
        "image_size": image_size,
        "n_train_images": n_train,
        "n_test_images": n_test,
        "n_test_findings": n,
        "build_time_s": round(build_s, 2),
        "build_cpu_time_s": round(build_cpu_s, 2),
        "build_images": timing_images,
        "text_only_prior_acc@0.5": round(hits["text"] / n, 4),
        "image_only_random_lesion_acc@0.5": round(hits["random"] / n, 4),
        "image_only_largest_lesion_acc@0.5": round(hits["largest"] / n, 4),
        "report_plus_image_oracle_acc@0.5": round(hits["oracle"] / n, 4),
        "per_category": {
            c: {
                "n": v[2],
                "text_only_prior": round(v[0] / v[2], 4),
                "image_only_random": round(v[1] / v[2], 4),
            }
            for c, v in sorted(hits["per_cat"].items())
        },
    }


def write_examples_png(path: Path, seed: int, image_size: int, n: int = 4) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import textwrap

    import matplotlib.pyplot as plt
    from PIL import Image

    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 4.3), dpi=80)
    # examples with distractors first, then a normal one
    picks = [
        i
        for i in range(40)
        if any(not le.mentioned for le in generate_example(i, "validation", seed, image_size).lesions)
    ]
    normal = next(i for i in range(40) if not generate_example(i, "validation", seed, image_size).lesions)
    for ax, i in zip(axes, picks[: n - 1] + [normal]):
        ex = generate_example(i, "validation", seed, image_size)
        img = Image.open(io.BytesIO(ex.row["image"]["bytes"]))
        ax.imshow(img, cmap="gray", vmin=0, vmax=255)
        for le in ex.lesions:
            x0, y0, x1, y1 = le.box
            color = "lime" if le.mentioned else "red"
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=color, lw=1.2))
        ax.set_axis_off()
        text = "\n".join(textwrap.wrap(ex.row["report"].replace("\n\n", " "), 46))
        ax.set_title(text, fontsize=6.5, loc="left")
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    caption = "SynthCXR: green = mentioned finding (ground truth), red = unmentioned distractor"
    fig.text(0.5, 0.015, caption, ha="center", fontsize=9)
    fig.savefig(path, format="png")
    plt.close(fig)
    # palette-quantise to stay small (keeps the box colours)
    Image.open(path).convert("RGB").quantize(colors=96, method=Image.Quantize.MAXCOVERAGE).save(
        path, optimize=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--timing-images", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--no-png", action="store_true")
    args = parser.parse_args()
    res = run(args.train, args.test, args.seed, args.image_size, args.timing_images)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "synthcxr_baselines.json").write_text(json.dumps(res, indent=2) + "\n")
    md = [
        "# SynthCXR baselines",
        "",
        f"Seed {res['seed']}, image size {res['image_size']}; prior fitted on {res['n_train_images']} train images, "
        f"evaluated on {res['n_test_findings']} findings of {res['n_test_images']} test images. "
        f"Building {res['build_images']} images (draw + PNG + arrow, one process): {res['build_time_s']} s wall, "
        f"{res['build_cpu_time_s']} s CPU.",
        "",
        "| method | accuracy@0.5 |",
        "|---|---|",
        f"| text-only prior (mean train box per category + side + zone) | {res['text_only_prior_acc@0.5']:.3f} |",
        f"| image-only oracle detector, random lesion (expected) | {res['image_only_random_lesion_acc@0.5']:.3f} |",
        f"| image-only oracle detector, largest lesion | {res['image_only_largest_lesion_acc@0.5']:.3f} |",
        f"| report + image oracle (category + side from the phrase) | {res['report_plus_image_oracle_acc@0.5']:.3f} |",
        "",
        "| category | n | text-only prior | image-only random |",
        "|---|---|---|---|",
    ]
    for c, v in res["per_category"].items():
        md.append(f"| {c} | {v['n']} | {v['text_only_prior']:.3f} | {v['image_only_random']:.3f} |")
    (out / "synthcxr_baselines.md").write_text("\n".join(md) + "\n")
    if not args.no_png:
        write_examples_png(ROOT / "docs" / "synthcxr_examples.png", args.seed, args.image_size)
    print("\n".join(md))


if __name__ == "__main__":
    main()
