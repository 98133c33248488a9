"""Box-consistent augmentation of grounding rows (image + report + findings in the dataset schema).

Every geometric change moves the boxes with the pixels; a horizontal flip also swaps the words "left" and
"right" in the report and every phrase (an X-ray flipped without its words would teach the wrong side).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image

_SIDE_WORDS = re.compile(r"\b(left|right|Left|Right|LEFT|RIGHT)\b")
_SWAP = {"left": "right", "right": "left", "Left": "Right", "Right": "Left", "LEFT": "RIGHT", "RIGHT": "LEFT"}


def swap_sides(text: str) -> str:
    """Swap every whole word left <-> right (case kept): the text of a horizontally flipped image."""
    return _SIDE_WORDS.sub(lambda m: _SWAP[m.group(0)], text)


@dataclass
class GroundingAugmentation:
    """Random scale/translate, brightness/contrast and (optionally) a side-consistent horizontal flip.

    Args:
        scale: the image is zoomed by a factor in `[1 - scale, 1 + scale]` about its centre.
        translate: shift by up to this fraction of the width/height.
        brightness, contrast: intensity offset in `[-b, b]` (of the full range) and gain in `[1 - c, 1 + c]`.
        hflip_probability: probability of a horizontal flip; the report and phrases get left/right swapped.
        probability: probability that a row is augmented at all.
    """

    scale: float = 0.1
    translate: float = 0.05
    brightness: float = 0.1
    contrast: float = 0.1
    hflip_probability: float = 0.0
    probability: float = 0.8

    def __post_init__(self):
        for name in ("scale", "translate", "brightness", "contrast", "hflip_probability", "probability"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"GroundingAugmentation.{name} must be a number in [0, 1], got {value!r}")

    def __call__(self, row: dict, rng: random.Random) -> dict:
        """Return an augmented copy of `row` (image, report, findings); boxes stay `[xmin, ymin, xmax, ymax]`."""
        if rng.random() >= self.probability:
            return row
        image = row["image"]
        if not isinstance(image, Image.Image):
            image = Image.fromarray(np.asarray(image))
        width, height = image.size
        report = row["report"]
        findings = [dict(f, boxes=[list(map(float, b)) for b in f["boxes"]]) for f in row["findings"]]
        if self.hflip_probability and rng.random() < self.hflip_probability:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            report = swap_sides(report)
            for finding in findings:
                finding["phrase"] = swap_sides(finding["phrase"])
                finding["boxes"] = [[width - b[2], b[1], width - b[0], b[3]] for b in finding["boxes"]]
        if self.scale or self.translate:
            zoom = 1.0 + rng.uniform(-self.scale, self.scale)
            shift_x = rng.uniform(-self.translate, self.translate) * width
            shift_y = rng.uniform(-self.translate, self.translate) * height
            # output pixel p comes from input (p - c - shift) / zoom + c
            cx, cy = width / 2, height / 2
            coeffs = (
                1 / zoom,
                0,
                cx - (cx + shift_x) / zoom,
                0,
                1 / zoom,
                cy - (cy + shift_y) / zoom,
            )
            kept = []
            for finding in findings:
                boxes = []
                for x0, y0, x1, y1 in finding["boxes"]:
                    nx0 = min(max((x0 - cx) * zoom + cx + shift_x, 0.0), width)
                    nx1 = min(max((x1 - cx) * zoom + cx + shift_x, 0.0), width)
                    ny0 = min(max((y0 - cy) * zoom + cy + shift_y, 0.0), height)
                    ny1 = min(max((y1 - cy) * zoom + cy + shift_y, 0.0), height)
                    if nx1 - nx0 >= 1 and ny1 - ny0 >= 1:
                        boxes.append([nx0, ny0, nx1, ny1])
                kept.append(boxes)
            if any(not boxes for boxes in kept):
                return (
                    row  # a box would leave the image: keep this row unaugmented rather than lose a finding
                )
            resample = Image.Resampling.BILINEAR
            image = image.transform((width, height), Image.Transform.AFFINE, coeffs, resample=resample)
            for finding, boxes in zip(findings, kept):
                finding["boxes"] = boxes
        if self.brightness or self.contrast:
            array = np.asarray(image).astype(np.float32)
            top = 65535.0 if array.max() > 255 else 255.0
            gain = 1.0 + rng.uniform(-self.contrast, self.contrast)
            offset = rng.uniform(-self.brightness, self.brightness) * top
            mean = float(array.mean())
            array = np.clip((array - mean) * gain + mean + offset, 0, top)
            dtype = np.uint16 if top > 255 else np.uint8
            image = Image.fromarray(array.astype(dtype))
        return dict(row, image=image, report=report, findings=findings)


__all__ = ["GroundingAugmentation", "swap_sides"]
