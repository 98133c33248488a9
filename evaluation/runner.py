"""Evaluate a model, a pipeline, a baseline or any predict function on a grounding dataset.

``evaluate_model`` runs batched inference with a progress bar, computes every metric of
``compute_grounding_metrics`` and, given ``out_dir``, writes ``metrics.json``, ``metrics.md``,
``predictions.jsonl`` and the pictures (``reliability.png``, ``iou_histogram.png``,
``per_category.png``, ``overlays.png``).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .baselines import BASELINES, make_baseline
from .metrics import DEFAULT_IOU_THRESHOLDS, compute_grounding_metrics, validate_options
from .prediction import predict_groundings

Predictor = Callable[[list[dict]], list[list[dict]]]

# Published numbers (percent) shown beside our rows; same definitions as accuracy@t / mean_iou.
PAPER_REFERENCE_ROWS = [
    {"dataset": "MS-CXR", "method": "uMedGround (paper)", "accuracy@0.1": 89.82, "accuracy@0.3": 72.46,
     "accuracy@0.5": 53.29, "mean_iou": 47.65},
    {"dataset": "MS-CXR", "method": "MedRG (paper)", "accuracy@0.1": 87.43, "accuracy@0.3": 71.26,
     "accuracy@0.5": 51.50, "mean_iou": 46.04},
    {"dataset": "MS-CXR", "method": "MedRPG, phrase given (paper)", "accuracy@0.5": 69.86, "mean_iou": 59.37},
    {"dataset": "ChestX-ray8", "method": "uMedGround (paper)", "accuracy@0.1": 84.34, "accuracy@0.3": 56.57,
     "accuracy@0.5": 38.38, "mean_iou": 38.49},
    {"dataset": "ChestX-ray8", "method": "MedRG (paper)", "accuracy@0.1": 82.32, "accuracy@0.3": 55.05,
     "accuracy@0.5": 31.82, "mean_iou": 35.91},
]  # fmt: skip

METRIC_RULES = {
    "matching": "one-to-one Hungarian on IoU (phrase token F1 as tie-break)",
    "hit_iou": 0.5,
    "label_rule": "label_accuracy@t: IoU >= t and the label names the finding's category "
    "(the report reader's vocabulary wordings, negated mentions excluded)",
}
TABLE_COLUMNS = (
    "accuracy@0.1",
    "accuracy@0.3",
    "accuracy@0.5",
    "accuracy@0.7",
    "mean_iou",
    "label_accuracy@0.5",
    "average_precision@0.5",
    "phrase_token_f1",
    "no_finding_accuracy",
    "expected_calibration_error",
    "aurc",
)


# ------------------------------------------------------------------------------------------------
# Resolving what to evaluate
# ------------------------------------------------------------------------------------------------
def _pipeline_predictor(pipe: Any, batch_size: int, threshold: float) -> Predictor:
    """Predictor of a caller's own transformers pipeline object."""

    def predict(examples: list[dict]) -> list[list[dict]]:
        inputs = [{"image": example["image"], "report": example["report"]} for example in examples]
        outputs = pipe(inputs, batch_size=batch_size, threshold=threshold)
        if len(inputs) == 1 and outputs and isinstance(outputs[0], Mapping):
            outputs = [outputs]  # a pipeline may unwrap a single input
        return [list(records) for records in outputs]

    return predict


def _model_predictor(model: Any, processor: Any, batch_size: int, threshold: float) -> Predictor:
    """Predictor of a (model, processor): the package's one prediction path, ``predict_groundings``."""

    def predict(examples: list[dict]) -> list[list[dict]]:
        return predict_groundings(model, processor, examples, batch_size=batch_size, threshold=threshold)

    return predict


