"""Baselines that run through the same runner as MedRG: ``prior`` (text only) and ``center`` (one box).

A baseline is a ``predict(examples) -> list[list[record]]`` callable with a ``fit(train_examples)``
step. ``examples`` are dataset rows (dicts with ``report`` and ``image``); ``image`` is used only for
its size (a PIL image, or ``{"bytes"/"path"}`` from a dataset with ``decode=False``), never its pixels.
"""

from __future__ import annotations

import io
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .metrics import box_iou_matrix

# ------------------------------------------------------------------------------------------------
# Report text: clauses, negation, side and zone words
# ------------------------------------------------------------------------------------------------
SIDE_WORDS = {
    "right": "right",
    "left": "left",
    "bilateral": "bilateral",
    "bilaterally": "bilateral",
    "both": "bilateral",
    "bibasilar": "bilateral",
    "bibasal": "bilateral",
}
ZONE_WORDS = {
    "upper": "upper",
    "apical": "upper",
    "apex": "upper",
    "apices": "upper",
    "superior": "upper",
    "mid": "mid",
    "middle": "mid",
    "midlung": "mid",
    "lingula": "mid",
    "lingular": "mid",
    "perihilar": "hilar",
    "hilar": "hilar",
    "hilum": "hilar",
    "lower": "lower",
    "basal": "lower",
    "base": "lower",
    "bases": "lower",
    "basilar": "lower",
    "bibasilar": "lower",
    "bibasal": "lower",
    "costophrenic": "lower",
    "inferior": "lower",
    "retrocardiac": "lower",
}
# Phrases after which, up to the end of the clause, a finding is absent.
NEGATION_CUES = (
    r"\bno\b",
    r"\bnot\b",
    r"\bwithout\b",
    r"\bnegative for\b",
    r"\bfree of\b",
    r"\babsence of\b",
    r"\babsent\b",
    r"\bresolved\b",
    r"\bruled out\b",
    r"\bnor\b",
)
_NEGATION = re.compile("|".join(NEGATION_CUES))
# Words that negate the whole clause wherever they stand ("the cardiac silhouette is normal in size").
_CLAUSE_NEGATION = re.compile(
    r"\b(?:normal|unremarkable|within normal limits|is not seen|has resolved|clear)\b"
)
_SENTENCE_SPLIT = re.compile(r"(?<=[.;!?\n])\s*|\n+")
_CLAUSE_SPLIT = re.compile(
    r",|\bbut\b|\bhowever\b|\bwhile\b|\bwhereas\b|\band\b(?=\s+(?:a|an|the|no|there)\b)"
)
_WORD = re.compile(r"[a-z]+")
_SECTION_HEADER = re.compile(r"^[A-Z][A-Z ]+:\s*")  # "FINDINGS:", "IMPRESSION:"
STOPWORDS = frozenset(
    "a an the of in on at with and or to is are was were be there this that these those seen noted "
    "small large mild moderate severe new some possible likely findings finding position consistent "
    "suggestive suggest suggests area region lung lungs zone zones lobe field fields side image "
    "chest x ray xray radiograph view pa ap patient slight subtle minimal evidence appearance".split()
)


def split_clauses(report: str) -> list[str]:
    """Sentences, then clauses split at commas and contrastive/coordinating words."""
    clauses = []
    for sentence in _SENTENCE_SPLIT.split(report or ""):
        for clause in _CLAUSE_SPLIT.split(sentence):
            clause = _SECTION_HEADER.sub("", clause.strip(" .;:!?\n\t"))
            if clause:
                clauses.append(clause)
    return clauses


def position_words(text: str) -> tuple[str, str]:
    """(side, zone) named in ``text``; "" where none. Several sides -> "bilateral"; first zone wins."""
    words = _WORD.findall(text.lower())
    sides = {SIDE_WORDS[w] for w in words if w in SIDE_WORDS}
    if "lingula" in words or "lingular" in words:  # the lingula is part of the left upper lobe
        sides.add("left")
    side = "" if not sides else ("bilateral" if len(sides) > 1 else sides.pop())
    zone = next((ZONE_WORDS[w] for w in words if w in ZONE_WORDS), "")
    return side, zone


def _negation_start(clause: str) -> int:
    """Character index where a negation cue starts in ``clause`` (len(clause) if none)."""
    lowered = clause.lower()
    if _CLAUSE_NEGATION.search(lowered):
        return 0
    match = _NEGATION.search(lowered)
    return match.start() if match else len(clause)


