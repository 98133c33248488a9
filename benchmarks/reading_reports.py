"""Does MedRG read reports it was never tuned on? One table per model.

    python benchmarks/reading_reports.py --model default            # the embedded default model
    python benchmarks/reading_reports.py --model runs/medrg_small/final --name medrg-small

Measured, for the model and the text-only prior, on the ChestX-ray8 val part (../shared/data/chestxray8, 88 images,
99 boxes) with three report writers: the project's own template reports, the GPT-written and the LLaMA-written
narrative reports (the default model's recipe trains on template + GPT only, so LLaMA is a writer it never read):
accuracy@0.1/0.3/0.5, mIoU, label-aware accuracy@0.5 (IoU AND a phrase naming the finding's category), expected
calibration error of the box scores. Also: SynthCXR test accuracy@0.5 / ECE, seconds per report, size on disk, and
the hand-written reports of tests/data/handwritten_reports.jsonl (36 reports in styles the training data does not
use; each paired with val images): stated findings named, denied findings never named, normal or denial-only
reports give no box at the pipeline's default threshold, every finding of a many-finding report grounded.

Writes benchmarks/results/reading_reports_<name>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "data" / "chestxray8"
HANDWRITTEN = ROOT / "tests" / "data" / "handwritten_reports.jsonl"
WRITERS = ("template", "gpt", "llama")
KEYS = (
    "accuracy@0.1",
    "accuracy@0.3",
    "accuracy@0.5",
    "mean_iou",
    "label_accuracy@0.5",
    "expected_calibration_error",
)


def load_handwritten(path: Path = HANDWRITTEN) -> list[dict]:
    """The hand-written report set: one dict per line (id, style, report, findings [{category, side}], denied)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def score_handwritten(records_per_case: list[tuple[dict, list[dict]]]) -> dict:
    """Check the reading rules on (hand-written case, pipeline records) pairs.

    - stated: each stated finding's category is named by some output label (per finding);
    - denied: no output label names a category the report denies (per label);
    - empty: a report with no stated finding gets no box (per report);
    - complete: a report with >= 4 findings has every finding named (per report).
    """
    from medrg.evaluation.grounding_accuracy.grounding_metrics import names_category

    stated = stated_hit = labels = denied_named = empty = empty_with_box = many = many_complete = 0
    failures: list[str] = []
    for case, records in records_per_case:
        names = [r["label"] for r in records]
        for finding in case["findings"]:
            stated += 1
            hit = any(names_category(name, finding["category"]) for name in names)
            stated_hit += hit
            if not hit:
                failures.append(f"{case['id']}: {finding['category']} not named in {names}")
        for name in names:
            labels += 1
            wrong = [c for c in case["denied"] if names_category(name, c)]
            denied_named += bool(wrong)
            if wrong:
                failures.append(f"{case['id']}: label {name!r} names denied {wrong}")
        if not case["findings"]:
            empty += 1
            empty_with_box += bool(records)
        if len(case["findings"]) >= 4:
            many += 1
            many_complete += all(
                any(names_category(name, f["category"]) for name in names) for f in case["findings"]
            )
    return {
        "stated_findings": stated,
        "stated_named_rate": stated_hit / stated if stated else None,
        "labels": labels,
        "denied_named_rate": denied_named / labels if labels else 0.0,
        "no_finding_reports": empty,
        "no_finding_box_rate": empty_with_box / empty if empty else None,
        "many_finding_reports": many,
        "many_complete_rate": many_complete / many if many else None,
        "failures": failures[:40],
    }


def synthcxr_test_set(image_size: int, examples: int):
    """The SynthCXR rows the reading tables score: seed 0 with 3,000 training examples (the split the default
    model's recipe trains on), ``examples`` test rows drawn at ``image_size`` px."""
    import medrg

    return medrg.load_grounding_dataset(
        "synthcxr",
        examples_per_split={"train": 3000, "validation": 50, "test": examples},
        image_size=image_size,
        seed=0,
        progress=False,
    )


