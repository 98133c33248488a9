"""THE model card of a MedRG hub folder: one template, rendered from measured results.

Every producer of a model folder (``medrg.hub.save_hub_folder``: ``medrg train``'s export, ``medrg export``,
``pipe.save_pretrained``) and the embedded default model (``medrg/default_model/README.md``, see
``render_default_model_card``) render this template; no other card text exists in the project.

The YAML header is built with ``huggingface_hub.ModelCardData`` (model-index from ``EvalResult`` entries), so it is
what the Hub parses; ``tests/test_cards.py`` reads every rendered card back with ``huggingface_hub.ModelCard``.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping, Sequence
from pathlib import Path

# The Hub has no "report grounding" task. The closest is zero-shot-object-detection: an image plus free text in,
# boxes labelled with phrases of that text out, the records having exactly the shape of transformers'
# zero-shot-object-detection pipeline ({"label", "score", "box": {xmin, ymin, xmax, ymax}}); phrase-grounding
# models such as Grounding DINO carry the same tag. (object-detection takes no text; image-text-to-text returns
# text, not boxes.)
PIPELINE_TAG = "zero-shot-object-detection"
LIBRARY_NAME = "transformers"
DEFAULT_LICENSE = "apache-2.0"
TAGS = ["medical", "chest-x-ray", "radiology", "report-grounding", "phrase-grounding", "medrg", "custom_code"]
# metrics shown (and put in the model-index), in this order; values are fractions in [0, 1]
CARD_METRICS = ("accuracy@0.1", "accuracy@0.3", "accuracy@0.5", "mean_iou")
METRIC_NAMES = {
    "accuracy@0.1": "Accuracy at IoU >= 0.1",
    "accuracy@0.3": "Accuracy at IoU >= 0.3",
    "accuracy@0.5": "Accuracy at IoU >= 0.5",
    "mean_iou": "Mean IoU",
}
# dataset prefixes of a metrics key such as "chestxray8_validation" (the rest is the split)
DATASET_PRETTY = {
    "synthcxr": "SynthCXR",
    "chestxray8": "ChestX-ray8",
    "ms_cxr": "MS-CXR",
    "ms-cxr": "MS-CXR",
    "vindr_cxr": "VinDr-CXR",
    "vindr-cxr": "VinDr-CXR",
    "rsna_pneumonia": "RSNA Pneumonia",
    "rsna-pneumonia": "RSNA Pneumonia",
}
PRIOR_SUFFIX = "_prior"  # a metrics entry measured with the text-only prior baseline, not with this model

TEMPLATE = string.Template("""\
---
$yaml
---

# $name

$summary

MedRG reads a chest X-ray and its free-text radiology report, writes each key finding phrase of the report
followed by a `<BOX>` token, and grounds every phrase with a box and a confidence in [0, 1].

## Results

$results

## Usage

With the `medrg` package installed (nothing from this folder is executed):

```python
import medrg
from transformers import AutoModel, AutoProcessor, pipeline

pipe = medrg.hub.load_pipeline("$repo_id")
# the same: pipeline("report-grounding", model="$repo_id", pipeline_class=medrg.ReportGroundingPipeline)
pipe("cxr.png", report="Moderate left pleural effusion. Large lingular mass.")
# [{"label": "moderate left pleural effusion", "score": 0.46,
#   "box": {"xmin": 59.7, "ymin": 107.3, "xmax": 129.4, "ymax": 162.2}}, ...]

model = AutoModel.from_pretrained("$repo_id")          # MedRGForReportGrounding
processor = AutoProcessor.from_pretrained("$repo_id")  # MedRGProcessor
```

$without_medrg

