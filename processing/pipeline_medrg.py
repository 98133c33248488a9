"""`pipeline("report-grounding")`: an X-ray and its free-text report in, grounded finding phrases out."""

from __future__ import annotations

import logging

import torch
from transformers import Pipeline

from .image_processing_medrg import load_image

logger = logging.getLogger(__name__)


class ReportGroundingPipeline(Pipeline):
    """Grounds every key finding of a radiology report in its chest X-ray.

    ```python
    pipe = pipeline("report-grounding", model="path/to/medrg", trust_remote_code=True)
    pipe("cxr.png", report="Patchy consolidation in the left upper lobe. No effusion.")
    # [{"label": "patchy consolidation in the left upper lobe", "score": 0.87,
    #   "box": {"xmin": 310.0, "ymin": 120.5, "xmax": 420.0, "ymax": 260.0}}]
    ```

    Inputs: `pipe(image, report=...)`, `pipe({"image": ..., "report": ...})`, or a list of either (with
    `batch_size=`); an image is a PIL image, a numpy array, a tensor, or a file path (`str`/`pathlib.Path`; PNG,
    JPEG, ... and DICOM). Options: `threshold` (drop boxes below this confidence, each phrase keeps its best box),
    `keep_top_box`, `max_new_tokens`, `return_status`.

    Returns per input a list of `{"label", "score", "box": {"xmin", "ymin", "xmax", "ymax"}}` in that image's
    pixels (an empty list when the model grounds nothing). When the answer was cut off by `max_new_tokens` a
    warning is logged; with `return_status=True` each input instead gives
    `{"findings": [records], "finished": bool, "report_truncated": bool}`, so "no finding" can be told apart from
    "the model could not finish" and from "the report did not fit".
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args, **kwargs):
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
        """Save the model, its hub code and the pipeline entry (`Pipeline.save_pretrained`), and the processor."""
        super().save_pretrained(save_directory, **kwargs)
        self.processor.save_pretrained(save_directory, **kwargs)

    def _sanitize_parameters(
        self,
        report=None,
        threshold=None,
        max_new_tokens=None,
        keep_top_box=None,
        return_status=None,
        **kwargs,
    ):
        preprocess, forward, postprocess = {}, {}, {}
        if report is not None:
            preprocess["report"] = report
        if max_new_tokens is not None:
            forward["max_new_tokens"] = int(max_new_tokens)
        if threshold is not None:
            postprocess["threshold"] = float(threshold)
        if keep_top_box is not None:
            postprocess["keep_top_box"] = bool(keep_top_box)
        if return_status is not None:
            postprocess["return_status"] = bool(return_status)
        return preprocess, forward, postprocess

    def __call__(self, inputs, report=None, **kwargs):
        if isinstance(inputs, (list, tuple)):
            if report is not None:
                if isinstance(report, str) or len(report) != len(inputs):
                    raise ValueError("With a list of images pass a list of reports of the same length")
                inputs = [{"image": image, "report": text} for image, text in zip(inputs, report)]
            return super().__call__(list(inputs), **kwargs)
        if report is not None:
            inputs = {"image": inputs, "report": report}
        return super().__call__(inputs, **kwargs)

    def preprocess(self, inputs, report=None):
        if isinstance(inputs, dict):
            if "image" not in inputs or "report" not in inputs:
                raise ValueError(f"An input dict needs 'image' and 'report' keys, got {sorted(inputs)}")
            image, text = inputs["image"], inputs["report"]
        else:
            image, text = inputs, report
        if text is None:
            raise ValueError("The report-grounding pipeline needs a report: pipe(image, report='...')")
        return self.processor(
            images=load_image(image), text=text, return_tensors="pt", return_report_truncated=True
        )

    def _forward(self, model_inputs, max_new_tokens: int = 64):
        output = self.model.generate_grounding(
            input_ids=model_inputs["input_ids"],
            pixel_values=model_inputs["pixel_values"],
            attention_mask=model_inputs["attention_mask"],
            max_new_tokens=max_new_tokens,
        )
        # every value batched along dim 0, so that the pipeline can split a batch into its inputs
        batch = output.sequences.shape[0]
        return {
            "sequences": output.sequences[:, output.prompt_length :],
            "generated_mask": output.generated_mask,
            "pred_boxes": output.pred_boxes,
            "pred_scores": output.pred_scores,
            "box_mask": output.box_mask,
            "finished": output.finished,
            "image_sizes": model_inputs["image_sizes"],
            "report_truncated": model_inputs["report_truncated"],
            "max_new_tokens": torch.full((batch,), max_new_tokens, dtype=torch.long),
        }

    def postprocess(
        self, model_outputs, threshold: float = 0.0, keep_top_box: bool = True, return_status=False
    ):
        outputs = {**model_outputs, "prompt_length": 0}  # `sequences` holds the generated ids only
        result = self.processor.post_process_grounding(
            outputs, target_sizes=model_outputs["image_sizes"], threshold=threshold, keep_top_box=keep_top_box
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
            return {
                "findings": records,
                "finished": result["finished"],
                "report_truncated": bool(model_outputs["report_truncated"].reshape(-1)[0]),
            }
        if not result["finished"]:
            logger.warning(
                "The model's answer was cut off at max_new_tokens=%d before it finished: the findings may be "
                "incomplete. Raise max_new_tokens, or pass return_status=True to see this per input.",
                int(model_outputs["max_new_tokens"].reshape(-1)[0]),
            )
        return records


__all__ = ["ReportGroundingPipeline"]
