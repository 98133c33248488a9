"""`pipeline("report-grounding")`: an X-ray and its free-text report in, grounded finding phrases out."""

from __future__ import annotations

import torch
from transformers import Pipeline


def _load_image(image):
    """A path is opened with Pillow (16-bit PNGs keep their depth); other images pass through unchanged."""
    if isinstance(image, str):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(image) as opened:
                opened.load()
                return opened.copy()
        except FileNotFoundError:
            raise ValueError(f"Image file not found: {image}") from None
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
            raise ValueError(f"Cannot read image file {image}: {error}") from None
    return image


class ReportGroundingPipeline(Pipeline):
    """Grounds every key finding of a radiology report in its chest X-ray.

    ```python
    pipe = pipeline("report-grounding", model="path/to/medrg", trust_remote_code=True)
    pipe("cxr.png", report="Patchy consolidation in the left upper lobe. No effusion.")
    # [{"label": "patchy consolidation in the left upper lobe", "score": 0.87,
    #   "box": {"xmin": 310.0, "ymin": 120.5, "xmax": 420.0, "ymax": 260.0}}]
    ```

    Inputs: `pipe(image, report=...)`, `pipe({"image": ..., "report": ...})`, or a list of either (with
    `batch_size=`); an image is a PIL image, a path or a numpy array. Options: `threshold` (drop boxes below this
    confidence, each phrase keeps its best box), `max_new_tokens`. Returns per input a list of
    `{"label", "score", "box": {"xmin", "ymin", "xmax", "ymax"}}` in that image's pixels; an empty list when the
    model finds nothing to ground.
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.processor is None:
            raise ValueError("The report-grounding pipeline needs the MedRGProcessor (pass processor=...)")
        # batching pads with the processor's tokenizer, on the left as generation needs
        self.tokenizer = self.processor.tokenizer

    def save_pretrained(self, save_directory, **kwargs):
        # the registered default model is a folder of the local installation: keep it out of saved configs
        registered = getattr(type(self), "_registered_impl", None)
        if registered:
            self._registered_impl = {
                task: {key: value for key, value in impl.items() if key != "default"}
                for task, impl in registered.items()
            }
        try:
            return super().save_pretrained(save_directory, **kwargs)
        finally:
            self.__dict__.pop("_registered_impl", None)

    def _sanitize_parameters(
        self, report=None, threshold=None, max_new_tokens=None, keep_top_box=None, **kwargs
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
        inputs = self.processor(images=_load_image(image), text=text, return_tensors="pt")
        # The batching collate of transformers pipelines stacks a key named "image" and pads input_ids with the
        # tokenizer; "pixel_values" would need an image processor object, which MedRG keeps inside its processor.
        inputs["image"] = inputs.pop("pixel_values")
        return inputs

    def _forward(self, model_inputs, max_new_tokens: int = 64):
        output = self.model.generate_grounding(
            input_ids=model_inputs["input_ids"],
            pixel_values=model_inputs["image"],
            attention_mask=model_inputs["attention_mask"],
            max_new_tokens=max_new_tokens,
        )
        generated = output.sequences[:, output.prompt_length :]
        return {
            "generated_ids": generated,
            "generated_mask": output.generated_mask,
            "pred_boxes": output.pred_boxes,
            "pred_scores": output.pred_scores,
            "image_sizes": model_inputs["image_sizes"],
        }

    def postprocess(self, model_outputs, threshold: float = 0.0, keep_top_box: bool = True):
        boxes, scores = model_outputs["pred_boxes"], model_outputs["pred_scores"]
        # unbatched items arrive with a leading batch dimension of 1
        boxes = boxes if isinstance(boxes, list) else [boxes[0] if boxes.dim() == 4 else boxes]
        scores = scores if isinstance(scores, list) else [scores[0] if scores.dim() == 3 else scores]
        outputs = {
            "sequences": model_outputs["generated_ids"],
            "prompt_length": 0,
            "generated_mask": model_outputs["generated_mask"],
            "pred_boxes": [b.float().cpu() for b in boxes],
            "pred_scores": [s.float().cpu() for s in scores],
        }
        sizes = model_outputs["image_sizes"]
        sizes = sizes.reshape(-1, 2) if torch.is_tensor(sizes) else sizes
        records = self.processor.post_process_grounding(
            outputs, target_sizes=sizes, threshold=threshold, keep_top_box=keep_top_box
        )
        return records[0]


__all__ = ["ReportGroundingPipeline"]