Options: `threshold` (a threshold you set drops every box with a lower confidence; without one, the report-guided
answer keeps each stated finding's best box with its score and the unguided answer drops boxes below 0.1),
`top_k` (boxes per phrase, default 1), `max_new_tokens` (default 64), `return_status=True` (per input `finished`,
`report_truncated` and `read`: every finding the report states, with whether it got a box and why not, so that "no
finding" is not confused with "the answer was cut off", "below the threshold" or "a finding this model does not
box"). The finding vocabulary the report reader uses is the `vocabulary` entry of `processor_config.json`. Inputs: PNG/JPEG (8 or 16 bit), DICOM, numpy arrays,
PIL images, `http(s)` URLs, `datasets` rows and datasets with `image` and `report` columns.

## Intended use

Research on grounding radiology report phrases in chest X-rays: benchmarking, error analysis, teaching, and as a
component of research prototypes that show a reader where a report's findings are.

## Out of scope

- Clinical use of any kind: diagnosis, triage, screening, treatment decisions. This is not a medical device and
  has no regulatory clearance.
- Finding abnormalities the report does not mention: the model grounds the report's phrases, it does not read
  the image for other findings.
- Images other than frontal chest X-rays, and reports in languages other than English.

## Limitations and bias

- The numbers above were measured on the data named there only; performance on other hospitals, scanners,
  patient populations, projections (AP/PA, portable) and report styles is unknown and likely lower.
- Synthetic training images (SynthCXR) are much simpler than real radiographs; box annotations of public
  datasets are sparse and biased towards a few finding classes.
- Confidences are not calibrated probabilities of disease; a box is a location hypothesis for a phrase.
- Phrases come from the model's own generation: it can omit, merge or paraphrase findings, and an answer cut off
  by `max_new_tokens` is incomplete (see `return_status`).
- Datasets under-represent some populations (age, sex, ethnicity, devices); errors may be distributed unequally.

## Privacy

No protected health information: this folder holds weights, configuration, tokenizer and code only. No image,
report, patient identifier or file path from the training data is stored in it, and the pipeline does not log
inputs (its warnings name an input by its position in the call).

## Training details

$training

## Files

$files
""")


def _split_key(key: str, default_dataset: str) -> tuple[str, str, str]:
    """A metrics key -> (dataset id, pretty dataset name, split): "chestxray8_validation" -> ("chestxray8", ...)."""
    for prefix, pretty in DATASET_PRETTY.items():
        if key.startswith(prefix + "_"):
            return prefix.replace("_", "-"), pretty, key[len(prefix) + 1 :]
    return default_dataset.lower().replace(" ", "-"), default_dataset, key


def _measured(metrics: Mapping | None) -> list[tuple[str, Mapping]]:
    """The (key, values) entries of a metrics mapping that hold at least one card metric as a number."""
    out = []
    for key, values in (metrics or {}).items():
        if isinstance(values, Mapping) and any(
            isinstance(values.get(m), (int, float)) and not isinstance(values.get(m), bool)
            for m in CARD_METRICS
        ):
            out.append((str(key), values))
    return out


def eval_results(metrics: Mapping | None, default_dataset: str = "MedRG training data") -> list:
    """`huggingface_hub.EvalResult`s (the model-index) of this model's measured metrics (prior entries left out)."""
    from huggingface_hub import EvalResult

    results = []
    for key, values in _measured(metrics):
        if key.endswith(PRIOR_SUFFIX):
            continue
        dataset_id, pretty, split = _split_key(key, default_dataset)
        for metric in CARD_METRICS:
            value = values.get(metric)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                results.append(
                    EvalResult(
                        task_type=PIPELINE_TAG,
                        task_name="Report grounding",
                        dataset_type=dataset_id,
                        dataset_name=pretty,
                        dataset_split=split,
                        metric_type=metric,
                        metric_name=METRIC_NAMES[metric],
                        metric_value=round(float(value), 4),
                    )
                )
    return results


def results_table(metrics: Mapping | None, default_dataset: str = "MedRG training data") -> str:
    """A markdown table (in %) of every measured entry, the text-only prior baseline rows marked as such."""
    rows = []
    for key, values in _measured(metrics):
        is_prior = key.endswith(PRIOR_SUFFIX)
        _, pretty, split = _split_key(key[: -len(PRIOR_SUFFIX)] if is_prior else key, default_dataset)
        count = values.get("num_findings")
        data = f"{pretty} {split}" + (f" ({count} findings)" if isinstance(count, int) else "")
        cells = " | ".join(
            f"{100 * values[m]:.2f}" if isinstance(values.get(m), (int, float)) else "-" for m in CARD_METRICS
        )
        rows.append(f"| {data} | {'text-only prior' if is_prior else 'this model'} | {cells} |")
    if not rows:
        return "Not measured: this folder was written without evaluation results."
    header = "| data | method | acc@0.1 | acc@0.3 | acc@0.5 | mIoU |\n|---|---|---|---|---|---|\n"
    return (
        "Accuracy = share of report findings whose predicted box has IoU >= t with a reference box; mIoU = mean "
        "IoU; in %, measured with `medrg.evaluation` (the model-index above holds the same values as fractions). "
        "The text-only prior predicts a box from the report alone (no image).\n\n" + header + "\n".join(rows)
    )


def _training_text(training: Mapping | None, model_config: Mapping | None) -> str:
    lines = []
    for key, value in (training or {}).items():
        lines.append(f"- {key}: {value}")
    config = model_config or {}
    vision, text = config.get("vision_config") or {}, config.get("text_config") or {}
    shape = {
        "architecture": "MedRGForReportGrounding (vision tower + projector + causal LM + box decoder)",
        "image size (px)": config.get("image_size", vision.get("image_size")),
        "language model": (
            f"{text.get('model_type')}, hidden {text.get('hidden_size')}, {text.get('num_hidden_layers')} layers"
            if text
            else None
        ),
        "image tokens": config.get("num_image_tokens"),
        "boxes per `<BOX>` (K)": config.get("num_box_queries", config.get("num_boxes")),
    }
    lines += [f"- {key}: {value}" for key, value in shape.items() if value is not None]
    if not lines:
        return "Not recorded."
    return "\n".join(lines)


def render_model_card(
    name: str,
    *,
    metrics: Mapping | None = None,
    summary: str | None = None,
    datasets: Sequence[str] = (),
    base_models: Sequence[str] = (),
    license: str = DEFAULT_LICENSE,
    training: Mapping | None = None,
    model_config: Mapping | None = None,
    repo_id: str | None = None,
    default_dataset: str = "MedRG training data",
    self_contained: bool = True,
) -> str:
    """The README.md (model card) of a MedRG folder.

    Args:
        name: the model's name: the card's title and the model-index name (never a folder name like "final").
        metrics: measured values, ``{key: {"accuracy@0.5": fraction, "mean_iou": fraction, ...}}``; a key is a split
            (``"validation"``) or dataset + split (``"chestxray8_validation"``); keys ending in ``_prior`` are the
            text-only baseline (table only). Non-mapping entries are ignored.
        summary: one paragraph under the title (default: a generic description).
        datasets: Hub dataset ids or names trained on (YAML ``datasets``).
        base_models: pretrained models the weights start from (YAML ``base_model``); empty for a model trained
            from scratch.
        license: SPDX-style Hub license id.
        training: training facts shown as a list (steps, batch size, learning rate, data, seconds, ...).
        model_config: the model's ``config.json`` values (image size, image tokens, K) to add to the list.
        repo_id: what the usage examples load (default: ``name``).
        default_dataset: dataset name for metrics keys that give only a split.
        self_contained: the folder carries its code and `custom_pipelines` (every hub folder); False for the
            package's embedded default model, which holds no code.

    Returns:
        The card text: YAML header (``huggingface_hub.ModelCardData``) and markdown body.
    """
    from huggingface_hub import ModelCardData

    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"render_model_card needs the model's name, got {name!r}")
    results = eval_results(metrics, default_dataset)
    data = ModelCardData(
        language="en",
        license=license,
        library_name=LIBRARY_NAME,
        pipeline_tag=PIPELINE_TAG,
        tags=list(TAGS),
        datasets=list(datasets) or None,
        base_model=list(base_models) or None,
        model_name=name if results else None,
        eval_results=results or None,
    )
    repo_id = repo_id or name
    return TEMPLATE.substitute(
        yaml=data.to_yaml(),
        without_medrg=string.Template(WITHOUT_MEDRG).substitute(repo_id=repo_id)
        if self_contained
        else CODELESS,
        files=FILES if self_contained else CODELESS_FILES,
        name=name,
        summary=summary or f"`{name}`: a MedRG report-grounding model for chest X-rays.",
        results=results_table(metrics, default_dataset),
        repo_id=repo_id,
        training=_training_text(training, model_config),
    )


WITHOUT_MEDRG = """Without `medrg` (runs the code files of this folder: read them first):

```python
from transformers import AutoModel, AutoProcessor, pipeline

pipe = pipeline("report-grounding", model="$repo_id", trust_remote_code=True)
model = AutoModel.from_pretrained("$repo_id", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("$repo_id", trust_remote_code=True)
```"""
FILES = """`model.safetensors` (weights, LoRA merged), `config.json` (with `auto_map` and `custom_pipelines`),
`processor_config.json` + tokenizer files, the flat code files (`*_medrg.py`), `metrics.json` (the measured values
above, as fractions) where present."""
CODELESS = """This folder holds no code: it needs the `medrg` package. `medrg export` (or
`medrg.hub.save_hub_folder`) writes a self-contained copy that also loads without `medrg`
(`pipeline("report-grounding", model=copy, trust_remote_code=True)`)."""
CODELESS_FILES = """`model.safetensors` (weights), `config.json`, `processor_config.json` + tokenizer files, `metrics.json`
(the measured values above, as fractions), `RECIPE.md` (how it was trained), `example_cxr.png` +
`example_report.txt` (a SynthCXR image never seen in training, with its report)."""

DEFAULT_MODEL_NAME = "MedRG default model"


def render_default_model_card(folder: str | Path) -> str:
    """The card of the embedded default model (``medrg/default_model``) from its ``metrics.json`` and config."""
    folder = Path(folder)
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    processor_file = folder / "processor_config.json"
    if processor_file.is_file():
        processor_config = json.loads(processor_file.read_text(encoding="utf-8"))
        config["image_size"] = (processor_config.get("image_processor") or {}).get("image_size")
    megabytes = metrics.get("model_bytes", 0) / 2**20
    training = {
        "recipe": "`RECIPE.md` (config `" + str(metrics.get("config", "configs/default_model.yaml")) + "`)",
        "data": "SynthCXR train (3000 synthetic images) + the ChestX-ray8 train part (template and GPT-written "
        "reports), patient-disjoint from the ChestX-ray8 validation part",
        "initialisation": "from scratch (no pretrained parts)",
        "training time": f"{metrics['train_seconds']} s on 2 shared CPU cores"
        if metrics.get("train_seconds")
        else None,
        "weights": f"{megabytes:.1f} MiB" if megabytes else None,
    }
    recorded = metrics.get("training") or {}  # written by the recipe that trained the model
    training.update({key: value for key, value in recorded.items() if value})
    if "EfficientNet" in str(recorded.get("initialisation", "")):
        made = "with a frozen ImageNet EfficientNet-Lite0 that sees the X-ray at 512 px, trained on CPU"
    else:
        made = "trained from scratch on CPU"
    summary = (
        f"A small MedRG ({megabytes:.1f} MiB) {made}, embedded in the `medrg` package: "
        '`pipeline("report-grounding")`, `medrg.hub.load_pipeline()` and `medrg ground` use it when no model is '
        "named. A demonstration model, small and trained on CPU: published models report 38.38 acc@0.5 / 38.49 "
        "mIoU (uMedGround) on their own ChestX-ray8 split (the splits differ)."
    )
    guided = metrics.get("report_guided") or {}
    if guided:
        rows = "; ".join(
            f"{name}: acc@0.5 {100 * row['accuracy@0.5']:.1f}, mIoU {100 * row['mean_iou']:.1f}"
            for name, row in guided.items()
            if isinstance(row, dict) and "accuracy@0.5" in row and "mean_iou" in row
        )
        summary += (
            " Its answers are report-guided by default (the pipeline's `guided=True`): they name only the findings the "
            "report states, in its words, each once and all of them, so a denied finding is never boxed and a normal "
            "report gets no box. The results table shows the model's free reading, measured when it was installed; "
            f"report-guided ({guided.get('source', 'benchmarks/reading_reports.py')}): {rows}."
        )
    return render_model_card(
        DEFAULT_MODEL_NAME,
        metrics=metrics,
        summary=summary,
        datasets=["synthcxr", "chestxray8"],
        training={k: v for k, v in training.items() if v},
        model_config=config,
        repo_id="path/to/medrg/default_model",
        self_contained=False,
    )


def write_default_model_card(folder: str | Path) -> Path:
    """Render ``render_default_model_card(folder)`` into ``folder/README.md``; returns that file."""
    path = Path(folder) / "README.md"
    path.write_text(render_default_model_card(folder), encoding="utf-8")
    return path


__all__ = [
    "CARD_METRICS",
    "DEFAULT_MODEL_NAME",
    "LIBRARY_NAME",
    "PIPELINE_TAG",
    "TEMPLATE",
    "eval_results",
    "render_default_model_card",
    "render_model_card",
    "results_table",
    "write_default_model_card",
]
