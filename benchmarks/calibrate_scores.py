"""Calibrate a MedRG model's box confidences on held-out data (Platt scaling).

    python benchmarks/calibrate_scores.py --model default --write          # the embedded default model
    python benchmarks/calibrate_scores.py --model runs/medrg_small/final --write

The model grounds a calibration set that no test uses (SynthCXR, its own generator seed, validation split; with
``--chestxray8-writer`` also the ChestX-ray8 rows of that report writer, ``--chestxray8-split`` train or validation:
a model is over-confident on the images it trained on), report-guided as the pipeline
does, keeping every phrase's top box. Each box's hit is IoU >= 0.5 with its Hungarian-matched finding (the
evaluation's matching). ``a, b`` of ``sigmoid(a * logit(score) + b)`` minimise the log loss of hit given score;
``--write`` stores them as ``score_calibration`` in the folder's ``processor_config.json``, which
``MedRGProcessor.post_process_grounding`` applies to every score (pipeline, CLI, evaluation).

Writes benchmarks/results/calibration_<name>.json and .md (ECE before/after on the calibration set).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "data" / "chestxray8"
CALIBRATION_SEED = 7  # SynthCXR seed of the calibration set (tests and benchmarks use 0)


def score_hit_pairs(
    model, processor, examples: list[dict], batch_size: int
) -> tuple[list[float], list[bool]]:
    """(raw score, IoU >= 0.5) of every phrase's top box, report-guided, scores uncalibrated."""
    from medrg.evaluation.grounding_accuracy.grounding_metrics import match_dataset, validate_inputs
    from medrg.evaluation.prediction import predict_groundings

    saved = processor.score_calibration
    processor.score_calibration = [1.0, 0.0]
    try:
        predictions = predict_groundings(model, processor, examples, batch_size=batch_size, threshold=0.0)
    finally:
        processor.score_calibration = saved
    checked = validate_inputs(predictions, [e["findings"] for e in examples])
    scores, hits = [], []
    for sample in match_dataset(*checked):
        for match in sample.predictions:
            scores.append(match.score)
            hits.append(match.hit)
    return scores, hits


