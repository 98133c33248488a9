"""Build the embedded default model (medrg/default_model/): train with configs/default_model.yaml (or take an
already trained folder), measure it beside the text-only prior on SynthCXR test and ChestX-ray8 val, and install
weights + config + processor + metrics.json + RECIPE.md + an example image into the package.

    python recipes/install_default_model.py                      # train (~20-30 min on 2 CPU cores) + install
    python recipes/install_default_model.py --trained runs/default_model/final   # install a trained folder
    python recipes/install_default_model.py --trained runs/default_v2/final      # the recipes/default_model.py run

A `train_summary.json` beside the trained folder gives the training time (and, from `recipes/default_model.py`,
what the model card says of the training).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "default_model.yaml"
TARGET = ROOT / "medrg" / "default_model"
KEYS = ("accuracy@0.1", "accuracy@0.3", "accuracy@0.5", "mean_iou", "label_accuracy@0.5", "phrase_token_f1",
        "no_finding_accuracy", "expected_calibration_error")  # fmt: skip
HUB_CODE_KEYS = ("auto_map", "custom_pipelines")  # added when a hub folder is exported, never in the artefact
KEEP = {"config.json", "generation_config.json", "model.safetensors", "processor_config.json", "tokenizer.json",
        "tokenizer_config.json"}  # fmt: skip


def write_example(*folders: Path) -> None:
    """A SynthCXR image the project draws itself (seed 1: never seen in training), its report and its reference
    findings, written identically into every folder (the model folder and docs/, which the README uses)."""
    from medrg.processing.data.synthcxr import generate_example

    example = generate_example(0, "test", seed=1, image_size=256)
    for folder in folders:
        (folder / "example_cxr.png").write_bytes(example.row["image"]["bytes"])
        (folder / "example_report.txt").write_text(example.row["report"] + "\n")
        (folder / "example_findings.json").write_text(json.dumps(example.row["findings"], indent=1) + "\n")


def install_artefact(trained: Path, target: Path) -> None:
    """Copy weights, JSON and tokenizer files of `trained` into `target` (replacing the previous model's); the
    artefact holds no hub code and no JSON entry pointing at hub code."""
    for path in target.iterdir():
        if path.name in KEEP or path.suffix == ".py":
            path.unlink()
    for name in KEEP:
        if (trained / name).is_file():
            shutil.copy2(trained / name, target / name)
    for name in ("config.json", "processor_config.json", "tokenizer_config.json"):
        path = target / name
        if path.is_file():
            data = json.loads(path.read_text())
            if any(key in data for key in HUB_CODE_KEYS):
                for key in HUB_CODE_KEYS:
                    data.pop(key, None)
                path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trained", help="an exported MedRG folder trained with configs/default_model.yaml")
    parser.add_argument("--chestxray8", default=str(ROOT.parent / "shared" / "data" / "chestxray8"))
    args = parser.parse_args()

    from medrg.evaluation import evaluate_model

    import medrg
    from medrg.training import load_config

    config = load_config(CONFIG)
    train_seconds = None
    trained = args.trained
    if trained is None:
        from medrg.training import train

        started = time.perf_counter()
        trained = train(config)["export_dir"]
        train_seconds = round(time.perf_counter() - started, 1)
    summary_file = Path(trained).parent / "train_summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    if train_seconds is None and summary.get("train_seconds") is not None:
        train_seconds = round(summary["train_seconds"] + (summary.get("cache_seconds") or 0), 1)
    synth_options = config.data.sources[0].options
    datasets = {
        "synthcxr_test": (medrg.load_grounding_dataset("synthcxr", **synth_options), "test"),
        **{
            f"chestxray8_validation{'' if writer == 'template' else '_' + writer}": (
                medrg.load_grounding_dataset(
                    "chestxray8", data_dir=args.chestxray8, reports=writer, progress=False
                ),
                "validation",
            )
            for writer in ("template", "gpt", "llama")
        },
    }
    metrics: dict = {"config": "configs/default_model.yaml", "train_seconds": train_seconds}
    if "card" in summary:  # trained by recipes/default_model.py: what the card says of its training
        metrics["config"], metrics["training"] = "recipes/default_model.py", summary["card"]
    # the installed model code must load the trained weights without missing or unexpected keys (else the
    # default model is stale, e.g. after a change of the box decoder: retrain it with this script)
    _, info = medrg.MedRGForReportGrounding.from_pretrained(trained, output_loading_info=True)
    stale = {key: sorted(value) for key, value in info.items() if value}
    if stale:
        print(f"WARNING: the installed model code does not match the trained weights: {stale}")
    metrics["matches_installed_code"] = not stale
    for name, (data, split) in datasets.items():
        for suffix, target in (("", trained), ("_prior", "prior")):
            report = evaluate_model(
                target, data, split=split, train_split="train", batch_size=16, show_progress=False
            )
            values = report["metrics"]
            metrics[name + suffix] = {k: values[k] for k in KEYS} | {"num_findings": values["num_findings"]}
            print(name + suffix, json.dumps(metrics[name + suffix]))
    install_artefact(Path(trained), TARGET)
    metrics["model_bytes"] = (TARGET / "model.safetensors").stat().st_size
    (TARGET / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_example(TARGET, ROOT / "docs")
    from medrg.hub_cards.model_card import write_default_model_card

    write_default_model_card(TARGET)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