def _val_images(data) -> list:
    return [row["image"] for row in data["validation"]]


def _methods(name: str, model, processor, args) -> list[tuple[str, object]]:
    methods = [("prior (text only)", "prior")]
    if not args.guided_only:
        methods.append((f"MedRG {name}, free reading", _free_predictor(model, processor, args.batch_size)))
    return [*methods, (f"MedRG {name}, report-guided", (model, processor))]


def _free_predictor(model, processor, batch_size: int):
    """The model's own reading, without the report guide (``guided=False``)."""
    from medrg.evaluation.prediction import predict_groundings

    def predict(examples: list[dict]) -> list[list[dict]]:
        return predict_groundings(
            model, processor, examples, batch_size=batch_size, threshold=0.0, guided=False
        )

    predict.__name__ = "free"
    return predict


def run_handwritten(
    pipe, images: list, threshold: float, images_per_report: int = 4, guided: bool = True
) -> dict:
    """Every hand-written report on `images_per_report` val images (report i uses images i, i+1, ...)."""
    cases = load_handwritten()
    pairs = []
    for index, case in enumerate(cases):
        chosen = [images[(index + k) % len(images)] for k in range(images_per_report)]
        outputs = pipe(
            [{"image": image, "report": case["report"]} for image in chosen],
            threshold=threshold,
            guided=guided,
        )
        pairs.extend((case, records) for records in outputs)
    result = score_handwritten(pairs)
    result["images_per_report"] = images_per_report
    return result