def fit_platt(scores: list[float], hits: list[bool], steps: int = 200) -> tuple[float, float]:
    """`a, b` minimising the log loss of `hits` under `sigmoid(a * logit(score) + b)` (a kept > 0)."""
    if not scores:
        raise ValueError("no predictions to calibrate on")
    x = torch.logit(torch.tensor(scores, dtype=torch.float64), eps=1e-6)
    y = torch.tensor(hits, dtype=torch.float64)
    log_a = torch.zeros((), dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_a, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(log_a.exp() * x + b, y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_a.detach().exp()), float(b.detach())


def ece(scores: list[float], hits: list[bool], a: float = 1.0, b: float = 0.0) -> float:
    from medrg.evaluation.grounding_accuracy.grounding_metrics import expected_calibration_error
    from medrg.processing.processing_medrg import platt_scale

    calibrated = platt_scale(torch.tensor(scores, dtype=torch.float64), a, b)
    return float(expected_calibration_error(calibrated.tolist(), hits)["ece"])


def calibration_examples(
    image_size: int,
    synthcxr_examples: int,
    writer: str | None,
    data_dir: str,
    chestxray8_max: int | None = None,
    chestxray8_split: str = "train",
) -> list[dict]:
    import medrg

    examples = []
    if synthcxr_examples > 0:
        synth = medrg.load_grounding_dataset(
            "synthcxr",
            examples_per_split={"train": 1, "validation": synthcxr_examples, "test": 1},
            image_size=image_size,
            seed=CALIBRATION_SEED,
            progress=False,
        )
        examples = list(synth["validation"])
    if writer:
        cxr = medrg.load_grounding_dataset("chestxray8", data_dir=data_dir, reports=writer, progress=False)
        train = cxr[chestxray8_split]
        if chestxray8_max is not None:
            train = train.select(range(min(chestxray8_max, len(train))))
        examples += list(train)
    return examples


def write_results(stem: str, result: dict, lines: list[str]) -> None:
    """Write ``benchmarks/results/{stem}.json`` (the numbers) and ``{stem}.md`` (``lines``), and print ``lines``."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def parse_args() -> argparse.Namespace:
    """The command line: the model and result name, the calibration set (SynthCXR size, ChestX-ray8 writer, part
    and rows), the batch, and --write."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="default", help="MedRG folder or 'default'")
    parser.add_argument("--name", default=None)
    parser.add_argument("--synthcxr-examples", type=int, default=400)
    parser.add_argument(
        "--chestxray8-writer", default=None, help="also calibrate on these ChestX-ray8 reports"
    )
    parser.add_argument(
        "--chestxray8-split",
        default="train",
        choices=("train", "validation"),
        help="which ChestX-ray8 part (a model trained on the train images is over-confident there: its boxes "
        "on images it trained on hit more often than on new ones)",
    )
    parser.add_argument("--chestxray8-max", type=int, default=None, help="at most this many ChestX-ray8 rows")
    parser.add_argument("--data-dir", default=str(DATA))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--write", action="store_true", help="store score_calibration in the model folder")
    return parser.parse_args()


def calibration_set_name(args: argparse.Namespace) -> str:
    """The calibration set in words: the SynthCXR part (or "no SynthCXR") + the ChestX-ray8 part, if any."""
    return (
        f"SynthCXR validation (seed {CALIBRATION_SEED}, {args.synthcxr_examples} examples)"
        if args.synthcxr_examples > 0
        else "no SynthCXR"
    ) + (
        f" + ChestX-ray8 {args.chestxray8_split}, {args.chestxray8_writer} reports"
        + (f" (first {args.chestxray8_max} rows)" if args.chestxray8_max else "")
        if args.chestxray8_writer
        else ""
    )


def calibration_result(
    name: str, args: argparse.Namespace, scores: list[float], hits: list[bool], a: float, b: float
) -> dict:
    """The numbers of a fit: the calibration set, its top boxes and hit rate, ``a, b`` and the ECE before and
    after scaling."""
    return {
        "model": name,
        "calibration_set": calibration_set_name(args),
        "predictions": len(scores),
        "hit_rate": sum(hits) / len(hits),
        "score_calibration": [round(a, 4), round(b, 4)],
        "ece_before": ece(scores, hits),
        "ece_after": ece(scores, hits, a, b),
    }


def write_calibration(folder: Path, result: dict) -> None:
    """Store ``result["score_calibration"]`` in the folder's processor_config.json and record where in
    ``result["written_to"]``."""
    config_file = folder / "processor_config.json"
    config = json.loads(config_file.read_text())
    config["score_calibration"] = result["score_calibration"]
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    result["written_to"] = (
        str(config_file.relative_to(ROOT)) if config_file.is_relative_to(ROOT) else "model folder"
    )


def markdown_lines(name: str, result: dict) -> list[str]:
    """The results table: the calibration set, and ``a, b`` with the ECE before and after Platt scaling."""
    return [
        f"# Score calibration: `{name}`",
        "",
        f"Calibration set: {result['calibration_set']}; {result['predictions']} top boxes, hit rate "
        f"{100 * result['hit_rate']:.1f} % (IoU >= 0.5).",
        "",
        "| | a | b | ECE on the calibration set |",
        "|---|---|---|---|",
        f"| before | 1 | 0 | {100 * result['ece_before']:.1f} % |",
        f"| after (Platt) | {result['score_calibration'][0]} | {result['score_calibration'][1]} | "
        f"{100 * result['ece_after']:.1f} % |",
    ]


def main() -> None:
    """Ground the calibration set, fit ``a, b``, optionally store them in the model folder, write the results."""
    args = parse_args()

    from medrg.defaults import DEFAULT_MODEL_DIR
    from medrg.loading import load_medrg

    folder = DEFAULT_MODEL_DIR if args.model == "default" else Path(args.model)
    model, processor = load_medrg(str(folder) if args.model != "default" else "default")
    model.eval()
    name = args.name or ("default" if args.model == "default" else Path(args.model).name)
    examples = calibration_examples(
        processor.image_processor.image_size,
        args.synthcxr_examples,
        args.chestxray8_writer,
        args.data_dir,
        args.chestxray8_max,
        args.chestxray8_split,
    )
    scores, hits = score_hit_pairs(model, processor, examples, args.batch_size)
    a, b = fit_platt(scores, hits)
    result = calibration_result(name, args, scores, hits, a, b)
    if args.write:
        write_calibration(folder, result)
    write_results(f"calibration_{name}", result, markdown_lines(name, result))


if __name__ == "__main__":
    main()
