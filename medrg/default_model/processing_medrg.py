"""MedRGProcessor: tokenizer with `<image>`/`<BOX>`, X-ray image processing, prompt/answer templates, training
labels and targets, and post-processing of generated groundings into prediction records."""

from __future__ import annotations

import warnings

import torch
from transformers import BatchFeature, ProcessorMixin

from .image_processing_medrg import (
    LetterboxGeometry,
    cxcywh_to_xyxy,
    letterbox,
    normalise,
    xray_to_intensity,
    xyxy_to_cxcywh,
)
from .prompting_medrg import (
    DEFAULT_INSTRUCTION,
    DEFAULT_NO_FINDING_ANSWER,
    PHRASE_STRIP,
    answer_text,
    prompt_pieces,
    sanitize_text,
)

IGNORE_INDEX = -100


class MedRGProcessor(ProcessorMixin):
    r"""
    Turns (X-ray, report[, findings]) into MedRG inputs, and MedRG's generations into
    `{"label", "score", "box": {"xmin", "ymin", "xmax", "ymax"}}` records in the caller's pixels.

    Args:
        tokenizer: a tokenizer that holds `image_token` and `box_token` as special tokens (one id each).
        image_size (`int`): side of the square, letterboxed model input.
        image_mean, image_std (`list[float]`): per-channel normalisation; their length is the channel count.
        num_image_tokens (`int`): `<image>` placeholders per prompt (= `model.config.num_image_tokens`).
        max_length (`int`): longest token sequence; an over-long report is truncated with a warning.
        max_image_pixels (`int`): images with more pixels are refused (decompression-bomb guard).
        instruction (`str`), no_finding_answer (`str`): the prompt instruction and the answer with no finding.
        add_bos_token (`bool`): start every sequence with the tokenizer's BOS token (if it has one).
    """

    def __init__(
        self,
        tokenizer=None,
        image_size: int = 224,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        num_image_tokens: int = 49,
        max_length: int = 512,
        max_image_pixels: int = 100_000_000,
        instruction: str = DEFAULT_INSTRUCTION,
        no_finding_answer: str = DEFAULT_NO_FINDING_ANSWER,
        image_token: str = "<image>",
        box_token: str = "<BOX>",
        add_bos_token: bool = True,
        chat_template=None,
    ):
        self.image_size = int(image_size)
        self.image_mean = list(image_mean) if image_mean is not None else [0.5, 0.5, 0.5]
        self.image_std = list(image_std) if image_std is not None else [0.5, 0.5, 0.5]
        self.num_image_tokens = int(num_image_tokens)
        self.max_length = int(max_length)
        self.max_image_pixels = int(max_image_pixels)
        self.instruction = instruction
        self.no_finding_answer = no_finding_answer
        self.image_token = image_token
        self.box_token = box_token
        self.add_bos_token = bool(add_bos_token)
        if len(self.image_mean) != len(self.image_std) or not self.image_mean:
            raise ValueError(
                f"image_mean and image_std need the same non-zero length, got {self.image_mean} and {self.image_std}"
            )
        if any(s <= 0 for s in self.image_std):
            raise ValueError(f"image_std must be positive, got {self.image_std}")
        for name in ("image_size", "num_image_tokens", "max_length", "max_image_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"MedRGProcessor.{name} must be >= 1, got {getattr(self, name)}")
        super().__init__(tokenizer, chat_template=chat_template)
        self.image_token_id = self._single_token_id(image_token)
        self.box_token_id = self._single_token_id(box_token)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            raise ValueError("The tokenizer needs a pad token")

    def _single_token_id(self, token: str) -> int:
        ids = self.tokenizer.encode(token, add_special_tokens=False)
        if len(ids) != 1 or token not in self.tokenizer.all_special_tokens:
            raise ValueError(
                f"{token!r} must be ONE special token of the tokenizer, but it encodes to {ids}; add it with "
                f"tokenizer.add_special_tokens({{'additional_special_tokens': [{token!r}]}}, "
                "replace_extra_special_tokens=False)"
            )
        return ids[0]

    # ----- images -----
    def prepare_image(self, image) -> tuple[torch.Tensor, LetterboxGeometry]:
        """One image -> `(channels, size, size)` model input and its letterbox geometry."""
        intensity = xray_to_intensity(image, self.max_image_pixels)
        canvas, geometry = letterbox(intensity, self.image_size)
        return normalise(canvas, self.image_mean, self.image_std), geometry

    # ----- text -----
    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _prompt_ids(self, report: str, answer_length: int, index: int) -> list[int]:
        head, tail = prompt_pieces(self.instruction)
        start = (
            [self.tokenizer.bos_token_id]
            if self.add_bos_token and self.tokenizer.bos_token_id is not None
            else []
        )
        fixed_head = start + [self.image_token_id] * self.num_image_tokens + self._encode(head)
        fixed_tail = self._encode(tail)
        report_ids = self._encode(sanitize_text(report, [self.image_token, self.box_token]))
        budget = self.max_length - len(fixed_head) - len(fixed_tail) - answer_length
        if budget < 1:
            raise ValueError(
                f"Sample {index}: max_length={self.max_length} leaves no room for the report after "
                f"{len(fixed_head) + len(fixed_tail)} prompt tokens and {answer_length} answer tokens"
            )
        if len(report_ids) > budget:
            warnings.warn(
                f"Sample {index}: the report has {len(report_ids)} tokens, more than the {budget} that fit in "
                f"max_length={self.max_length}; it is truncated (the instruction and image are kept)",
                stacklevel=3,
            )
            report_ids = report_ids[:budget]
        return fixed_head + report_ids + fixed_tail

    def _answer_ids(self, phrases: list[str], index: int) -> list[int]:
        phrases = [sanitize_text(p, [self.image_token, self.box_token]) for p in phrases]
        ids = self._encode(answer_text(phrases, self.box_token, self.no_finding_answer))
        if ids.count(self.box_token_id) != len(phrases):
            raise ValueError(
                f"Sample {index}: the answer holds {ids.count(self.box_token_id)} <BOX> tokens for "
                f"{len(phrases)} findings"
            )
        return ids + [self.tokenizer.eos_token_id]

    # ----- targets -----
    @staticmethod
    def _check_report(report, index: int) -> str:
        if not isinstance(report, str):
            raise TypeError(f"Sample {index}: the report must be a string, got {type(report).__name__}")
        if not report.strip():
            raise ValueError(f"Sample {index}: the report is empty")
        return report

    def _finding_boxes(
        self, finding, index: int, finding_index: int, geometry: LetterboxGeometry
    ) -> torch.Tensor:
        where = f"findings[{index}][{finding_index}]"
        if not isinstance(finding, dict) or "phrase" not in finding or "boxes" not in finding:
            raise ValueError(f"{where} must be a dict with 'phrase' and 'boxes', got {finding!r}")
        if not isinstance(finding["phrase"], str) or not finding["phrase"].strip(PHRASE_STRIP):
            raise ValueError(f"{where}['phrase'] must be a non-empty string, got {finding['phrase']!r}")
        boxes = finding["boxes"]
        if len(boxes) == 0:
            raise ValueError(f"{where}['boxes'] is empty: a finding needs at least one box")
        out = []
        for box_index, box in enumerate(boxes):
            box_where = f"{where}['boxes'][{box_index}]"
            try:
                values = [float(v) for v in box]
            except (TypeError, ValueError):
                raise ValueError(
                    f"{box_where} must be 4 numbers [xmin, ymin, xmax, ymax], got {box!r}"
                ) from None
            if len(values) != 4:
                raise ValueError(
                    f"{box_where} must have 4 numbers [xmin, ymin, xmax, ymax], got {len(values)}"
                )
            tensor = torch.tensor(values, dtype=torch.float32)
            if not torch.isfinite(tensor).all():
                raise ValueError(f"{box_where} has a NaN or infinite coordinate: {values}")
            if values[2] <= values[0] or values[3] <= values[1]:
                raise ValueError(
                    f"{box_where} has zero or negative area: {values} (need xmax > xmin, ymax > ymin)"
                )
            out.append(tensor)
        model_xyxy = geometry.image_to_model(torch.stack(out)).clamp(0, 1)
        return xyxy_to_cxcywh(model_xyxy)

    # ----- main entry -----
    def __call__(
        self, images=None, text=None, findings=None, return_tensors: str | None = "pt", **kwargs
    ) -> BatchFeature:
        """
        Args:
            images: one image or a list (PIL, numpy array or tensor; 8/16-bit, grayscale/RGB/RGBA, any size).
            text: the report, or a list of reports (one per image).
            findings: for training, per image a list of `{"phrase": str, "boxes": [[xmin, ymin, xmax, ymax], ...]}`
                in the image's pixels (the dataset schema); an empty list means "no finding".

        Returns:
            `BatchFeature` with `input_ids`, `attention_mask` (left-padded), `pixel_values`, `image_sizes`
            (original `(height, width)`), and with findings also `labels`, `target_boxes`, `target_boxes_mask`.
        """
        if kwargs:
            raise TypeError(f"MedRGProcessor got unexpected arguments: {sorted(kwargs)}")
        if images is None or text is None:
            raise ValueError("MedRGProcessor needs both images and text (the reports)")
        single = not isinstance(text, (list, tuple))
        reports = [text] if single else list(text)
        image_list = [images] if (single or not isinstance(images, (list, tuple))) else list(images)
        if len(image_list) != len(reports):
            raise ValueError(
                f"Got {len(image_list)} images for {len(reports)} reports; pass one report per image"
            )
        if findings is not None:
            findings_list = [findings] if single else list(findings)
            if len(findings_list) != len(reports):
                raise ValueError(f"Got {len(findings_list)} findings lists for {len(reports)} reports")
        pixel_values, sizes, sequences, label_rows, target_rows = [], [], [], [], []
        for index, (image, report) in enumerate(zip(image_list, reports)):
            report = self._check_report(report, index)
            try:
                pixels, geometry = self.prepare_image(image)
            except (ValueError, TypeError) as error:
                raise type(error)(f"Sample {index}: {error}") from None
            pixel_values.append(pixels)
            sizes.append([geometry.height, geometry.width])
            answer = []
            if findings is not None:
                sample_findings = findings_list[index] or []
                targets = [self._finding_boxes(f, index, j, geometry) for j, f in enumerate(sample_findings)]
                answer = self._answer_ids([f["phrase"] for f in sample_findings], index)
                target_rows.append(targets)
            prompt = self._prompt_ids(report, len(answer), index)
            sequences.append(prompt + answer)
            label_rows.append([IGNORE_INDEX] * len(prompt) + answer)
        data = self._pad(sequences, label_rows if findings is not None else None)
        data["pixel_values"] = torch.stack(pixel_values)
        data["image_sizes"] = torch.tensor(sizes, dtype=torch.long)
        if findings is not None:
            data.update(self._pad_targets(target_rows))
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _pad(self, sequences: list[list[int]], label_rows: list[list[int]] | None) -> dict:
        longest = max(len(s) for s in sequences)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(sequences), longest), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)
        labels = torch.full((len(sequences), longest), IGNORE_INDEX, dtype=torch.long)
        for row, ids in enumerate(sequences):
            input_ids[row, longest - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, longest - len(ids) :] = 1
            if label_rows is not None:
                labels[row, longest - len(ids) :] = torch.tensor(label_rows[row], dtype=torch.long)
        data = {"input_ids": input_ids, "attention_mask": attention_mask}
        if label_rows is not None:
            data["labels"] = labels
        return data

    @staticmethod
    def _pad_targets(target_rows: list[list[torch.Tensor]]) -> dict:
        max_findings = max([len(row) for row in target_rows] + [1])
        max_boxes = max([t.shape[0] for row in target_rows for t in row] + [1])
        boxes = torch.zeros((len(target_rows), max_findings, max_boxes, 4), dtype=torch.float32)
        mask = torch.zeros((len(target_rows), max_findings, max_boxes), dtype=torch.bool)
        for row, targets in enumerate(target_rows):
            for finding, tensor in enumerate(targets):
                boxes[row, finding, : tensor.shape[0]] = tensor
                mask[row, finding, : tensor.shape[0]] = True
        return {"target_boxes": boxes, "target_boxes_mask": mask}

    # ----- post-processing -----
    def post_process_grounding(
        self,
        outputs,
        target_sizes,
        threshold: float = 0.0,
        keep_top_box: bool = True,
        nms_iou: float = 0.5,
    ) -> list[list[dict]]:
        """Generated groundings -> per image a list of `{"label", "score", "box": {xmin, ymin, xmax, ymax}}`.

        Args:
            outputs: [`MedRGGroundingOutput`] (or a mapping with `sequences`, `prompt_length`, `generated_mask`,
                `pred_boxes`, `pred_scores`).
            target_sizes: per image its original `(height, width)` (e.g. `inputs["image_sizes"]`).
            threshold: boxes with a lower confidence are dropped, except each phrase's best box when
                `keep_top_box` (the LM said the finding is there, so it always gets its most likely box).
            nms_iou: a further box of the same phrase is dropped when it overlaps a kept one by more than this.

        Each phrase is the generated text before its `<BOX>`; records are ordered by phrase, then by score.
        """
        get = outputs.get if isinstance(outputs, dict) else lambda key: getattr(outputs, key)
        sequences, prompt_length = get("sequences"), int(get("prompt_length"))
        generated_mask, pred_boxes, pred_scores = get("generated_mask"), get("pred_boxes"), get("pred_scores")
        if torch.is_tensor(target_sizes):
            target_sizes = target_sizes.tolist()
        if len(target_sizes) != sequences.shape[0]:
            raise ValueError(f"Got {len(target_sizes)} target sizes for {sequences.shape[0]} generations")
        results = []
        for sample, (height, width) in enumerate(target_sizes):
            geometry = LetterboxGeometry.compute(int(height), int(width), self.image_size)
            ids = sequences[sample, prompt_length:]
            if generated_mask is not None:
                ids = ids[generated_mask[sample].bool()]
            phrases, current = [], []
            for token in ids.tolist():
                if token == self.box_token_id:
                    phrases.append(
                        self.tokenizer.decode(current, skip_special_tokens=True).strip(PHRASE_STRIP)
                    )
                    current = []
                else:
                    current.append(token)
            boxes, scores = pred_boxes[sample], pred_scores[sample]
            if boxes.shape[0] != len(phrases):
                raise ValueError(
                    f"Sample {sample}: {len(phrases)} generated <BOX> tokens but {boxes.shape[0]} predicted box sets"
                )
            records = []
            for phrase, phrase_boxes, phrase_scores in zip(phrases, boxes, scores):
                pixels = geometry.model_to_image(cxcywh_to_xyxy(phrase_boxes.float().clamp(0, 1)))
                kept: list[int] = []
                for k in torch.argsort(phrase_scores, descending=True).tolist():
                    score = float(phrase_scores[k])
                    if not (score >= threshold or (keep_top_box and not kept)):
                        continue
                    if any(_iou(pixels[k], pixels[j]) > nms_iou for j in kept):
                        continue
                    if float(pixels[k, 2] - pixels[k, 0]) <= 0 or float(pixels[k, 3] - pixels[k, 1]) <= 0:
                        continue  # a box entirely in the letterbox padding has no extent in the image
                    kept.append(k)
                    x0, y0, x1, y1 = (float(v) for v in pixels[k])
                    records.append(
                        {
                            "label": phrase,
                            "score": score,
                            "box": {"xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1},
                        }
                    )
            results.append(records)
        return results


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    inter_w = max(0.0, float(torch.min(a[2], b[2]) - torch.max(a[0], b[0])))
    inter_h = max(0.0, float(torch.min(a[3], b[3]) - torch.max(a[1], b[1])))
    inter = inter_w * inter_h
    union = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - inter
    return inter / union if union > 0 else 0.0


__all__ = ["MedRGProcessor"]
