"""MedRGProcessor: the X-ray image processor plus a tokenizer with `<image>`/`<BOX>`, the prompt/answer templates,
training labels and targets, and the post-processing of generated groundings into boxes in the caller's pixels."""

from __future__ import annotations

import warnings

import torch
from torch.nn.utils.rnn import pad_sequence
from transformers import BatchFeature, LogitsProcessorList, ProcessorMixin
from transformers.image_transforms import center_to_corners_format, corners_to_center_format

from .box_prior_medrg import BoxPrior
from .guide_medrg import ReportGuide
from .image_processing_medrg import LetterboxGeometry, MedRGImageProcessor
from .prompting_medrg import (
    ANSWER_END,
    ANSWER_PREFIX,
    DEFAULT_INSTRUCTION,
    DEFAULT_NO_FINDING_ANSWER,
    PHRASE_SEPARATOR,
    PHRASE_STRIP,
    answer_text,
    prompt_pieces,
    sanitize_text,
)
from .reading_medrg import MAX_REPORT_CHARS, ReadResult, ReportReader
from .vocabulary_medrg import FindingVocabulary

IGNORE_INDEX = -100
# the generation budget of an answer (a guided answer gets more when its findings need more)
DEFAULT_MAX_NEW_TOKENS = 64


def platt_scale(scores: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """`sigmoid(a * logit(scores) + b)`: the score calibration of `MedRGProcessor.score_calibration`."""
    return torch.sigmoid(a * torch.logit(scores, eps=1e-6) + b)


class MedRGProcessor(ProcessorMixin):
    r"""
    Turns (X-ray, report[, findings]) into MedRG inputs, and MedRG's generations into boxes per finding phrase.

    Args:
        image_processor ([`MedRGImageProcessor`]): letterbox, bit depth, normalisation (default: 224 px, mean/std
            0.5).
        tokenizer: a tokenizer that holds `image_token` and `box_token` as special tokens (one id each).
        num_image_tokens (`int`): `<image>` placeholders per prompt (= `model.config.num_image_tokens`).
        max_length (`int`): longest token sequence; an over-long report is truncated with a warning.
        instruction (`str`), no_finding_answer (`str`): the prompt instruction and the answer with no finding.
        add_bos_token (`bool`): start every sequence with the tokenizer's BOS token (if it has one).
        vocabulary (`dict`): the finding vocabulary the report reader reads with (`vocabulary_medrg.default_vocabulary()`
            by default; saved in `processor_config.json`, extended by fine-tuning: `extend_vocabulary`).
        score_calibration (`[a, b]`): Platt scaling of the box confidences in `post_process_grounding`:
            `sigmoid(a * logit(score) + b)` (default `[1.0, 0.0]`: the model's scores as they are). Fitted on held-out
            data by `benchmarks/calibrate_scores.py`, so that a score of 0.7 means a 70% chance of IoU >= 0.5.
        box_prior (`dict`): optional `box_prior_medrg.BoxPrior.to_dict()`: the mean training box of each finding,
            side and zone, read off a phrase. With it, training inputs and report-guided decoding carry
            `reference_boxes` (the box decoder's first box, which the image then moves).
    """

    def __init__(
        self,
        image_processor: MedRGImageProcessor | None = None,
        tokenizer=None,
        num_image_tokens: int = 49,
        max_length: int = 512,
        instruction: str = DEFAULT_INSTRUCTION,
        no_finding_answer: str = DEFAULT_NO_FINDING_ANSWER,
        image_token: str = "<image>",
        box_token: str = "<BOX>",
        add_bos_token: bool = True,
        score_calibration=(1.0, 0.0),
        vocabulary: dict | None = None,
        box_prior: dict | None = None,
        chat_template=None,
    ):
        self.num_image_tokens = int(num_image_tokens)
        self.max_length = int(max_length)
        self.instruction = instruction
        self.no_finding_answer = no_finding_answer
        self.image_token = image_token
        self.box_token = box_token
        self.add_bos_token = bool(add_bos_token)
        self.score_calibration = self._check_calibration(score_calibration)
        # the finding vocabulary (plain data, saved in processor_config.json) and the reader that reads with it
        finding_vocabulary = FindingVocabulary(vocabulary)
        self.vocabulary = finding_vocabulary.to_dict()
        self.reader = ReportReader(finding_vocabulary)
        self.prior = BoxPrior.from_dict(box_prior)
        self.box_prior = self.prior.to_dict() if self.prior else None
        for name in ("num_image_tokens", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"MedRGProcessor.{name} must be >= 1, got {getattr(self, name)}")
        if tokenizer is None:
            raise ValueError("MedRGProcessor needs a tokenizer (with <image> and <BOX> special tokens)")
        if image_processor is None:
            image_processor = MedRGImageProcessor()
        super().__init__(image_processor, tokenizer, chat_template=chat_template)
        self.image_token_id = self._single_token_id(image_token)
        self.box_token_id = self._single_token_id(box_token)
        self.tokenizer.padding_side = "left"  # generation (and the pipeline's batch collate) pad on the left
        if self.tokenizer.pad_token_id is None:
            raise ValueError("The tokenizer needs a pad token")

    @staticmethod
    def _check_calibration(value) -> list[float]:
        """`[a, b]` as two floats. Refused: anything but a list/tuple of exactly two real numbers (a string such as
        "12", bools, a mapping), a map that is not increasing (a <= 0) or that saturates (raw scores 0.05 and 0.95
        both land within 0.01 of 0 or of 1, or closer than 0.05 to each other: every box would get the same
        score, as with a tampered `[0.001, 6.9]`)."""

        def is_number(v) -> bool:
            if isinstance(v, bool):
                return False
            return isinstance(v, (int, float)) or type(v).__name__.startswith("float")

        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ValueError(f"score_calibration must be a list of two numbers [a, b], got {value!r}")
        if not all(is_number(v) for v in value):
            raise ValueError(f"score_calibration must be a list of two numbers [a, b], got {value!r}")
        a, b = (float(v) for v in value)
        if not (a > 0 and abs(a) < 1e3 and abs(b) < 1e3):
            raise ValueError(
                f"score_calibration [a, b] needs 0 < a < 1000 (an increasing map) and |b| < 1000 (finite), "
                f"got {value!r}"
            )
        low, high = (float(platt_scale(torch.tensor(x, dtype=torch.float64), a, b)) for x in (0.05, 0.95))
        if high - low < 0.05 or high < 0.01 or low > 0.99:
            raise ValueError(
                f"score_calibration {value!r} saturates: it maps the raw scores 0.05 and 0.95 to {low:.3f} and "
                f"{high:.3f}, so every box would get about the same score; refit it with "
                "benchmarks/calibrate_scores.py"
            )
        return [a, b]

    def calibrate_scores(self, scores: torch.Tensor) -> torch.Tensor:
        """The box confidences after Platt scaling (`score_calibration`); identity for `[1, 0]`."""
        a, b = self.score_calibration
        if a == 1.0 and b == 0.0:
            return scores
        return platt_scale(scores.float(), a, b)

    @property
    def image_size(self) -> int:
        """Side of the square model input in pixels (held by the image processor)."""
        return self.image_processor.image_size

    def _single_token_id(self, token: str) -> int:
        ids = self.tokenizer.encode(token, add_special_tokens=False)
        if len(ids) != 1 or token not in self.tokenizer.all_special_tokens:
            raise ValueError(
                f"{token!r} must be ONE special token of the tokenizer, but it encodes to {ids}; add it with "
                f"tokenizer.add_special_tokens({{'additional_special_tokens': [{token!r}]}}, "
                "replace_extra_special_tokens=False)"
            )
        return ids[0]

    # ----- text -----
    def _encode_text(self, texts: list[str]) -> list[list[int]]:
        """User text -> ids; literal special tokens (`</s>`, `<pad>`, ...) stay text, `<image>`/`<BOX>` are
        neutralised first (a report saying "<BOX>" must not become the token, nor the same ids as one)."""
        clean = [sanitize_text(text, [self.image_token, self.box_token]) for text in texts]
        # report text is data: a line that repeats the prompt's own markers ("\nFindings:") is not a new section
        clean = [
            t.replace(ANSWER_PREFIX, " " + ANSWER_PREFIX.strip()).replace("\nReport: ", " Report: ")
            for t in clean
        ]
        return self.tokenizer(clean, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    def _encode_pieces(self, pieces: list[str]) -> list[list[int]]:
        """Answer pieces (the text between `<BOX>` tokens) -> ids, as the training answers encode them."""
        if not pieces:
            return []
        return self.tokenizer(pieces, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    def _encode_template(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _prompt_ids(
        self, reports: list[str], answer_lengths: list[int]
    ) -> tuple[list[list[int]], list[bool]]:
        """Per sample `[BOS] <image> x N + head + report + tail`, the report truncated to fit `max_length`."""
        head, tail = prompt_pieces(self.instruction)
        start = (
            [self.tokenizer.bos_token_id]
            if self.add_bos_token and self.tokenizer.bos_token_id is not None
            else []
        )
        fixed_head = start + [self.image_token_id] * self.num_image_tokens + self._encode_template(head)
        fixed_tail = self._encode_template(tail)
        prompts, truncated = [], []
        for index, (report_ids, answer_length) in enumerate(zip(self._encode_text(reports), answer_lengths)):
            budget = self.max_length - len(fixed_head) - len(fixed_tail) - answer_length
            if budget < 1:
                raise ValueError(
                    f"Sample {index}: max_length={self.max_length} leaves no room for the report after "
                    f"{len(fixed_head) + len(fixed_tail)} prompt tokens and {answer_length} answer tokens"
                )
            truncated.append(len(report_ids) > budget)
            if truncated[-1]:
                warnings.warn(
                    f"Sample {index}: the report has {len(report_ids)} tokens, more than the {budget} that fit in "
                    f"max_length={self.max_length}; it is truncated (the instruction and image are kept)",
                    stacklevel=3,
                )
                report_ids = report_ids[:budget]
            prompts.append(fixed_head + report_ids + fixed_tail)
        return prompts, truncated

    def _answer_ids(self, phrases: list[str], index: int) -> list[int]:
        """`phrase<BOX>; phrase<BOX>.` + EOS: each phrase encoded as text, each `<BOX>` as its one id."""
        phrases = [sanitize_text(p, [self.image_token, self.box_token]) for p in phrases]
        pieces = answer_text(phrases, self.box_token, self.no_finding_answer).split(self.box_token)
        encoded = self._encode_pieces(pieces)
        ids = list(encoded[0])
        for piece in encoded[1:]:
            ids += [self.box_token_id] + piece
        if ids.count(self.box_token_id) != len(phrases):
            raise ValueError(
                f"Sample {index}: the answer holds {ids.count(self.box_token_id)} <BOX> tokens for "
                f"{len(phrases)} findings"
            )
        return ids + [self.tokenizer.eos_token_id]

    # ----- report-guided decoding -----
    def read_report(self, reports: str | list[str]) -> list[ReadResult]:
        """Per report what the processor's reader (`reading_medrg.ReportReader` with this processor's
        `vocabulary`) reads: stated findings in the report's words (groundable or not), denied categories,
        sentences in another language. A report over `MAX_REPORT_CHARS` characters raises ValueError."""
        return [self.reader.read(report) for report in ([reports] if isinstance(reports, str) else reports)]

    def report_phrases(self, reports: str | list[str]) -> list[list[str]]:
        """Per report the phrases report-guided decoding asks the model to box: the stated findings of categories
        the model boxes (`grounded` in the vocabulary), in the report's own words; negated and hypothetical ones
        are left out, `[]` for a normal or denial-only report. The other stated findings are read, not grounded
        (`read_report`)."""
        return [result.phrases for result in self.read_report(reports)]

    def extend_vocabulary(
        self, category: str, phrases=(), grounded: bool = True, label: str | None = None
    ) -> str:
        """Add a category (or a category's wordings) to the vocabulary this processor reads and saves, e.g. a
        fine-tuning dataset's category with its answer phrases (see `FindingVocabulary.extend`)."""
        key = self.reader.vocabulary.extend(category, phrases, grounded=grounded, label=label)
        self.vocabulary = self.reader.vocabulary.to_dict()
        return key

    def report_guide(
        self,
        phrases: list[list[str]],
        prompt_length: int,
        require_all: bool = True,
        in_order: bool | None = None,
    ) -> ReportGuide:
        """A [`ReportGuide`] (a `LogitsProcessor`; `guided_decoding` passes it to `model.generate_grounding` with
        its forced runs) that lets sample i's answer name only `phrases[i]` (from `report_phrases`), each once, every one of them
        when `require_all`, and gives the no-finding answer when `phrases[i]` is empty. `in_order` (default: True
        when the processor has a `box_prior`): the phrases come in the given order, so that the n-th `<BOX>` is
        `phrases[i][n]` and takes `reference_boxes(phrases, ...)[n]`."""
        if in_order is None:
            in_order = bool(self.prior)
        # the pieces of `answer_text` between the <BOX> tokens, encoded as `_answer_ids` encodes them
        end, none = self._encode_pieces([ANSWER_END, " " + self.no_finding_answer])
        options = []
        for sample_phrases in phrases:
            clean = self.guide_phrases(sample_phrases)
            options.append(
                {
                    "in_order": bool(in_order),
                    "first": self._encode_pieces([" " + p for p in clean]),
                    "next": self._encode_pieces([f"{PHRASE_SEPARATOR} {p}" for p in clean]),
                    "end": end,
                    "none": none,
                }
            )
        return ReportGuide(
            options, prompt_length, self.box_token_id, self.tokenizer.eos_token_id, require_all=require_all
        )

    def guided_decoding(
        self,
        phrases: list[list[str]],
        prompt_length: int,
        image_sizes,
        max_new_tokens: int | None = None,
        require_all: bool = True,
        in_order: bool | None = None,
    ) -> dict:
        """The arguments of `model.generate_grounding` for the report-guided answers of a batch of left-padded
        prompts `prompt_length` long: `logits_processor` (the [`ReportGuide`] of `report_guide(phrases, ...)`),
        `forced_tokens_fn` (its forced runs, decoded jump-forward), `max_new_tokens` (as given, default
        `DEFAULT_MAX_NEW_TOKENS` or what the longest allowed answer needs if more) and, for an in-order guide with
        a `box_prior`, the phrases' `reference_boxes` and `reference_boxes_mask` (`image_sizes` `(B, 2)`)."""
        if in_order is None:
            in_order = bool(self.prior)
        guide = self.report_guide(phrases, prompt_length, require_all=require_all, in_order=in_order)
        decoding = {
            "logits_processor": LogitsProcessorList([guide]),
            "forced_tokens_fn": guide.forced_tokens,
            "max_new_tokens": max_new_tokens or max(DEFAULT_MAX_NEW_TOKENS, guide.min_new_tokens()),
        }
        if in_order:  # the n-th <BOX> names the n-th phrase: its prior box is the box decoder's first box
            decoding.update(self.reference_boxes([self.guide_phrases(p) for p in phrases], image_sizes))
        return decoding

    def guide_phrases(self, phrases: list[str]) -> list[str]:
        """The phrases as the guide asks for them (cleaned, each once): the n-th `<BOX>` of an in-order guided
        answer names the n-th of these."""
        clean = [sanitize_text(p, [self.image_token, self.box_token]).strip(PHRASE_STRIP) for p in phrases]
        return [p for p in dict.fromkeys(clean) if p]

    def reference_boxes(self, phrases: list[list[str]], image_sizes) -> dict:
        """Per sample the `box_prior` boxes of each phrase, in the model frame: `reference_boxes` `(B, N, 2, 4)`
        normalised cxcywh (two starts per phrase: one per side for a bilateral finding, else the same box twice) and `reference_boxes_mask` `(B, N)` (False where the prior knows no box for a phrase,
        or past a sample's phrases). `image_sizes`: `(B, 2)` original (height, width). Empty dict without a
        `box_prior`."""
        if not self.prior:
            return {}
        sizes = torch.as_tensor(image_sizes).reshape(-1, 2).tolist()
        if len(sizes) != len(phrases):
            raise ValueError(f"Got {len(sizes)} image sizes for {len(phrases)} phrase lists")
        width = max([len(p) for p in phrases] + [1])
        boxes = torch.full((len(phrases), width, 2, 4), 0.5)
        mask = torch.zeros((len(phrases), width), dtype=torch.bool)
        for row, ((height, image_width), sample) in enumerate(zip(sizes, phrases)):
            geometry = self.image_processor.letterbox_geometry(height, image_width)
            scale = torch.tensor([image_width, height, image_width, height], dtype=torch.float32)
            for n, phrase in enumerate(sample):
                starts = self.prior.starts(phrase, self.reader)
                if starts is None:
                    continue
                centre = torch.tensor(starts, dtype=torch.float32)
                corners = torch.cat(
                    (centre[:, :2] - centre[:, 2:] / 2, centre[:, :2] + centre[:, 2:] / 2), -1
                )
                model_corners = geometry.image_to_model(corners * scale).clamp(0, 1)
                boxes[row, n] = corners_to_center_format(model_corners)
                mask[row, n] = True
        return {"reference_boxes": boxes, "reference_boxes_mask": mask}

    # ----- targets -----
    @staticmethod
    def _check_report(report, index: int) -> str:
        if not isinstance(report, str):
            raise TypeError(f"Sample {index}: the report must be a string, got {type(report).__name__}")
        if not report.strip():
            raise ValueError(f"Sample {index}: the report is empty")
        if len(report) > MAX_REPORT_CHARS:
            raise ValueError(
                f"Sample {index}: the report has {len(report):,} characters; MedRG reads reports of up to "
                f"{MAX_REPORT_CHARS:,} characters (a chest X-ray report is a few thousand)"
            )
        return report

    @staticmethod
    def _finding_boxes(finding, index: int, finding_index: int, geometry: LetterboxGeometry) -> torch.Tensor:
        """One finding's pixel boxes -> `(n_boxes, 4)` normalised cxcywh in the model frame."""
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
        return corners_to_center_format(model_xyxy)

    # ----- main entry -----
    def __call__(
        self,
        images=None,
        text=None,
        findings=None,
        return_tensors: str | None = "pt",
        return_report_truncated: bool = False,
        guided: bool | None = None,
        max_new_tokens: int | None = None,
        **kwargs,
    ) -> BatchFeature:
        """
        Args:
            images: one image or a list (PIL, numpy array or tensor; 8/16-bit, grayscale/RGB/RGBA, any size).
            text: the report, or a list of reports (one per image).
            findings: for training, per image a list of `{"phrase": str, "boxes": [[xmin, ymin, xmax, ymax], ...]}`
                in the image's pixels (the dataset schema); an empty list means "no finding".
            return_report_truncated: also return `report_truncated`, a `(B,)` bool tensor, True where the report
                was cut to fit `max_length` (a warning is issued either way). Off by default so that
                `model(**inputs)` takes every returned key.
            guided: prepare generation, so that `model.generate_grounding(**inputs)` runs it: True adds the
                report-guided decoding of `guided_decoding` (the guide as `logits_processor`, its
                `forced_tokens_fn`, `max_new_tokens` and, with a `box_prior`, `reference_boxes`); False adds
                `max_new_tokens` only (the model writes freely). None (default): model inputs only.
            max_new_tokens: the generation budget with `guided` (default: `DEFAULT_MAX_NEW_TOKENS`, or what the
                guided answer needs if more).

        Returns:
            `BatchFeature` with `input_ids`, `attention_mask` `(B, L)` (left-padded), `pixel_values` `(B, C, S, S)`,
            `image_sizes` `(B, 2)` (original height, width), and with findings also `labels` `(B, L)` (-100 on the
            prompt and padding), `target_boxes` `(B, F, M, 4)` (normalised cxcywh in the model frame) and
            `target_boxes_mask` `(B, F, M)`.
        """
        if kwargs:
            raise TypeError(f"MedRGProcessor got unexpected arguments: {sorted(kwargs)}")
        if guided is not None and findings is not None:
            raise ValueError("guided prepares generation; findings are training targets: pass one of them")
        image_list, reports, findings_list = self._as_batch(images, text, findings)
        image_inputs = self.image_processor(image_list, return_tensors="pt")
        answers: list[list[int]] = [[] for _ in reports]
        target_rows = []
        if findings is not None:
            for index, (height, width) in enumerate(image_inputs["image_sizes"].tolist()):
                geometry = self.image_processor.letterbox_geometry(height, width)
                sample_findings = findings_list[index] or []
                target_rows.append(
                    [self._finding_boxes(f, index, j, geometry) for j, f in enumerate(sample_findings)]
                )
                answers[index] = self._answer_ids([f["phrase"] for f in sample_findings], index)
        prompts, truncated = self._prompt_ids(reports, [len(a) for a in answers])
        data = dict(
            self.tokenizer.pad(
                {"input_ids": [p + a for p, a in zip(prompts, answers)]},
                padding=True,
                padding_side="left",
                return_attention_mask=True,
                return_tensors="pt",
            )
        )
        if findings is not None:
            labels = [
                torch.tensor([IGNORE_INDEX] * len(p) + a, dtype=torch.long) for p, a in zip(prompts, answers)
            ]
            data["labels"] = pad_sequence(
                labels, batch_first=True, padding_value=IGNORE_INDEX, padding_side="left"
            )
        data.update(image_inputs)
        if findings is not None:
            data.update(self._pad_targets(target_rows))
            phrases = [[f["phrase"] for f in (findings_list[i] or [])] for i in range(len(reports))]
            data.update(self.reference_boxes(phrases, image_inputs["image_sizes"]))
        if return_report_truncated:
            data["report_truncated"] = torch.tensor(truncated, dtype=torch.bool)
        batch = BatchFeature(data=data, tensor_type=return_tensors)
        if guided is not None:
            prompt_length = data["input_ids"].shape[1]
            batch.update(
                self.generation_inputs(
                    reports, prompt_length, image_inputs["image_sizes"], guided, max_new_tokens
                )
            )
        return batch

    def generation_inputs(
        self,
        reports: list[str],
        prompt_length: int,
        image_sizes,
        guided: bool = True,
        max_new_tokens: int | None = None,
    ) -> dict:
        """The arguments of `model.generate_grounding` that `__call__(..., guided=...)` adds, for the reports of a
        batch of left-padded prompts `prompt_length` long: report-guided (`guided_decoding` of the reports'
        `report_phrases`) or free (`max_new_tokens` only)."""
        if not guided:
            return {"max_new_tokens": max_new_tokens or DEFAULT_MAX_NEW_TOKENS}
        return self.guided_decoding(self.report_phrases(reports), prompt_length, image_sizes, max_new_tokens)

    def _as_batch(self, images, text, findings) -> tuple[list, list[str], list | None]:
        """The call's images, reports and findings as lists of one entry per sample, checked."""
        if images is None or text is None:
            raise ValueError("MedRGProcessor needs both images and text (the reports)")
        single = not isinstance(text, (list, tuple))
        reports = [text] if single else list(text)
        image_list = [images] if (single or not isinstance(images, (list, tuple))) else list(images)
        if len(image_list) != len(reports):
            raise ValueError(
                f"Got {len(image_list)} images for {len(reports)} reports; pass one report per image"
            )
        if not reports:
            raise ValueError("MedRGProcessor got an empty batch")
        findings_list = None
        if findings is not None:
            findings_list = [findings] if single else list(findings)
            if len(findings_list) != len(reports):
                raise ValueError(f"Got {len(findings_list)} findings lists for {len(reports)} reports")
        for index, report in enumerate(reports):
            self._check_report(report, index)
        return image_list, reports, findings_list

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
    def _grounding_fields(self, outputs, input_ids=None) -> dict:
        """The box fields of a [`MedRGGroundingOutput`] or [`MedRGOutput`] (or a mapping with them), checked to be
        padded tensors, with each sample's answer ids (`answers`) and `finished`."""

        def field(name: str):
            return outputs.get(name) if isinstance(outputs, dict) else getattr(outputs, name, None)

        fields = {name: field(name) for name in ("pred_boxes", "pred_scores", "box_mask")}
        sequences = field("sequences")
        needed = ("generated_mask", "finished") if sequences is not None else ()
        for name in (*fields, *needed):
            value = fields.setdefault(name, field(name))
            if not torch.is_tensor(value):
                raise TypeError(
                    f"post_process_grounding needs `{name}` as a padded tensor (the output of generate_grounding "
                    f"or forward), got {type(value).__name__}"
                )
        if sequences is not None:  # generation: the answer is what was generated, up to the first EOS
            generated = sequences[:, int(field("prompt_length") or 0) :]
            mask = fields["generated_mask"].bool()
            fields["answers"] = [row[row_mask] for row, row_mask in zip(generated, mask)]
            return fields
        if input_ids is None:
            raise ValueError(
                "post_process_grounding needs the answers' token ids: a forward output has none, pass "
                "input_ids=inputs['input_ids'] (generate_grounding's output holds its sequences)"
            )
        ids = torch.as_tensor(input_ids)
        fields["answers"] = [row[self._answer_start(row, sample) :] for sample, row in enumerate(ids)]
        finished, eos = field("finished"), self.tokenizer.eos_token_id
        fields["finished"] = (
            finished  # a generation's, read off its ids (the pipeline's outputs)
            if torch.is_tensor(finished)
            else torch.tensor([bool((answer == eos).any()) for answer in fields["answers"]])
        )
        return fields

    def _answer_start(self, ids: torch.Tensor, sample: int) -> int:
        """Where the answer starts in a prompt + answer row: after the prompt's last `ANSWER_PREFIX` (a report
        cannot hold one: its text is neutralised)."""
        tail = self._encode_template(prompt_pieces(self.instruction)[1])
        row = ids.tolist()
        for start in range(len(row) - len(tail), -1, -1):
            if row[start : start + len(tail)] == tail:
                return start + len(tail)
        raise ValueError(
            f"input_ids row {sample}: no {ANSWER_PREFIX!r} ends a prompt in it: not a MedRG prompt"
        )

    def _phrases(self, ids: torch.Tensor) -> list[str]:
        """The generated text before each `<BOX>` (one phrase per `<BOX>`)."""
        phrases, current = [], []
        for token in ids.tolist():
            if token == self.box_token_id:
                phrases.append(self.tokenizer.decode(current, skip_special_tokens=True).strip(PHRASE_STRIP))
                current = []
            else:
                current.append(token)
        return phrases

    @staticmethod
    def _select_boxes(
        pixels: torch.Tensor,
        scores: torch.Tensor,
        threshold: float,
        keep_top_box: bool,
        nms_iou: float,
        top_k: int | None = None,
    ) -> list[int]:
        """Indices of the kept boxes of one phrase (`pixels` `(K, 4)` xyxy, `scores` `(K,)`), best first, at most
        `top_k` of them (None: all)."""
        from transformers.loss.loss_for_object_detection import box_iou  # on use: that module imports scipy

        iou = box_iou(pixels, pixels)[0].nan_to_num(0.0)
        above = (scores >= threshold).tolist()
        has_extent = ((pixels[:, 2] > pixels[:, 0]) & (pixels[:, 3] > pixels[:, 1])).tolist()
        kept: list[int] = []
        for k in torch.argsort(scores, descending=True).tolist():
            if not (above[k] or (keep_top_box and not kept)):
                continue
            if kept and bool((iou[k, kept] > nms_iou).any()):
                continue
            if not has_extent[k]:
                continue  # a box entirely in the letterbox padding has no extent in the image
            kept.append(k)
            if top_k is not None and len(kept) >= top_k:
                break
        return kept

    @classmethod
    def _select_per_side(cls, pixels, scores, width, threshold, keep_top_box, nms_iou, top_k) -> list[int]:
        """`_select_boxes` on each half of the image (a bilateral finding gets its boxes on both sides), the
        better side's first."""
        centre = (pixels[:, 0] + pixels[:, 2]) / 2
        kept = []
        for half in (centre < width / 2, centre >= width / 2):
            index = half.nonzero().flatten()
            if len(index):
                chosen = cls._select_boxes(
                    pixels[index], scores[index], threshold, keep_top_box, nms_iou, top_k
                )
                kept.append(index[chosen].tolist())
        kept.sort(key=lambda k: -float(scores[k[0]]) if k else 0.0)
        return [k for side in kept for k in side]

    def on_named_side(self, boxes: torch.Tensor, phrase: str, width: float) -> torch.Tensor:
        """`boxes` `(K, 4)` xyxy in an image `width` pixels wide, each mirrored across the image's vertical midline
        where `phrase` names one side of the patient ("left pleural effusion") and the box's centre lies on the
        other half (the patient's right is the image's left half): a finding the report puts on one side is boxed
        on that side."""
        side = self.prior.side(phrase, self.reader)
        if side not in ("right", "left"):
            return boxes
        centre = (boxes[:, 0] + boxes[:, 2]) / 2
        wrong = centre > width / 2 if side == "right" else centre < width / 2
        if not bool(wrong.any()):
            return boxes
        mirrored = torch.stack((width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]), dim=-1)
        return torch.where(wrong[:, None], mirrored, boxes)

    def post_process_grounding(
        self,
        outputs,
        target_sizes,
        threshold: float = 0.0,
        keep_top_box: bool = True,
        nms_iou: float = 0.5,
        top_k: int | None = None,
        input_ids=None,
    ) -> list[dict]:
        """Groundings -> per image `{"scores", "labels", "boxes", "finished"}`.

        Args:
            outputs: [`MedRGGroundingOutput`] of `generate_grounding`, or [`MedRGOutput`] of `forward` on a prompt
                with its answer (both hold the boxes in slots per sample), or a mapping with their fields.
            target_sizes: `(B, 2)` original `(height, width)` per image (e.g. `inputs["image_sizes"]`).
            threshold: boxes with a lower confidence (after `score_calibration`) are dropped, except each phrase's best box when
                `keep_top_box` (the LM said the finding is there, so it always gets its most likely box).
            nms_iou: a further box of the same phrase is dropped when it overlaps a kept one by more than this.
            top_k: keep at most this many boxes per phrase (the best-scoring ones after the other filters);
                None keeps every box that passes them. The pipeline (`pipeline("report-grounding")`) uses
                `top_k=1, keep_top_box=False` by default: a plain threshold filter, one box per phrase.
            input_ids: with a `forward` output, the `input_ids` it read (the phrases are read off its answers,
                as `grounding_dino`'s post-processing does); a generation output holds its own `sequences`.

        Returns:
            per image a dict: `scores` float `(n,)`, `labels` `list[str]` (the phrase of each kept box), `boxes`
            float `(n, 4)` xyxy in the pixels of that image, `finished` (False when the answer was cut off by
            `max_new_tokens`: then an empty or short result does not mean "no finding"; for a `forward` output
            without `finished`, whether its answer holds EOS). Each phrase is the answer's text before its `<BOX>`; boxes with no
            extent inside the image are dropped; ordered by phrase, then by score. Sides: a box of a phrase naming one side of the patient is mirrored onto that
            side where its centre lies on the other half (`on_named_side`); a bilateral phrase keeps its boxes per
            half of the image (`top_k` boxes on each side).
        """
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be a positive integer (boxes per phrase) or None, got {top_k!r}")
        fields = self._grounding_fields(outputs, input_ids)
        sizes = torch.as_tensor(target_sizes).reshape(-1, 2).tolist()
        if len(sizes) != len(fields["answers"]):
            raise ValueError(f"Got {len(sizes)} target sizes for {len(fields['answers'])} answers")
        # (B, N, K, 4) normalised xyxy in the model frame, all samples and boxes at once
        corners = center_to_corners_format(fields["pred_boxes"].float().cpu().clamp(0, 1))
        scores = self.calibrate_scores(fields["pred_scores"].float().cpu())
        box_mask = fields["box_mask"].cpu()
        results = []
        for sample, (height, width) in enumerate(sizes):
            geometry = self.image_processor.letterbox_geometry(height, width)
            phrases = self._phrases(fields["answers"][sample])
            slots = box_mask[sample].nonzero().flatten().tolist()
            if len(slots) != len(phrases):
                raise ValueError(
                    f"Sample {sample}: {len(phrases)} <BOX> tokens in the answer but {len(slots)} predicted box sets"
                )
            pixels = geometry.model_to_image(corners[sample])  # (N, K, 4)
            kept_scores, labels, kept_boxes = [], [], []
            for phrase, slot in zip(phrases, slots):
                pixels[slot] = self.on_named_side(pixels[slot], phrase, width)
                kept = self._select_boxes(
                    pixels[slot], scores[sample, slot], threshold, keep_top_box, nms_iou, top_k
                )
                if self.prior.side(phrase, self.reader) == "bilateral":
                    kept = self._select_per_side(
                        pixels[slot], scores[sample, slot], width, threshold, keep_top_box, nms_iou, top_k
                    )
                kept_scores.append(scores[sample, slot, kept])
                kept_boxes.append(pixels[slot, kept])
                labels += [phrase] * len(kept)
            results.append(
                {
                    "scores": torch.cat(kept_scores) if kept_scores else torch.zeros(0),
                    "labels": labels,
                    "boxes": torch.cat(kept_boxes) if kept_boxes else torch.zeros(0, 4),
                    "finished": bool(fields["finished"][sample]),
                }
            )
        return results


__all__ = ["DEFAULT_MAX_NEW_TOKENS", "IGNORE_INDEX", "MedRGProcessor", "platt_scale"]
