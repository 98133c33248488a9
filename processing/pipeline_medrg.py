"""`pipeline("report-grounding")`: an X-ray and its free-text report in, grounded finding phrases out."""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import warnings
from collections.abc import Mapping

import torch
from torch.utils.data import Dataset
from transformers import Pipeline
from transformers.image_utils import load_image as load_url_image

from .image_processing_medrg import load_image
from .processing_medrg import DEFAULT_MAX_NEW_TOKENS
from .prompting_medrg import TASK

logger = logging.getLogger(__name__)

# The one default confidence threshold of `pipeline("report-grounding")` and `medrg ground`. It is the default of
# transformers' zero-shot-object-detection pipeline (the Hub task closest to report grounding): with one box per
# phrase (`top_k=1`) it drops only hypotheses the model itself rates as unlikely. Evaluation passes 0.0.
DEFAULT_THRESHOLD = 0.1
DEFAULT_TOP_K = 1  # boxes per finding phrase
DEFAULT_URL_TIMEOUT_S = 30.0  # seconds to fetch an http(s) image
# the `custom_pipelines` entry of a saved folder's config.json (what `Pipeline.save_pretrained` writes for a
# registered task, without the local default model)
CUSTOM_PIPELINE_ENTRY = {
    "impl": "pipeline_medrg.ReportGroundingPipeline",
    "pt": ["AutoModel"],
    "type": "multimodal",
}
_OPTIONS = (
    "report",
    "threshold",
    "top_k",
    "max_new_tokens",
    "keep_top_box",
    "return_status",
    "timeout",
    "guided",
)
_CALL_OPTIONS = ("batch_size", "num_workers")
_UNSET = object()  # `top_k=None` is a value (every box), so "not passed" needs its own marker


def _read_status(reading, records: list[dict], guided: bool, finished: bool) -> list[dict]:
    """Every finding the report states, with whether it got a box and, if not, why (never silent)."""
    boxed = {record["label"] for record in records}
    asked = set(reading.phrases) if guided else set()
    out = []
    for finding in reading.stated:
        entry = finding.to_dict()
        entry["grounded"] = finding.label in boxed
        if not entry["grounded"]:
            if not finding.grounded:
                entry["reason"] = "not a finding the model was trained to box"
            elif not guided:
                entry["reason"] = "the unguided answer did not name it"
            elif finding.label not in asked:
                entry["reason"] = f"more than {reading.max_findings} findings: only the first are boxed"
            elif not finished:
                entry["reason"] = "the answer was cut off by max_new_tokens"
            else:
                entry["reason"] = "its box scored below the threshold"
        out.append(entry)
    return out


class _Item:
    """One input of a call, with its 0-based position (warnings name the input by it, never by a path)."""

    __slots__ = ("image", "index", "report")

    def __init__(self, index: int, image, report):
        self.index, self.image, self.report = index, image, report


def _item(index: int, value, report=None) -> _Item:
    if isinstance(value, _Item):
        return value
    if isinstance(value, Mapping):
        if "image" not in value or "report" not in value:
            raise ValueError(
                f"Input {index}: an input dict (or dataset row) needs 'image' and 'report' keys, got {sorted(value)}"
            )
        if report is not None:
            raise ValueError(
                f"Input {index}: give the report either in the input dict or as report=, not both"
            )
        return _Item(index, value["image"], value["report"])
    return _Item(index, value, report)


class _RowDataset(Dataset):
    """A map-style dataset (`datasets.Dataset`, `KeyDataset`, any torch `Dataset`) as pipeline inputs."""

    def __init__(self, rows, reports=None):
        if isinstance(reports, str):  # one report for every image
            reports = [reports] * len(rows)
        if reports is not None and len(reports) != len(rows):
            raise ValueError(
                f"With a dataset of {len(rows)} inputs pass one report (a string) or a list of {len(rows)} reports"
            )
        self.rows, self.reports = rows, reports

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> _Item:
        return _item(index, self.rows[index], None if self.reports is None else self.reports[index])


def _is_hf_dataset(inputs) -> bool:
    """A `datasets.Dataset` / `IterableDataset` (recognised by its columns; hub code does not import datasets)."""
    return hasattr(inputs, "column_names") and hasattr(inputs, "features") and not isinstance(inputs, Mapping)