def resolve_predictor(
    model_or_path: Any,
    train_examples: Callable[[], Sequence[Mapping]] | None = None,
    *,
    processor: Any = None,
    batch_size: int = 8,
    threshold: float = 0.0,
    trust_remote_code: bool = False,
) -> tuple[Predictor, str]:
    """Turn what the caller gave into ``(predict(examples) -> records per example, name)``.

    Accepts a baseline name (``prior``, ``center``) or object (anything with ``fit`` and ``predict``;
    fitted on ``train_examples()`` unless already fitted), a model directory or ``"default"`` (the embedded
    model; loaded with ``medrg.loading.load_medrg``, which runs a folder's own code only with
    ``trust_remote_code=True``), a ``(model, processor)`` tuple, a transformers ``Pipeline``, or any
    callable ``predict(list_of_examples) -> list[list[record]]``.
    """
    if isinstance(model_or_path, (str, os.PathLike)) and str(model_or_path) in BASELINES:
        model_or_path = make_baseline(str(model_or_path))
    if hasattr(model_or_path, "fit") and hasattr(model_or_path, "predict"):
        baseline = model_or_path
        if not getattr(baseline, "is_fitted", False):
            if train_examples is None:
                raise ValueError(
                    f"baseline {getattr(baseline, 'name', baseline)!r} needs a train split to fit on"
                )
            baseline.fit(train_examples())
        return baseline.predict, getattr(baseline, "name", type(baseline).__name__)
    if isinstance(model_or_path, (str, os.PathLike)):
        from medrg.loading import DEFAULT_NAME, load_medrg

        name = str(model_or_path)
        if name != DEFAULT_NAME and not Path(name).exists():
            raise ValueError(
                f"--model {name!r} is neither a model directory nor a baseline name "
                f"(one of {sorted(BASELINES)}) nor {DEFAULT_NAME!r} (the embedded model): folder not found"
            )
        model, loaded_processor = load_medrg(name, trust_remote_code=trust_remote_code)
        predictor = _model_predictor(model, processor or loaded_processor, batch_size, threshold)
        return predictor, "medrg-default" if name == DEFAULT_NAME else Path(name).name
    if isinstance(model_or_path, tuple) and len(model_or_path) == 2:
        model, tuple_processor = model_or_path
        return _model_predictor(model, tuple_processor, batch_size, threshold), type(model).__name__
    if "transformers" in sys.modules:
        from transformers import Pipeline

        if isinstance(model_or_path, Pipeline):
            return _pipeline_predictor(model_or_path, batch_size, threshold), type(
                model_or_path.model
            ).__name__
    if callable(model_or_path):
        return model_or_path, getattr(model_or_path, "__name__", type(model_or_path).__name__)
    raise TypeError(
        "model_or_path must be a model directory, a baseline name or object, a (model, processor) tuple, "
        f"a pipeline or a predict callable; got {type(model_or_path).__name__}"
    )


# ------------------------------------------------------------------------------------------------
# Resolving the data
# ------------------------------------------------------------------------------------------------
def _select_splits(dataset: Any, split: str, train_split: str, data_dir: str | None) -> tuple[Any, Any, str]:
    """(evaluation split, train split or None, dataset name)."""
    name = "dataset"
    if isinstance(dataset, str):
        from medrg.processing.data import load_grounding_dataset

        name = dataset
        dataset = load_grounding_dataset(dataset, data_dir=data_dir)
    if isinstance(dataset, Mapping):
        if split in dataset:
            return dataset[split], dataset.get(train_split), name
        raise ValueError(f"split {split!r} not in the dataset; available splits: {sorted(dataset.keys())}")
    return dataset, None, name


def _without_image_decoding(dataset: Any) -> Any:
    """Rows whose image is only read for its size (baseline fitting)."""
    try:
        import datasets

        if isinstance(dataset, datasets.Dataset) and isinstance(
            dataset.features.get("image"), datasets.Image
        ):
            return dataset.cast_column("image", datasets.Image(decode=False))
    except ImportError:  # pragma: no cover - datasets is a dependency
        pass
    return dataset


# ------------------------------------------------------------------------------------------------
# The runner
# ------------------------------------------------------------------------------------------------
def run_inference(
    predict: Predictor,
    examples: Sequence[Mapping],
    *,
    batch_size: int = 8,
    show_progress: bool | None = None,
    description: str = "grounding",
) -> list[list[dict]]:
    """Call ``predict`` on batches of ``examples`` with a tqdm bar (quiet when stderr is not a TTY)."""
    disable = not sys.stderr.isatty() if show_progress is None else not show_progress
    predictions: list[list[dict]] = []
    total = len(examples)
    with tqdm(total=total, desc=description, unit="sample", disable=disable) as bar:
        for start in range(0, total, batch_size):
            batch = [examples[i] for i in range(start, min(start + batch_size, total))]
            outputs = predict(batch)
            if len(outputs) != len(batch):
                raise ValueError(
                    f"predict returned {len(outputs)} results for a batch of {len(batch)} examples"
                )
            predictions.extend(outputs)
            bar.update(len(batch))
    return predictions


def format_number(value: Any, percent: bool = True) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.2f}" if percent else f"{value:.3f}"