def parse_args() -> argparse.Namespace:
    """The command line: the model and result name, data folders, sizes and batch, --guided-only, --compare."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="default", help="MedRG folder or 'default'")
    parser.add_argument("--name", default=None, help="result name (default: the folder's name)")
    parser.add_argument("--data-dir", default=str(DATA))
    parser.add_argument(
        "--synthcxr-image-size", type=int, default=None, help="default: the model's input size"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--images-per-report", type=int, default=4, help="val images per hand-written report")
    parser.add_argument("--synthcxr-examples", type=int, default=300, help="SynthCXR test examples (seed 0)")
    parser.add_argument(
        "--guided-only", action="store_true", help="skip the free-reading rows (slow models: half the time)"
    )
    parser.add_argument(
        "--compare",
        nargs="+",
        metavar="NAME",
        default=None,
        help="only render one table from earlier results (reading_reports_<NAME>.json) into "
        "reading_reports_comparison.md",
    )
    return parser.parse_args()


def write_comparison(names: list[str]) -> None:
    """Render the earlier results ``reading_reports_<NAME>.json`` as one table, write it to
    ``reading_reports_comparison.md`` and print it."""
    text = render_comparison(names)
    (RESULTS / "reading_reports_comparison.md").write_text(text + "\n")
    print(text)


def score_chestxray8_writer(name: str, model, processor, args, writer: str, data) -> list[dict]:
    """One row per method on the ChestX-ray8 val part with ``writer``'s reports: the metrics of KEYS, the number
    of findings and the wall seconds per report of the whole evaluation; each row is printed as it is measured."""
    from medrg.evaluation import evaluate_model

    rows = []
    for method, target in _methods(name, model, processor, args):
        started = time.perf_counter()
        report = evaluate_model(
            target,
            data,
            split="validation",
            train_split="train",
            batch_size=args.batch_size,
            show_progress=False,
        )
        seconds = time.perf_counter() - started
        metrics = report["metrics"]
        row = {
            "data": f"ChestX-ray8 val, {writer} reports",
            "method": method,
            **{k: metrics.get(k) for k in KEYS},
            "num_findings": metrics["num_findings"],
            "seconds_per_report": seconds / max(report["num_samples"], 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def score_handwritten_modes(model, processor, args, images: list, threshold: float) -> dict:
    """The hand-written reports through the pipeline on the val ``images``: free reading (unless --guided-only),
    then report-guided. Returns {"handwritten_free": ..., "handwritten": ...}; each is printed without its
    failures."""
    from medrg.processing.pipeline_medrg import ReportGroundingPipeline

    pipe = ReportGroundingPipeline(model=model, processor=processor, device=model.device)
    modes = (
        (("handwritten", True),) if args.guided_only else (("handwritten_free", False), ("handwritten", True))
    )
    scores = {}
    for key, guided in modes:
        scores[key] = run_handwritten(
            pipe, images, threshold, images_per_report=args.images_per_report, guided=guided
        )
        print(key, json.dumps({k: v for k, v in scores[key].items() if k != "failures"}), flush=True)
    return scores


def score_chestxray8(result: dict, name: str, model, processor, args) -> None:
    """Add to ``result`` the ChestX-ray8 rows of every report writer and, on the template writer's val images,
    the hand-written report checks."""
    import medrg

    for writer in WRITERS:
        data = medrg.load_grounding_dataset(
            "chestxray8", data_dir=args.data_dir, reports=writer, progress=False
        )
        result["rows"] += score_chestxray8_writer(name, model, processor, args, writer, data)
        if writer == "template":
            result.update(
                score_handwritten_modes(model, processor, args, _val_images(data), result["threshold"])
            )


def score_synthcxr(name: str, model, processor, args) -> list[dict]:
    """One row per method on the SynthCXR test rows (seed 0) at --synthcxr-image-size px (default: the model's
    input size): the metrics of KEYS and the number of findings; each row is printed as it is measured."""
    from medrg.evaluation import evaluate_model

    size = (
        processor.image_processor.image_size if args.synthcxr_image_size is None else args.synthcxr_image_size
    )
    synth = synthcxr_test_set(size, args.synthcxr_examples)
    rows = []
    for method, target in _methods(name, model, processor, args):
        metrics = evaluate_model(
            target, synth, split="test", batch_size=args.batch_size, show_progress=False
        )["metrics"]
        row = {
            "data": f"SynthCXR test ({size} px)",
            "method": method,
            **{k: metrics.get(k) for k in KEYS},
            "num_findings": metrics["num_findings"],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def write_results(result: dict, model, name: str) -> None:
    """Add the size of the model folder's model.safetensors (when there is one), write
    reading_reports_<name>.json and .md, and print the table."""
    folder = Path(model.name_or_path) if model.name_or_path else None
    if folder and (folder / "model.safetensors").is_file():
        result["model_megabytes"] = round((folder / "model.safetensors").stat().st_size / 2**20, 2)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"reading_reports_{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"reading_reports_{name}.md").write_text(render_markdown(result) + "\n")
    print(render_markdown(result))


def main() -> None:
    """Measure the model and the prior on every data set and write the results (with --compare: only render the
    comparison of earlier results)."""
    args = parse_args()
    if args.compare:
        write_comparison(args.compare)
        return

    from medrg.loading import load_medrg

    model, processor = load_medrg(args.model)
    model.eval()
    name = args.name or ("default" if args.model == "default" else Path(args.model).name)
    result: dict = {"model": name, "threshold": _default_threshold(), "rows": [], "handwritten": None}
    score_chestxray8(result, name, model, processor, args)
    result["rows"] += score_synthcxr(name, model, processor, args)
    write_results(result, model, name)


PAPER_ROW = "uMedGround paper, ChestX-ray8 (its own split; reference only)"


def render_comparison(names: list[str]) -> str:
    """One table: the prior, each model's report-guided rows (the pipeline's default), the paper's row."""
    results = [json.loads((RESULTS / f"reading_reports_{name}.json").read_text()) for name in names]
    lines = [
        "# Reading reports: " + " vs ".join(f"`{r['model']}`" for r in results) + " vs the prior",
        "",
        "Values in %; report-guided decoding (the pipeline's default); ChestX-ray8 val = 88 images, 99 boxes; "
        "s/report = wall seconds per report of the whole evaluation on 2 shared CPU cores (batch 16). Both models' "
        "recipes train on template + GPT reports only: LLaMA is a writer neither model read. Per-model tables with "
        "the free reading: `reading_reports_<name>.md`.",
        "",
        "| data | method | acc@0.1 | acc@0.3 | acc@0.5 | mIoU | label-aware acc@0.5 | ECE | s/report | size |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    datas = list(dict.fromkeys(row["data"] for r in results for row in r["rows"]))
    for data in datas:
        prior = next(
            (
                row
                for r in results
                for row in r["rows"]
                if row["data"] == data and row["method"].startswith("prior")
            ),
            None,
        )
        entries = [(prior, "–")] if prior else []
        for r in results:
            row = next(
                (row for row in r["rows"] if row["data"] == data and row["method"].endswith("report-guided")),
                None,
            )
            if row is not None:
                size = f"{r['model_megabytes']} MB" if "model_megabytes" in r else "–"
                entries.append((row, size))
        for row, size in entries:
            seconds = row.get("seconds_per_report")
            lines.append(
                f"| {data} | {row['method']} | "
                + " | ".join(_pct(row.get(k)) for k in KEYS)
                + f" | {'–' if seconds is None else f'{seconds:.3f}'} | {size} |"
            )
        if data.startswith("ChestX-ray8 val, gpt") or data.startswith("ChestX-ray8 val, llama"):
            lines.append(f"| {data} | {PAPER_ROW} | – | – | 38.4 | 38.5 | – | – | – | – |")
    return "\n".join(lines)


def _default_threshold() -> float:
    from medrg.processing import pipeline_medrg

    return float(getattr(pipeline_medrg, "DEFAULT_THRESHOLD", 0.5))


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def render_markdown(result: dict) -> str:
    lines = [
        f"# Reading reports by other writers: `{result['model']}`",
        "",
        "Values in %. ECE: expected calibration error of the box scores (lower is better). The default model's recipe "
        "trains on template + GPT reports only: the LLaMA rows measure a writer it never read. "
        "*free reading*: the model writes its answer alone; *report-guided* (the pipeline's default): the answer may "
        "only name findings the report states, in its words, each once and all of them (processing/guide_medrg.py).",
        "",
        "| data | method | acc@0.1 | acc@0.3 | acc@0.5 | mIoU | label-aware acc@0.5 | ECE | s/report |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        seconds = row.get("seconds_per_report")
        lines.append(
            f"| {row['data']} | {row['method']} | "
            + " | ".join(_pct(row.get(k)) for k in KEYS)
            + f" | {'–' if seconds is None else f'{seconds:.3f}'} |"
        )
    hands = [
        (label, result.get(key)) for label, key in (("free", "handwritten_free"), ("guided", "handwritten"))
    ]
    hands = [(label, hand) for label, hand in hands if hand]
    if hands:
        first = hands[0][1]
        lines += [
            "",
            f"Hand-written reports (tests/data/handwritten_reports.jsonl, each on {first['images_per_report']} val "
            f"images, threshold {result['threshold']}):",
            "",
            "| check | " + " | ".join(label for label, _ in hands) + " |",
            "|---|" + "---|" * len(hands),
        ]
        checks = (
            ("stated findings named by a label", "stated_named_rate", "stated_findings"),
            ("labels that name a denied finding", "denied_named_rate", "labels"),
            ("normal / denial-only reports with a box", "no_finding_box_rate", "no_finding_reports"),
            (
                "many-finding reports (>= 4) with every finding named",
                "many_complete_rate",
                "many_finding_reports",
            ),
        )
        for title, rate, count in checks:
            lines.append(
                f"| {title} | " + " | ".join(f"{_pct(h[rate])} % of {h[count]}" for _, h in hands) + " |"
            )
    if "model_megabytes" in result:
        lines += ["", f"Size: {result['model_megabytes']} MB (model.safetensors)."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
