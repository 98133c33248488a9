"""The box a phrase names before anyone looks at the image: the mean training box of its finding, side and zone.

A radiologist's phrase already says much of where the box is: "left pleural effusion" is low in the image's right
half (the patient's left is the image's right), "right upper lobe mass" high in its left half. [`BoxPrior`] reads a
phrase with the processor's report reader (category, side; zone words such as "upper", "apical", "basilar") and
returns the mean normalised box of the training boxes of that (category, side, zone), backing off to (category,
side) and (category) when a cell has fewer than `min_count` boxes. The box decoder starts from this box and the
image moves it (`MedRGForReportGrounding.forward(reference_boxes=...)`); the same reading gives the side rule of
`MedRGProcessor.post_process_grounding` (a finding the report puts on one side is boxed on that side).

The table is plain data saved in `processor_config.json` (`box_prior`), fitted by `BoxPrior.fit` on training
phrases and their boxes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from .reading_medrg import ReportReader, zone_of

_ANY = "*"


class BoxPrior:
    """Mean normalised box (cx, cy, w, h in [0, 1] of the image) per (category, side, zone) of a phrase.

    Args:
        cells: `{"category|side|zone": [cx, cy, w, h, count]}` (`side`/`zone` may be `*`: any), as `to_dict` writes.
        min_count: a cell is used only with at least this many training boxes (else the next coarser one).
    """

    def __init__(self, cells: dict | None = None, min_count: int = 3):
        self.cells: dict[str, list[float]] = {}
        for key, value in (cells or {}).items():
            values = [float(v) for v in value]
            if not isinstance(key, str) or key.count("|") != 2 or len(values) != 5:
                raise ValueError(f"box_prior cell {key!r}: need 'category|side|zone': [cx, cy, w, h, count]")
            if not all(0.0 <= v <= 1.0 for v in values[:4]) or values[4] < 1:
                raise ValueError(f"box_prior cell {key!r}: box {values[:4]} must lie in [0, 1], count >= 1")
            self.cells[key] = values
        self.min_count = int(min_count)
        self._described: dict[tuple[int, str], tuple[str, str, str] | None] = {}

    def __bool__(self) -> bool:
        return bool(self.cells)

    def to_dict(self) -> dict:
        return {"cells": dict(sorted(self.cells.items())), "min_count": self.min_count}

    @classmethod
    def from_dict(cls, data: dict | None) -> BoxPrior:
        if data is None:
            return cls()
        if not isinstance(data, dict) or "cells" not in data:
            raise ValueError("box_prior must be a dict {'cells': {...}, 'min_count': n} (BoxPrior.to_dict)")
        return cls(data["cells"], data.get("min_count", 3))

    @staticmethod
    def describe(phrase: str, reader: ReportReader) -> tuple[str, str, str] | None:
        """(category, side, zone) of the first finding `phrase` states (side "right"/"left"/"bilateral"/"",
        zone "upper"/"mid"/"hilar"/"lower"/""), or None when the reader finds no stated finding in it."""
        stated = reader.read(phrase).stated if isinstance(phrase, str) and phrase.strip() else []
        if not stated:
            return None
        finding = stated[0]
        sided = reader.vocabulary.sided(finding.category)
        return finding.category, finding.side, zone_of(finding.label.lower()) if sided else ""

    def _description(self, phrase: str, reader: ReportReader):
        key = (id(reader), phrase)
        if key not in self._described:
            if len(self._described) > 4096:
                self._described.clear()
            self._described[key] = self.describe(phrase, reader)
        return self._described[key]

    def _cell(self, category: str, side: str, zone: str) -> list[float] | None:
        for key in (f"{category}|{side}|{zone}", f"{category}|{side}|{_ANY}", f"{category}|{_ANY}|{_ANY}"):
            cell = self.cells.get(key)
            if cell is not None and cell[4] >= self.min_count:
                return cell[:4]
        return None

    def box(self, phrase: str, reader: ReportReader) -> list[float] | None:
        """The prior box `[cx, cy, w, h]` (normalised to the image) of `phrase`, or None (no finding read, or
        no training boxes of its category)."""
        described = self._description(phrase, reader)
        return None if described is None else self._cell(*described)

    def starts(self, phrase: str, reader: ReportReader) -> list[list[float]] | None:
        """Two first boxes for the box decoder: for a bilateral finding ("bilateral pleural effusions") the
        prior box of each side (patient's right, then left), else the phrase's prior box twice; None as `box`."""
        described = self._description(phrase, reader)
        if described is None:
            return None
        category, side, zone = described
        if side == "bilateral":
            right, left = self._cell(category, "right", zone), self._cell(category, "left", zone)
            if right is not None and left is not None and right != left:
                return [right, left]
        box = self._cell(category, side, zone)
        return None if box is None else [box, box]

    def side(self, phrase: str, reader: ReportReader) -> str:
        """The side of the patient `phrase` names ("right", "left", "bilateral"), else ""."""
        described = self._description(phrase, reader)
        return described[1] if described is not None else ""

    @classmethod
    def fit(
        cls,
        examples: Iterable[tuple[str, Iterable[Iterable[float]]]],
        reader: ReportReader,
        min_count: int = 3,
    ) -> BoxPrior:
        """Mean boxes from `(phrase, boxes)` pairs, each box `[xmin, ymin, xmax, ymax]` normalised to its image
        (divide by width/height) ; phrases the reader finds no finding in are skipped."""
        sums: dict[str, list[float]] = defaultdict(lambda: [0.0] * 5)
        for phrase, boxes in examples:
            described = cls.describe(phrase, reader)
            if described is None:
                continue
            category, side, zone = described
            for x0, y0, x1, y1 in boxes:
                box = ((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0)
                for key in (
                    f"{category}|{side}|{zone}",
                    f"{category}|{side}|{_ANY}",
                    f"{category}|{_ANY}|{_ANY}",
                ):
                    cell = sums[key]
                    for k in range(4):
                        cell[k] += box[k]
                    cell[4] += 1
        cells = {key: [round(v / s[4], 5) for v in s[:4]] + [int(s[4])] for key, s in sums.items()}
        return cls(cells, min_count)


__all__ = ["BoxPrior"]