def image_size(image: Any) -> tuple[int, int]:
    """(width, height) of a PIL image, a ``{"bytes"/"path"}`` dict, or a path, reading only the header."""
    if hasattr(image, "size") and not isinstance(image, Mapping):
        return tuple(image.size)
    from PIL import Image

    if isinstance(image, Mapping):
        if image.get("bytes"):
            with Image.open(io.BytesIO(image["bytes"])) as img:
                return img.size
        image = image.get("path")
    if isinstance(image, str):
        with Image.open(image) as img:
            return img.size
    raise ValueError(f"cannot read the image size of {type(image).__name__}; expected a PIL image or a path")


def _record(label: str, score: float, box: Sequence[float]) -> dict:
    xmin, ymin, xmax, ymax = (float(v) for v in box)
    return {
        "label": label,
        "score": float(score),
        "box": {"xmin": xmin, "ymin": ymin, "xmax": xmax, "ymax": ymax},
    }


# ------------------------------------------------------------------------------------------------
# Baselines
# ------------------------------------------------------------------------------------------------
@dataclass
class CenterBaseline:
    """One fixed box for every report (normalised xyxy); ``fit`` sets it to the mean training box.

    Predicts exactly one box per report, also for reports without findings (it cannot say "no finding").
    """

    box: tuple[float, float, float, float] = (0.25, 0.25, 0.75, 0.75)
    score: float = 0.5
    label: str = "finding"
    name: str = "center"
    is_fitted: bool = False

    def fit(self, train_examples: Iterable[Mapping]) -> CenterBaseline:
        boxes = []
        for example in train_examples:
            width, height = image_size(example["image"])
            for finding in example["findings"]:
                for box in finding["boxes"]:
                    boxes.append(np.asarray(box, dtype=np.float64) / [width, height, width, height])
        if boxes:
            boxes = np.stack(boxes)
            self.box = tuple(float(v) for v in boxes.mean(0))
            hits = box_iou_matrix(boxes, np.asarray(self.box)[None])[:, 0] >= 0.5
            self.score = float(np.mean(hits))
        self.is_fitted = True
        return self

    def predict(self, examples: Sequence[Mapping]) -> list[list[dict]]:
        predictions = []
        for example in examples:
            width, height = image_size(example["image"])
            box = np.asarray(self.box) * [width, height, width, height]
            predictions.append([_record(self.label, self.score, box)])
        return predictions

    __call__ = predict


@dataclass
class _Cell:
    boxes: list = field(default_factory=list)

    def summary(self) -> tuple[np.ndarray, float, int]:
        boxes = np.stack(self.boxes)
        mean = boxes.mean(0)
        hit_rate = float(np.mean(box_iou_matrix(boxes, mean[None])[:, 0] >= 0.5))
        return mean, hit_rate, len(boxes)


