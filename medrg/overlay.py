"""Draw grounded findings on their X-ray: one box per record, its phrase and score legible beside it.

``draw_groundings(image, records)`` is what ``medrg ground --overlay`` and the demo app (``medrg.demo``) use.
Only Pillow and numpy: no torch, no matplotlib.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# colour-blind-safe (Okabe-Ito), on a grey X-ray
PALETTE = (
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
)
MIN_SIDE = 768  # smaller images are enlarged (nearest neighbour) so that text stays legible, pixels


def to_display_image(image: Any) -> Image.Image:
    """A PIL image, an (H, W) / (H, W, C) numpy array (any integer or float range) -> 8-bit RGB PIL image.

    Grey levels are min-max stretched for images deeper than 8 bits and for float arrays.
    """
    if isinstance(image, Image.Image):
        if image.mode in ("RGB", "L"):
            return image.convert("RGB")
        if image.mode in ("RGBA", "LA", "P", "PA", "CMYK", "YCbCr", "1"):
            return image.convert("RGB")
        array = np.asarray(image)
    elif isinstance(image, np.ndarray):
        array = image
    else:
        raise TypeError(f"image must be a PIL image or a numpy array, got {type(image).__name__}")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(f"image array must be (H, W) or (H, W, 3|4), got shape {array.shape}")
    if array.dtype != np.uint8:
        values = array.astype(np.float64)
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
        scale = 255.0 / (high - low) if high > low else 0.0
        array = np.clip((values - low) * scale, 0, 255).astype(np.uint8)
    if array.ndim == 3:
        array = array[..., :3]
    return Image.fromarray(array).convert("RGB")


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable font
    except (TypeError, OSError):  # pragma: no cover - old Pillow / no FreeType
        return ImageFont.load_default()


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def draw_groundings(
    image: Any,
    records: Sequence[Mapping[str, Any]],
    *,
    min_side: int = MIN_SIDE,
    show_scores: bool = True,
) -> Image.Image:
    """The X-ray with each record's box and a label ``"phrase 0.87"`` drawn on it.

    Args:
        image: the image the records refer to (PIL image or numpy array; 8/16-bit or float grey, RGB).
        records: the pipeline's records ``{"label": str, "score": float, "box": {"xmin", "ymin", "xmax",
            "ymax"}}`` in that image's pixels.
        min_side: the shorter side of the result is enlarged to at least this many pixels (boxes scaled with
            it) so that the text is legible on small model-sized images; 0 keeps the size.
        show_scores: append the score (two decimals) to the phrase.

    Returns:
        A new RGB PIL image (the input is not changed); size ``(W, H) * max(1, min_side / min(W, H))``.
    """
    canvas = to_display_image(image).copy()
    scale = max(1.0, min_side / max(1, min(canvas.size))) if min_side else 1.0
    if scale > 1.0:
        canvas = canvas.resize((round(canvas.width * scale), round(canvas.height * scale)), Image.NEAREST)
    draw = ImageDraw.Draw(canvas)
    side = min(canvas.size)
    font = _font(max(12, side // 40))
    line = max(2, side // 250)
    placed: list[tuple[float, float, float, float]] = []
    for index, record in enumerate(records):
        box = record["box"]
        xyxy = [float(box[k]) * scale for k in ("xmin", "ymin", "xmax", "ymax")]
        xyxy = [
            min(max(xyxy[0], 0), canvas.width - 1),
            min(max(xyxy[1], 0), canvas.height - 1),
            min(max(xyxy[2], 0), canvas.width - 1),
            min(max(xyxy[3], 0), canvas.height - 1),
        ]
        colour = PALETTE[index % len(PALETTE)]
        draw.rectangle(xyxy, outline=colour, width=line)
        text = str(record.get("label", ""))
        if show_scores and record.get("score") is not None:
            text = f"{text} {float(record['score']):.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        pad = 2 * line
        width, height = right - left + 2 * pad, bottom - top + 2 * pad
        x = min(max(0.0, xyxy[0]), max(0.0, canvas.width - width))
        y = xyxy[1] - height if xyxy[1] - height >= 0 else xyxy[1] + line  # above the box, else inside it
        rect = (x, y, x + width, y + height)
        for _ in range(len(placed) + 1):  # move down past labels already drawn
            clash = next((p for p in placed if _overlaps(rect, p)), None)
            if clash is None:
                break
            y = min(clash[3] + 1, canvas.height - height)
            rect = (x, y, x + width, y + height)
        placed.append(rect)
        draw.rectangle(rect, fill=colour)
        draw.text((x + pad - left, y + pad - top), text, fill=(0, 0, 0), font=font)
    return canvas


__all__ = ["PALETTE", "draw_groundings", "to_display_image"]
