"""Pictures of an evaluation: reliability diagram, IoU histogram, per-category bars, overlays."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import patches  # noqa: E402


def plot_reliability(metrics: Mapping[str, Any], path: str | Path) -> Path:
    """Bar per score bin: hit rate at IoU 0.5 vs mean score, with the diagonal and counts."""
    bins = metrics["reliability"]
    edges = bins["bin_edges"]
    centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    width = edges[1] - edges[0]
    accuracy = [a if a is not None else 0.0 for a in bins["bin_accuracy"]]
    fig, (ax, ax_rc) = plt.subplots(1, 2, figsize=(9, 4))
    ax.bar(centers, accuracy, width=width * 0.9, color="tab:blue", alpha=0.8, label="hit rate (IoU>=0.5)")
    for c, conf in zip(centers, bins["bin_confidence"]):
        if conf is not None:
            ax.plot([c - width / 2, c + width / 2], [conf, conf], color="tab:red", lw=2)
    for c, n in zip(centers, bins["bin_count"]):
        if n:
            ax.text(c, 0.02, str(n), ha="center", fontsize=7)
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ece = metrics.get("expected_calibration_error")
    reliability = f"Reliability (ECE {ece:.3f})" if ece is not None else "Reliability (no predictions)"
    _unit_square(ax, xlabel="score", ylabel="hit rate", title=reliability)
    ax.legend(fontsize=7, loc="upper left")
    curve = metrics["risk_coverage"]
    aurc = metrics.get("aurc")
    ax_rc.step(curve["coverage"], curve["risk"], where="post", color="tab:purple")
    risk_coverage = f"Risk-coverage (AURC {aurc:.3f})" if aurc is not None else "Risk-coverage"
    _unit_square(ax_rc, xlabel="coverage", ylabel="risk (1 - hit rate)", title=risk_coverage)
    return _save(fig, path)


def _unit_square(ax, xlabel: str, ylabel: str, title: str) -> None:
    """Axes over [0, 1] x [0, 1] (scores, rates, coverage) with their labels and title."""
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=xlabel, ylabel=ylabel, title=title)


def plot_iou_histogram(
    ious: Sequence[float], path: str | Path, thresholds: Sequence[float] = (0.1, 0.3, 0.5)
) -> Path:
    """Histogram of the matched IoU of every reference finding (0 = missed)."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(list(ious), bins=20, range=(0, 1), color="tab:green", edgecolor="white")
    for t in thresholds:
        ax.axvline(t, color="gray", ls="--", lw=1)
    ax.set(
        xlabel="IoU with the matched prediction", ylabel="reference findings", title=f"IoU (n={len(ious)})"
    )
    return _save(fig, path)


def plot_per_category(metrics: Mapping[str, Any], path: str | Path) -> Path:
    """Grouped bars per category: accuracy@0.5 and mean IoU, with the number of findings."""
    per_category = metrics["per_category"]
    names = list(per_category)
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(names) + 2), 3.8))
    xs = range(len(names))
    ax.bar(
        [x - 0.2 for x in xs],
        [per_category[n].get("accuracy@0.5", 0) for n in names],
        0.4,
        label="accuracy@0.5",
    )
    ax.bar([x + 0.2 for x in xs], [per_category[n]["mean_iou"] for n in names], 0.4, label="mean IoU")
    ax.set_xticks(
        list(xs), [f"{n}\n(n={per_category[n]['num_findings']})" for n in names], fontsize=7, rotation=30
    )
    ax.set(ylim=(0, 1), title="Per category")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_overlays(samples: Sequence[Mapping[str, Any]], path: str | Path, columns: int = 4) -> Path:
    """Grid of images with reference boxes (green) and predicted boxes (red) with phrase and score.

    ``samples``: dicts with ``image`` (PIL), ``findings`` (schema), ``predictions`` (records), ``title``.
    """
    count = max(len(samples), 1)
    columns = min(columns, count)
    rows = (count + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, sample in zip(axes.flat, samples):
        image = sample["image"]
        if image is not None:
            ax.imshow(image.convert("RGB"))
        for finding in sample["findings"]:
            for box in finding["boxes"]:
                x0, y0, x1, y1 = box
                ax.add_patch(patches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="lime", lw=1.5))
            if finding["boxes"]:
                x0, _, _, y1 = finding["boxes"][0]
                ax.text(x0, y1, finding["phrase"][:30], color="lime", fontsize=5, va="top")
        for record in sample["predictions"]:
            b = record["box"]
            ax.add_patch(
                patches.Rectangle(
                    (b["xmin"], b["ymin"]),
                    b["xmax"] - b["xmin"],
                    b["ymax"] - b["ymin"],
                    fill=False,
                    ec="red",
                    lw=1.2,
                )
            )
            ax.text(
                b["xmin"],
                b["ymin"],
                f"{record['label'][:30]} {record['score']:.2f}",
                color="white",
                fontsize=5,
                va="bottom",
                bbox={"facecolor": "red", "alpha": 0.6, "pad": 0.5, "lw": 0},
            )
        ax.set_title(str(sample.get("title", ""))[:40], fontsize=7)
    fig.suptitle("green: reference, red: prediction (phrase, score)", fontsize=8)
    return _save(fig, path)


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