def _check_threshold(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"threshold must be a number in [0, 1], got {type(value).__name__} {value!r}")
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"threshold must be a confidence in [0, 1], got {value!r}")
    return float(value)


def _check_bool(name: str, value) -> bool:
    """A flag must be a bool: a string such as "no" or "false" is truthy and would silently do the opposite."""
    if not isinstance(value, bool) and type(value).__name__ != "bool_":  # numpy.bool_ is a bool too
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def _check_call_options(batch_size, num_workers) -> None:
    if batch_size is not None:
        _check_positive_int("batch_size", batch_size)
    if num_workers is not None and (
        isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0
    ):
        raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}")


def _check_positive_int(name: str, value, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive integer{' or None' if allow_none else ''}, got {value!r}")
    if value < 1:
        raise ValueError(
            f"{name} must be a positive integer{' or None' if allow_none else ''}, got {value!r}"
        )
    return value


def _fetch_url_image(url: str, timeout: float):
    """An http(s) image through transformers' image loading, with an error that names the URL."""
    try:
        return load_url_image(url, timeout=timeout)
    except Exception as error:  # network errors (httpx), an answer that is no image (PIL), ...
        reason = f"{type(error).__name__}: {error}"
        if type(error).__name__ == "UnidentifiedImageError":
            reason = "the server's answer is not an image (a missing page, e.g. HTTP 404, or a wrong URL)"
        raise ValueError(f"Cannot load the image at URL {url}: {reason}") from None


def _package_hub_folder_writer():
    """`medrg.hub.save_hub_folder` when this file is the installed package's (`medrg.processing.pipeline_medrg`),
    even before `medrg.hub` was imported; None for a hub folder's copy of this file (no `medrg` needed there)."""
    if not __name__.startswith("medrg."):
        return None
    import importlib

    return importlib.import_module("medrg.hub").save_hub_folder


def write_code_folder(model, processor, save_directory, pipeline_class=None, **kwargs) -> None:
    """The one writer of a folder that loads with its own code: `model.save_pretrained` (safetensors weights made
    readable as the other files, config.json with `auto_map`, the model code), the processor (with the tokenizer
    and the processing code), the pipeline file and its flat sibling imports, and `custom_pipelines` in
    config.json. `medrg.hub.save_hub_folder` adds the card and the checks of a published folder."""
    from transformers.dynamic_module_utils import custom_object_save

    os.makedirs(save_directory, exist_ok=True)
    model.save_pretrained(save_directory, **kwargs)
    # transformers writes the weights 0600 (a private temporary file): make them readable as the rest
    mode = os.stat(os.path.join(save_directory, "config.json")).st_mode & 0o777
    for name in os.listdir(save_directory):
        if name.endswith(".safetensors"):
            os.chmod(os.path.join(save_directory, name), mode)
    processor.save_pretrained(save_directory, **kwargs)
    custom_object_save(pipeline_class or ReportGroundingPipeline, save_directory)
    config_file = os.path.join(save_directory, "config.json")
    with open(config_file, encoding="utf-8") as handle:
        config = json.load(handle)
    config["custom_pipelines"] = {TASK: dict(CUSTOM_PIPELINE_ENTRY)}
    with open(config_file, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(config, indent=2, sort_keys=True) + "\n")


class ReportGroundingPipeline(Pipeline):
    """Grounds every key finding of a radiology report in its chest X-ray.

    ```python
    import medrg                                   # with the package: no remote code runs
    pipe = medrg.hub.load_pipeline("path/to/medrg")
    # = pipeline("report-grounding", model="path/to/medrg", pipeline_class=medrg.ReportGroundingPipeline)
    # without the package: pipeline("report-grounding", model="path/to/medrg", trust_remote_code=True)
    pipe("cxr.png", report="Patchy consolidation in the left upper lobe. No effusion.")
    # [{"label": "patchy consolidation in the left upper lobe", "score": 0.87,
    #   "box": {"xmin": 310.0, "ymin": 120.5, "xmax": 420.0, "ymax": 260.0}}]
    ```

    Inputs: `pipe(image, report=...)`, `pipe({"image": ..., "report": ...})` (a `datasets` row works as is: other
    columns are ignored), a list of either (with `batch_size=`; `report=` may then be a list of the same length, or one string for
    every image),
    a `datasets.Dataset` with `image` and `report` columns (returns a list, one result per row), or a torch
    `Dataset` / `KeyDataset` / generator (returns an iterator, as transformers pipelines do; with a dataset of
    images pass `report=` as a list of the same length, e.g. the dataset's report column, or one string). An image is a PIL image, a numpy array, a tensor, a file
    path (`str`/`pathlib.Path`; PNG, JPEG, ... and DICOM) or an `http(s)` URL (fetched with
    `transformers.image_utils.load_image`, which decodes it as 8-bit RGB; `timeout=` seconds, default 30).

    Options (as in transformers' object-detection pipelines; any other keyword is a `TypeError`):
    - `threshold`: a threshold the caller sets drops every box with a lower confidence, a phrase's best box
      included, in every mode (as in transformers' detection pipelines); a stated finding whose box is dropped is
      still reported as read (`return_status=True`: `read` with `grounded: False`; `medrg ground` prints it).
      Not set: a guided answer keeps each stated finding's best box whatever its score (the score says how sure
      the box is); an unguided answer drops boxes below `DEFAULT_THRESHOLD` = 0.1. 0.0 keeps every hypothesis.
    - `top_k` (default 1): at most this many boxes per finding phrase (best first); None keeps all.
    - `keep_top_box` (default: True for a guided answer without a caller-set `threshold`, else False): each
      phrase keeps its best box whatever `threshold` says.
    - `guided` (default True): report-guided decoding (`guide_medrg.ReportGuide`): the answer may only name
      the findings the report states, in the report's words, each once and all of them; a report that states no
      finding (normal, or denials only) gets no box. False lets the model write freely (its raw reading).
    - `max_new_tokens` (default: 64, or what the guided answer needs if more): the generation budget.
    - `return_status` (default False): see below.

    The model runs in eval mode (no dropout, BatchNorm running statistics used, never updated) whatever mode it was
    left in; each module's mode is restored after the call. `guided` and `return_status` must be bools,
    `batch_size` an integer >= 1.

    Returns per input a list of `{"label", "score", "box": {"xmin", "ymin", "xmax", "ymax"}}` in that image's
    pixels, ordered by phrase, then by score (an empty list when nothing is grounded). Nothing is hidden silently:
    when the answer was cut off by `max_new_tokens` a warning naming the input (its 0-based position in the call)
    is logged, and a report too long for the processor's `max_length` gives a `UserWarning` naming the input.
    With `return_status=True` each input instead gives `{"findings": [records], "finished": bool,
    "report_truncated": bool, "read": [...], "unsupported_text": [...]}`, so "no finding" can be told apart from
    "the model could not finish" and from "the report did not fit". `read` lists every finding the report states
    (the processor's reader, `reading_medrg.ReportReader`, with the vocabulary of `processor_config.json`):
    `{"label", "category", "side", "uncertain", "groundable", "grounded", "reason"}`; `grounded` is True when a
    record carries its label; otherwise `reason` says why: a category the model was never trained to box (read,
    not grounded), a box below the caller's threshold, an answer cut off. `unsupported_text` lists sentences
    the reader could not read (another language). A report longer than `reading_medrg.MAX_REPORT_CHARS`
    (100,000 characters) is refused with a ValueError; reading is linear in the report.
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False
    # The `medrg` package sets this to `medrg.hub.save_hub_folder` (its one hub-folder writer, which also renders
    # the model card); without the package `save_pretrained` writes the same folder without a card.
    hub_folder_writer = None

    def __init__(self, *args, **kwargs):
        _check_call_options(kwargs.get("batch_size"), kwargs.get("num_workers"))
        super().__init__(*args, **kwargs)
        if self.processor is None:
            raise ValueError("The report-grounding pipeline needs the MedRGProcessor (pass processor=...)")
        # Batching collates with these: input_ids padded on the left by the tokenizer, pixel_values stacked
        # (`Pipeline` takes them from a processor passed alone; set them when a tokenizer was passed as well).
        if self.tokenizer is None:
            self.tokenizer = self.processor.tokenizer
        if self.image_processor is None:
            self.image_processor = self.processor.image_processor

    def save_pretrained(self, save_directory, **kwargs):
        """Write a hub folder: merged safetensors weights, config.json with `auto_map` and `custom_pipelines`, the
        processor, the flat hub code (and, with `medrg` installed, the rendered model card). It reloads with
        `pipeline("report-grounding", model=save_directory, trust_remote_code=True)` without `medrg`, and with
        `medrg.hub.load_pipeline(save_directory)` without running the folder's code."""
        writer = type(self).hub_folder_writer or _package_hub_folder_writer()
        if writer is not None and not kwargs:
            writer(self.model, self.processor, save_directory)
            return
        write_code_folder(self.model, self.processor, save_directory, type(self), **kwargs)

    def _sanitize_parameters(
        self,
        report=None,
        threshold=None,
        top_k=_UNSET,
        max_new_tokens=None,
        keep_top_box=None,
        return_status=None,
        timeout=None,
        guided=None,
        **kwargs,
    ):
        if kwargs:
            hints = []
            for name in sorted(kwargs):
                close = difflib.get_close_matches(name, _OPTIONS + _CALL_OPTIONS, n=1)
                hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise TypeError(
                f"ReportGroundingPipeline got unexpected keyword argument(s): {', '.join(hints)}; it accepts "
                f"{', '.join(_OPTIONS + _CALL_OPTIONS)}"
            )
        preprocess, forward, postprocess = {}, {}, {}
        if report is not None:
            preprocess["report"] = report
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
                raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
            preprocess["timeout"] = float(timeout)
        if guided is not None:
            forward["guided"] = postprocess["guided"] = _check_bool("guided", guided)
        if max_new_tokens is not None:
            forward["max_new_tokens"] = _check_positive_int("max_new_tokens", max_new_tokens)
        if threshold is not None:
            postprocess["threshold"] = _check_threshold(threshold)
            postprocess["threshold_set"] = True
        if top_k is not _UNSET:
            postprocess["top_k"] = _check_positive_int("top_k", top_k, allow_none=True)
        if keep_top_box is not None:
            postprocess["keep_top_box"] = bool(keep_top_box)
        if return_status is not None:
            postprocess["return_status"] = _check_bool("return_status", return_status)
        return preprocess, forward, postprocess

    def __call__(self, inputs, report=None, **kwargs):
        _check_call_options(kwargs.get("batch_size"), kwargs.get("num_workers"))
        if _is_hf_dataset(inputs):
            if not hasattr(inputs, "__len__"):  # an IterableDataset: rows one by one
                return super().__call__((_item(i, row) for i, row in enumerate(inputs)), **kwargs)
            missing = [name for name in ("image", "report") if name not in inputs.column_names]
            if missing and report is None:
                raise ValueError(
                    f"A dataset input needs 'image' and 'report' columns; it has {inputs.column_names} "
                    f"(missing {missing})"
                )
            return list(super().__call__(_RowDataset(inputs, report), **kwargs))
        if isinstance(inputs, Dataset):
            return super().__call__(_RowDataset(inputs, report), **kwargs)
        if isinstance(inputs, (list, tuple)):
            if not inputs:
                return []
            if isinstance(report, str):  # one report for every image
                report = [report] * len(inputs)
            if report is not None and len(report) != len(inputs):
                raise ValueError(
                    "With a list of images pass one report (a string) or a list of reports of the same length"
                )
            reports = [None] * len(inputs) if report is None else list(report)
            return super().__call__(
                [_item(i, x, r) for i, (x, r) in enumerate(zip(inputs, reports))], **kwargs
            )
        if hasattr(inputs, "__next__"):  # a generator / iterator: results come back as an iterator
            return super().__call__((_item(i, x) for i, x in enumerate(inputs)), **kwargs)
        return super().__call__(_item(0, inputs, report), **kwargs)

    def preprocess(self, inputs, report=None, timeout: float = DEFAULT_URL_TIMEOUT_S):
        item = _item(0, inputs, report)
        if item.report is None:
            raise ValueError(
                f"Input {item.index}: the report-grounding pipeline needs a report: pipe(image, report='...')"
            )
        image = item.image
        if isinstance(image, str) and image.startswith(("http://", "https://")):
            image = _fetch_url_image(image, timeout)
        else:
            image = load_image(image)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model_inputs = self.processor(
                images=image, text=item.report, return_tensors="pt", return_report_truncated=True
            )
        for warning in caught:  # the processor numbers samples per call (always 0 here): name the input
            message = str(warning.message)
            if message.startswith("Sample 0: "):
                message = f"Input {item.index}: " + message[len("Sample 0: ") :]
                message += "; pass return_status=True to see report_truncated per input"
            warnings.warn(message, warning.category, stacklevel=2)
        model_inputs["input_index"] = torch.tensor([item.index], dtype=torch.long)
        model_inputs["report"] = item.report  # a string: batching gives a list of them, one per input
        return model_inputs

    def _forward(self, model_inputs, max_new_tokens: int | None = None, guided: bool = True):
        input_ids, reports = model_inputs["input_ids"], model_inputs["report"]
        reports = [reports] if isinstance(reports, str) else list(reports)
        decoding = self.processor.generation_inputs(
            reports, input_ids.shape[1], model_inputs["image_sizes"], guided, max_new_tokens
        )
        # Inference runs in eval mode whatever mode the caller left the model in (a model fresh from a builder or
        # from `Trainer` is in train mode: BatchNorm would use and update batch statistics, dropout would be on),
        # and the caller's mode is restored module by module afterwards: a call never changes the model.
        training = [module for module in self.model.modules() if module.training]
        for module in training:
            module.training = False
        try:
            output = self.model.generate_grounding(
                input_ids=input_ids,
                pixel_values=model_inputs["pixel_values"],
                attention_mask=model_inputs["attention_mask"],
                **decoding,
            )
        finally:
            for module in training:
                module.training = True
        batch = output.sequences.shape[0]
        # every value batched along dim 0, so that the pipeline can split a batch into its inputs: the boxes in
        # their slots with the token ids they were read from (prompt + answer), as `forward` gives them
        return {
            "input_ids": output.sequences,
            "pred_boxes": output.pred_boxes,
            "pred_scores": output.pred_scores,
            "box_mask": output.box_mask,
            "finished": output.finished,
            "image_sizes": model_inputs["image_sizes"],
            "report_truncated": model_inputs["report_truncated"],
            "input_index": model_inputs["input_index"],
            "max_new_tokens": torch.full((batch,), decoding["max_new_tokens"], dtype=torch.long),
            "report": model_inputs["report"],
        }

    def postprocess(
        self,
        model_outputs,
        threshold: float = DEFAULT_THRESHOLD,
        top_k: int | None = DEFAULT_TOP_K,
        keep_top_box: bool | None = None,
        return_status: bool = False,
        threshold_set: bool = False,
        guided: bool = True,
    ):
        # a caller-set threshold filters every box; without one a guided finding keeps its best box
        if keep_top_box is None:
            keep_top_box = guided and not threshold_set
        result = self.processor.post_process_grounding(
            model_outputs,
            target_sizes=model_outputs["image_sizes"],
            threshold=threshold,
            keep_top_box=keep_top_box,
            top_k=top_k,
            input_ids=model_outputs["input_ids"],
        )[0]
        records = [
            {
                "label": label,
                "score": float(score),
                "box": dict(zip(("xmin", "ymin", "xmax", "ymax"), (float(v) for v in box))),
            }
            for label, score, box in zip(result["labels"], result["scores"], result["boxes"])
        ]
        if return_status:
            report = model_outputs["report"]  # one input's report
            reading = self.processor.read_report(report if isinstance(report, str) else report[0])[0]
            return {
                "findings": records,
                "finished": result["finished"],
                "report_truncated": bool(model_outputs["report_truncated"].reshape(-1)[0]),
                "read": _read_status(reading, records, guided, result["finished"]),
                "unsupported_text": list(reading.unsupported),
            }
        if not result["finished"]:
            logger.warning(
                "Input %d: the model's answer was cut off at max_new_tokens=%d before it finished: the findings "
                "may be incomplete. Raise max_new_tokens, or pass return_status=True to see this per input.",
                int(model_outputs["input_index"].reshape(-1)[0]),
                int(model_outputs["max_new_tokens"].reshape(-1)[0]),
            )
        return records


__all__ = [
    "CUSTOM_PIPELINE_ENTRY",
    "DEFAULT_MAX_NEW_TOKENS",
    "DEFAULT_THRESHOLD",
    "DEFAULT_TOP_K",
    "DEFAULT_URL_TIMEOUT_S",
    "TASK",
    "write_code_folder",
    "ReportGroundingPipeline",
]
