"""An offline byte-level BPE tokenizer trained on a small embedded radiology-style corpus (no download)."""

from __future__ import annotations

import itertools

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from medrg.processing.prompting_medrg import (
    ANSWER_PREFIX,
    DEFAULT_INSTRUCTION,
    DEFAULT_NO_FINDING_ANSWER,
    REPORT_PREFIX,
)

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
IMAGE_TOKEN = "<image>"
BOX_TOKEN = "<BOX>"

_FINDINGS = [
    "nodule",
    "pulmonary nodule",
    "mass",
    "lung mass",
    "consolidation",
    "airspace opacity",
    "airspace disease",
    "pleural effusion",
    "effusion",
    "pneumothorax",
    "cardiomegaly",
    "enlarged cardiac silhouette",
    "atelectasis",
    "subsegmental atelectasis",
    "infiltrate",
    "pneumonia",
    "opacity",
    "edema",
    "pulmonary edema",
    "lung opacity",
    "fracture",
    "granuloma",
    "emphysema",
    "fibrosis",
    "scarring",
]
_PLACES = [
    "right upper lobe",
    "left upper lobe",
    "right middle lobe",
    "lingula",
    "right lower lobe",
    "left lower lobe",
    "right lung base",
    "left lung base",
    "right apex",
    "left apex",
    "right hilum",
    "left hilum",
    "right upper zone",
    "left upper zone",
    "right mid zone",
    "left mid zone",
    "right lower zone",
    "left lower zone",
    "right costophrenic angle",
    "left costophrenic angle",
    "retrocardiac region",
    "bilateral lung bases",
    "perihilar region",
    "mediastinum",
]
_TEMPLATES = [
    "There is {finding} in the {place}.",
    "{Finding} in the {place}.",
    "Small {finding} projecting over the {place}.",
    "Patchy {finding} is seen at the {place}.",
    "No {finding}.",
    "No evidence of {finding} in the {place}.",
    "Findings are consistent with {finding} of the {place}.",
    "Moderate {finding} at the {place}, new since the prior study.",
    "IMPRESSION: {finding}, {place}.",
    "FINDINGS: The heart size is normal. {Finding} in the {place}.",
]
_FIXED = [
    "The lungs are clear. No pleural effusion or pneumothorax.",
    "Heart size is normal. The mediastinal contours are unremarkable.",
    "No acute cardiopulmonary process. No focal consolidation.",
    "The osseous structures are intact. Lines and tubes in standard position.",
    "Frontal and lateral views of the chest were obtained. Comparison is made with the prior radiograph.",
    "Mild, moderate, severe, small, large, patchy, focal, diffuse, stable, unchanged, increased, decreased.",
    "Left and right, upper, middle, mid, lower, apical, basal, hilar, lateral, medial, posterior, anterior.",
]


def radiology_corpus() -> list[str]:
    """A few thousand deterministic report-like sentences plus the prompt and answer templates."""
    lines = list(_FIXED)
    lines.append(REPORT_PREFIX.format(instruction=DEFAULT_INSTRUCTION) + ANSWER_PREFIX)
    lines.append(DEFAULT_NO_FINDING_ANSWER)
    for template, finding, place in itertools.product(_TEMPLATES, _FINDINGS, _PLACES):
        lines.append(template.format(finding=finding, Finding=finding.capitalize(), place=place))
    for finding, place in itertools.product(_FINDINGS, _PLACES):
        lines.append(f" {finding} in the {place}; {place} {finding}.")
    return lines


def train_tiny_tokenizer(vocab_size: int = 800) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `radiology_corpus()` and add `<image>` and `<BOX>` as special tokens."""
    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(radiology_corpus(), trainer=trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS)
    add_grounding_tokens(wrapped)
    return wrapped


def add_grounding_tokens(tokenizer) -> None:
    """Add `<image>` and `<BOX>` as special tokens (keeping existing extra special tokens)."""
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [IMAGE_TOKEN, BOX_TOKEN]}, replace_extra_special_tokens=False
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