def metrics_table(rows: Sequence[tuple[str, Mapping[str, Any]]], paper_dataset: str | None = None) -> str:
    """Markdown table, one row per (name, metrics); accuracies/IoU/AP/F1 in %, ECE and AURC as fractions.

    ``label_accuracy@0.5`` is the label-aware score: IoU >= 0.5 and a label that names the category.

    ``paper_dataset`` ("MS-CXR" or "ChestX-ray8") appends the published reference rows of that dataset.
    """
    header = ["model", *TABLE_COLUMNS, "n findings"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, metrics in rows:
        cells = [name]
        for column in TABLE_COLUMNS:
            percent = column not in ("expected_calibration_error", "aurc")
            cells.append(format_number(metrics.get(column), percent))
        cells.append(str(metrics.get("num_findings", "")))
        lines.append("| " + " | ".join(cells) + " |")
    for row in PAPER_REFERENCE_ROWS:
        if paper_dataset and row["dataset"] == paper_dataset:
            cells = [row["method"]] + [f"{row[c]:.2f}" if c in row else "–" for c in TABLE_COLUMNS] + [""]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


PER_CATEGORY_COLUMNS = ("accuracy@0.1", "accuracy@0.3", "accuracy@0.5", "mean_iou", "label_accuracy@0.5")


def per_category_table(metrics: Mapping[str, Any]) -> str:
    """Markdown table of ``metrics["per_category"]`` (values in %)."""
    lines = [
        "| category | n | " + " | ".join(PER_CATEGORY_COLUMNS) + " |",
        "|---|---|" + "---|" * len(PER_CATEGORY_COLUMNS),
    ]
    for category, entry in metrics["per_category"].items():
        values = [format_number(entry.get(k)) for k in PER_CATEGORY_COLUMNS]
        lines.append(f"| {category or '(none)'} | {entry['num_findings']} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def evaluate_model(
    model_or_path: Any,
    dataset: Any,
    *,
    split: str = "test",
    train_split: str = "train",
    train_dataset: Any = None,
    data_dir: str | None = None,
    processor: Any = None,
    batch_size: int = 8,
    threshold: float = 0.0,
    max_samples: int | None = None,
    out_dir: str | Path | None = None,
    num_overlays: int = 8,
    iou_thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS,
    multi_box: str = "max",
    show_progress: bool | None = None,
    model_name: str | None = None,
    dataset_name: str | None = None,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Run ``model_or_path`` on a grounding dataset split and compute the grounding metrics.

    Args:
        model_or_path: model directory, baseline name (``prior``/``center``) or object, ``(model, processor)``,
            a transformers pipeline, or a callable ``predict(list_of_examples) -> list[list[record]]``.
        dataset: a dataset name for ``medrg.processing.data.load_grounding_dataset`` (with ``data_dir``),
            a ``DatasetDict`` (``split`` is evaluated, ``train_split`` fits baselines), or one split
            (a ``datasets.Dataset`` or a list of schema rows; then pass ``train_dataset`` for baselines).
        batch_size: examples per ``predict`` call (and the pipeline's batch size).
        threshold: the pipeline's score threshold (0 keeps every box; the metrics need all of them).
        max_samples: evaluate only the first N examples of the split.
        out_dir: if given, write metrics.json, metrics.md, predictions.jsonl and the pictures there; it is
            checked (a folder, created if needed, writable) before any loading or inference.
        trust_remote_code: for a model directory, run the folder's own Python code (``auto_map``) if its
            model type is not MedRG. Default False: such folders are refused and MedRG folders load with
            the installed code (``medrg.loading.load_medrg``).

    Returns:
        ``{"model", "dataset", "split", "num_samples", "config", "metrics"}`` (what ``metrics.json`` holds);
        ``metrics`` is the output of ``compute_grounding_metrics``.
    """
    validate_options(iou_thresholds, multi_box, METRIC_RULES["hit_iou"], 10)  # before any inference
    if out_dir is not None:
        prepare_out_dir(out_dir)
    predict = None
    if isinstance(model_or_path, (str, os.PathLike)) and str(model_or_path) not in BASELINES:
        # load (and refuse) a model before a possibly long dataset load
        predict, resolved_name = resolve_predictor(
            model_or_path, batch_size=batch_size, threshold=threshold, processor=processor,
            trust_remote_code=trust_remote_code,
        )  # fmt: skip
    evaluation_split, train, name = _select_splits(dataset, split, train_split, data_dir)
    if train_dataset is not None:
        train = train_dataset
    evaluation_split = _first(evaluation_split, max_samples)

    def train_examples() -> Sequence[Mapping]:
        if train is None:
            raise ValueError(f"no {train_split!r} split to fit the baseline on; pass train_dataset=...")
        return list(_without_image_decoding(train))

    if predict is None:
        predict, resolved_name = resolve_predictor(
            model_or_path, train_examples, processor=processor, batch_size=batch_size, threshold=threshold
        )
    examples = evaluation_split if hasattr(evaluation_split, "__getitem__") else list(evaluation_split)
    predictions = run_inference(
        predict, examples, batch_size=batch_size, show_progress=show_progress, description=str(resolved_name)
    )
    references = [examples[i]["findings"] for i in range(len(examples))]
    metrics = compute_grounding_metrics(
        predictions, references, iou_thresholds=iou_thresholds, multi_box=multi_box, return_details=True
    )
    details = metrics.pop("details")
    source = (
        str(model_or_path) if isinstance(model_or_path, (str, os.PathLike)) else type(model_or_path).__name__
    )
    config = {"model_source": source, "batch_size": batch_size, "threshold": threshold, "max_samples": max_samples,
              "iou_thresholds": list(iou_thresholds), "multi_box": multi_box, **METRIC_RULES}  # fmt: skip
    report = {"model": model_name or resolved_name, "dataset": dataset_name or name, "split": split,
              "num_samples": len(examples), "config": config, "metrics": metrics}  # fmt: skip
    if out_dir is not None:
        _write_outputs(Path(out_dir), report, examples, predictions, details, num_overlays)
    return report


def _first(split: Any, max_samples: int | None) -> Any:
    """The first ``max_samples`` rows of a ``datasets.Dataset`` or a sequence (all when None)."""
    if max_samples is None:
        return split
    if hasattr(split, "select"):
        return split.select(range(min(max_samples, len(split))))
    return list(split)[:max_samples]


def prepare_out_dir(out_dir: str | os.PathLike) -> Path:
    """Create ``out_dir`` if needed and check that files can be written there; ``ValueError`` naming it
    (a file in the way, a folder that cannot be created or written) before any inference runs."""
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise ValueError(
            f"--out {str(folder)!r} is a file; expected a folder for metrics.json and the pictures"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".medrg-write-check-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ValueError(
            f"--out {str(folder)!r} is not a writable folder: {error.strerror or error}"
        ) from None
    return folder


def _write_outputs(
    out_dir: Path,
    report: Mapping[str, Any],
    examples: Sequence[Mapping],
    predictions: Sequence[Sequence[Mapping]],
    details: Mapping[str, Any],
    num_overlays: int,
) -> None:
    from .plots import plot_iou_histogram, plot_overlays, plot_per_category, plot_reliability

    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = report["metrics"]
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    title = (
        f"# {report['model']} on {report['dataset']} ({report['split']}, {report['num_samples']} samples)\n\n"
    )
    markdown = title + metrics_table([(str(report["model"]), metrics)]) + "\n## Per category\n\n"
    markdown += per_category_table(metrics)
    (out_dir / "metrics.md").write_text(markdown)
    with open(out_dir / "predictions.jsonl", "w") as handle:
        for i, records in enumerate(predictions):
            image_id = examples[i].get("image_id", str(i)) if isinstance(examples[i], Mapping) else str(i)
            handle.write(
                json.dumps({"index": i, "image_id": image_id, "predictions": records}, default=_json_default)
            )
            handle.write("\n")
    plot_reliability(metrics, out_dir / "reliability.png")
    plot_iou_histogram([f["iou"] for f in details["findings"]], out_dir / "iou_histogram.png")
    plot_per_category(metrics, out_dir / "per_category.png")
    overlays = []
    # spread the overlay samples over the split, preferring ones with findings
    count = len(examples)
    chosen = sorted(
        {round(k * (count - 1) / max(num_overlays - 1, 1)) for k in range(min(num_overlays, count))}
    )
    for i in chosen:
        example = examples[i]
        image = example.get("image")
        if not hasattr(image, "convert"):
            image = None
        overlays.append(
            {
                "image": image,
                "findings": example["findings"],
                "predictions": predictions[i],
                "title": example.get("image_id", str(i)),
            }
        )
    plot_overlays(overlays, out_dir / "overlays.png")