@dataclass
class PriorBaseline:
    """Text-only prior: finds the findings a report names and predicts the mean training box.

    ``fit`` learns, from the training findings, (1) the words that name each category (the category
    name and phrase words seen mostly with that category), and (2) the mean box, normalised to the
    image size, per (category, side, zone), (category, side), (category) and overall. ``predict``
    splits each report into clauses, skips negated mentions ("no pneumothorax", "without effusion",
    "negative for ..."), reads side (right/left/bilateral) and zone (upper/mid/hilar/lower and their
    synonyms) words of the clause (else of its sentence), and outputs one record per distinct
    (category, side, zone): the mean box of the most specific cell with at least ``min_cell_size``
    training boxes, scaled to the test image; score = share of that cell's training boxes that the
    mean box hits at IoU >= 0.5 (a calibrated guess); label = the clause.
    """

    min_cell_size: int = 2
    min_keyword_purity: float = 0.8
    min_keyword_count: int = 2
    name: str = "prior"
    keywords: dict[str, str] = field(default_factory=dict)  # word or phrase -> category
    cells: dict[tuple, tuple] = field(default_factory=dict)  # key -> (mean box, hit rate, count)

    @property
    def is_fitted(self) -> bool:
        return bool(self.cells)

    # --- vocabulary --------------------------------------------------------------------------
    def _learn_keywords(self, findings: list[Mapping]) -> None:
        word_category = defaultdict(Counter)
        categories = set()
        for finding in findings:
            category = finding["category"] or finding["phrase"]
            categories.add(category)
            for word in set(_WORD.findall(finding["phrase"].lower())):
                word_category[word][category] += 1
        keywords = {}
        for word, counts in word_category.items():
            if word in STOPWORDS or word in SIDE_WORDS or word in ZONE_WORDS or len(word) < 4:
                continue
            category, count = counts.most_common(1)[0]
            if count >= self.min_keyword_count and count / sum(counts.values()) >= self.min_keyword_purity:
                keywords[word] = category
        for category in categories:
            name = category.lower()
            keywords[name] = category
            for word in _WORD.findall(name):
                if (
                    word not in STOPWORDS
                    and len(word) >= 4
                    and word not in SIDE_WORDS
                    and word not in ZONE_WORDS
                ):
                    # a word of a category name names it unless another category also uses it
                    others = [c for c in categories if c != category and word in c.lower()]
                    if not others:
                        keywords.setdefault(word, category)
        self.keywords = keywords

    def find_mentions(self, report: str) -> list[dict]:
        """Non-negated finding mentions: ``[{"category", "side", "zone", "clause"}]`` in report order."""
        mentions = []
        seen = set()
        for sentence in _SENTENCE_SPLIT.split(report or ""):
            sentence_side, sentence_zone = position_words(sentence)
            for clause in split_clauses(sentence):
                lowered = clause.lower()
                negated_from = _negation_start(clause)
                found = []
                for keyword, category in self.keywords.items():
                    for match in re.finditer(rf"\b{re.escape(keyword)}\b", lowered):
                        if match.start() < negated_from:
                            found.append((match.start(), category))
                            break
                side, zone = position_words(clause)
                side, zone = side or sentence_side, zone or sentence_zone
                for _, category in sorted(found):
                    key = (category, side, zone)
                    if key not in seen:
                        seen.add(key)
                        mentions.append({"category": category, "side": side, "zone": zone, "clause": clause})
        return mentions

    # --- fitting -----------------------------------------------------------------------------
    def fit(self, train_examples: Iterable[Mapping]) -> PriorBaseline:
        examples = list(train_examples)
        self._learn_keywords([f for example in examples for f in example["findings"]])
        cells: dict[tuple, _Cell] = defaultdict(_Cell)
        for example in examples:
            width, height = image_size(example["image"])
            scale = np.array([width, height, width, height], dtype=np.float64)
            mentions = self.find_mentions(example["report"])
            for finding in example["findings"]:
                category = finding["category"] or finding["phrase"]
                side, zone = position_words(finding["phrase"])
                same = [m for m in mentions if m["category"] == category]
                if len(same) == 1:  # the report's words complete what the phrase does not say
                    side, zone = side or same[0]["side"], zone or same[0]["zone"]
                for box in finding["boxes"]:
                    normalised = np.asarray(box, dtype=np.float64) / scale
                    for key in ((category, side, zone), (category, side), (category,), ()):
                        cells[key].boxes.append(normalised)
        self.cells = {key: cell.summary() for key, cell in cells.items()}
        return self

    def box_for(self, category: str, side: str, zone: str) -> tuple[np.ndarray, float]:
        """Normalised mean box and its training hit rate, backing off to coarser cells."""
        if not self.cells:
            raise RuntimeError("PriorBaseline.fit(train_examples) must run before predict")
        for key in ((category, side, zone), (category, side), (category,), ()):
            cell = self.cells.get(key)
            if cell is not None and cell[2] >= self.min_cell_size:
                return cell[0], cell[1]
        mean, hit_rate, _ = self.cells[()]
        return mean, hit_rate

    def predict(self, examples: Sequence[Mapping]) -> list[list[dict]]:
        predictions = []
        for example in examples:
            width, height = image_size(example["image"])
            scale = np.array([width, height, width, height], dtype=np.float64)
            records = []
            for mention in self.find_mentions(example["report"]):
                box, score = self.box_for(mention["category"], mention["side"], mention["zone"])
                records.append(_record(mention["clause"], score, box * scale))
            predictions.append(records)
        return predictions

    __call__ = predict


BASELINES = {"prior": PriorBaseline, "center": CenterBaseline}


def make_baseline(name: str, **kwargs: Any) -> PriorBaseline | CenterBaseline:
    """A new, unfitted baseline by name (``prior`` or ``center``)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; expected one of {sorted(BASELINES)}")
    return BASELINES[name](**kwargs)
