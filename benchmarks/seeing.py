"""Does the image move the box? The ablation table of the default model on the ChestX-ray8 val part.

    python benchmarks/seeing.py --model default --previous runs/previous_default

Rows, for the GPT reports and the LLaMA reports (a writer the default's recipe never trains on), top-1 box per
finding, report-guided: the text-only prior (mean training box of label + side/zone words); the previous default
(a tiny CNN from scratch at 128 px); the model; the model with each report on ANOTHER patient's image (val images
rotated by half the split; the boxes stay the report's own); the model without the text box (the decoder's first
box replaced by the mean training box, no prior box from the processor either: only the image can move it). Also: of the labels that name one side, how
many boxes have their centre on that side of the patient (the patient's right is the image's left).

Writes benchmarks/results/seeing_<name>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "data" / "chestxray8"
KEYS = ("accuracy@0.1", "accuracy@0.3", "accuracy@0.5", "mean_iou", "expected_calibration_error")
_RIGHT, _LEFT = re.compile(r"\bright\b", re.I), re.compile(r"\bleft\b", re.I)


def shuffled_rows(split) -> list[dict]:
    """Every row with the image of the row half the split away (another patient's where possible)."""
    rows = [dict(row) for row in split]
    n = len(rows)
    out = []
    for i, row in enumerate(rows):
        j = (i + n // 2) % n
        while rows[j]["patient_id"] == row["patient_id"]:
            j = (j + 1) % n
        out.append(dict(row, image=rows[j]["image"]))
    return out


def without_text_box(model, mean_box):
    """A hook that replaces the decoder's first box by `mean_box` (cxcywh): returns the hook handle."""
    import torch
    from medrg.modeling_medrg.medrg_box_decoder import inverse_sigmoid

    logits = inverse_sigmoid(torch.tensor(mean_box, dtype=torch.float32))

    def hook(module, args, output):
        return logits.to(output.dtype).expand_as(output).clone()

    return model.box_decoder.initial_box_head.register_forward_hook(hook)


def mean_train_box(train) -> list[float]:
    boxes = [(b, row["image"].size) for row in train for f in row["findings"] for b in f["boxes"]]
    sums = [0.0] * 4
    for (x0, y0, x1, y1), (w, h) in boxes:
        for k, v in enumerate(((x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h)):
            sums[k] += v
    return [s / len(boxes) for s in sums]


def side_check(records_per_row, rows) -> dict:
    """Labels naming exactly one side: box centre on that side of the patient (patient's right = image left)."""
    named = correct = 0
    for records, row in zip(records_per_row, rows):
        width = row["image"].size[0]
        for record in records:
            right, left = bool(_RIGHT.search(record["label"])), bool(_LEFT.search(record["label"]))
            if right == left:
                continue
            named += 1
            centre = (record["box"]["xmin"] + record["box"]["xmax"]) / 2
            correct += (centre < width / 2) if right else (centre >= width / 2)
    return {"side_naming_labels": named, "on_named_side": correct, "fraction": correct / max(named, 1)}


def evaluate_rows(target, rows, train, name: str, writer: str) -> dict:
    from medrg.evaluation import evaluate_model

    metrics = evaluate_model(target, rows, train_dataset=train, batch_size=16, show_progress=False)["metrics"]
    row = {"reports": writer, "method": name, **{k: metrics.get(k) for k in KEYS}, "num_findings": metrics["num_findings"]}  # fmt: skip
    print(json.dumps(row), flush=True)
    return row


def run_writer(writer: str, model, processor, previous, args) -> tuple[list[dict], dict]:
    from medrg.evaluation.prediction import predict_groundings

    import medrg

    data = medrg.load_grounding_dataset("chestxray8", data_dir=args.data_dir, reports=writer, progress=False)
    train, val = list(data["train"]), list(data["validation"])
    rows = [evaluate_rows("prior", val, train, "prior (text only)", writer)]
    if previous is not None:
        rows.append(evaluate_rows(previous, val, train, "previous default", writer))
    rows.append(evaluate_rows((model, processor), val, train, args.name, writer))
    rows.append(evaluate_rows((model, processor), shuffled_rows(val), train, f"{args.name}, another patient's image", writer))  # fmt: skip
    handle = without_text_box(model, mean_train_box(train))
    prior, processor.prior = processor.prior, type(processor.prior)()  # no reference boxes either
    try:
        rows.append(
            evaluate_rows((model, processor), val, train, f"{args.name}, without the text box", writer)
        )
    finally:
        handle.remove()
        processor.prior = prior
    sides = side_check(predict_groundings(model, processor, val, batch_size=16), val)
    return rows, sides


def targets(result: dict) -> list[tuple[str, str, bool]]:
    """(target, measured, met) of the seeing targets, from the table's rows."""
    rows = {(r["reports"], r["method"]): r for r in result["rows"]}
    name = result["model"]
    out = []
    for writer in ("gpt", "llama"):
        model, prior = rows[(writer, name)], rows[(writer, "prior (text only)")]
        shuffled = rows[(writer, f"{name}, another patient's image")]
        acc, miou = model["accuracy@0.5"], model["mean_iou"]
        out += [
            (f"{writer}: acc@0.5 >= 0.38 and mIoU >= 0.42", f"{acc:.3f} / {miou:.3f}", acc >= 0.38 and miou >= 0.42),
            (f"{writer}: acc@0.1 >= the prior's", f"{model['accuracy@0.1']:.3f} vs {prior['accuracy@0.1']:.3f}",
             model["accuracy@0.1"] >= prior["accuracy@0.1"]),
            (f"{writer}: another patient's image >= 0.12 acc@0.5 lower", f"{acc - shuffled['accuracy@0.5']:.3f}",
             acc - shuffled["accuracy@0.5"] >= 0.12),
            (f"{writer}: ECE <= 0.05", f"{model['expected_calibration_error']:.3f}",
             model["expected_calibration_error"] <= 0.05),
        ]  # fmt: skip
    gap = rows[("gpt", name)]["accuracy@0.5"] - rows[("llama", name)]["accuracy@0.5"]
    out.append(("LLaMA within 0.03 acc@0.5 of GPT", f"{gap:+.3f} (GPT - LLaMA)", abs(gap) <= 0.03))
    for writer, sides in result["sides"].items():
        out.append((f"{writer}: >= 97 % of side-naming labels on the named side", f"{100 * sides['fraction']:.1f} %",
                    sides["fraction"] >= 0.97))  # fmt: skip
    return out


def render(result: dict) -> str:
    lines = [
        f"# Seeing: ablations of `{result['model']}` on ChestX-ray8 val (top-1 box per finding, report-guided)",
        "",
        "| reports | method | acc@0.1 | acc@0.3 | acc@0.5 | mIoU | ECE | findings |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        values = " | ".join(f"{100 * row[k]:.1f}" if row[k] is not None else "-" for k in KEYS)
        lines.append(f"| {row['reports']} | {row['method']} | {values} | {row['num_findings']} |")
    lines += ["", "| reports | side-naming labels | box centre on the named side |", "|---|---|---|"]
    for writer, sides in result["sides"].items():
        lines.append(f"| {writer} | {sides['side_naming_labels']} | {sides['on_named_side']} ({100 * sides['fraction']:.1f} %) |")  # fmt: skip
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    lines += [
        f"| {target} | {measured} | {'yes' if met else 'no'} |" for target, measured, met in targets(result)
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="default")
    parser.add_argument("--name", default=None)
    parser.add_argument("--previous", default=None, help="the previous default's folder (a row of the table)")
    parser.add_argument("--data-dir", default=str(DATA))
    parser.add_argument("--render", metavar="NAME", help="only re-render seeing_NAME.md from its JSON")
    args = parser.parse_args()
    if args.render:
        result = json.loads((RESULTS / f"seeing_{args.render}.json").read_text())
        (RESULTS / f"seeing_{args.render}.md").write_text(render(result) + "\n")
        print(render(result))
        return
    from medrg.loading import load_medrg

    model, processor = load_medrg(args.model)
    model.eval()
    args.name = args.name or ("default" if args.model == "default" else Path(args.model).name)
    previous = load_medrg(args.previous) if args.previous else None
    result = {"model": args.name, "rows": [], "sides": {}}
    for writer in ("gpt", "llama"):
        rows, sides = run_writer(writer, model, processor, previous, args)
        result["rows"] += rows
        result["sides"][writer] = sides
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"seeing_{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"seeing_{args.name}.md").write_text(render(result) + "\n")
    print(render(result))


if __name__ == "__main__":
    main()
