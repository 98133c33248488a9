"""X-ray image processing: any image (8/16-bit, grayscale, RGB(A), any size) -> normalised square model input.

Images are letterboxed (aspect ratio kept, centred, black padding); `LetterboxGeometry` remembers the mapping
so boxes go to the model frame and come back to the caller's pixels exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

# ITU-R BT.601 luma weights: an RGB-stored radiograph becomes one intensity channel.
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class LetterboxGeometry:
    """How an `height x width` image sits inside the `size x size` model frame."""

    height: int
    width: int
    size: int
    scaled_height: int
    scaled_width: int
    pad_top: int
    pad_left: int

    @classmethod
    def compute(cls, height: int, width: int, size: int) -> LetterboxGeometry:
        if height < 1 or width < 1:
            raise ValueError(f"Image has zero size ({width}x{height} pixels)")
        scale = size / max(height, width)
        scaled_height = max(1, min(size, round(height * scale)))
        scaled_width = max(1, min(size, round(width * scale)))
        return cls(
            height=height,
            width=width,
            size=size,
            scaled_height=scaled_height,
            scaled_width=scaled_width,
            pad_top=(size - scaled_height) // 2,
            pad_left=(size - scaled_width) // 2,
        )

    def image_to_model(self, boxes_xyxy: torch.Tensor) -> torch.Tensor:
        """`(..., 4)` pixel xyxy in the original image -> normalised xyxy in [0, 1] of the model frame."""
        sx, sy = self.scaled_width / self.width, self.scaled_height / self.height
        scale = boxes_xyxy.new_tensor([sx, sy, sx, sy])
        offset = boxes_xyxy.new_tensor([self.pad_left, self.pad_top, self.pad_left, self.pad_top])
        return (boxes_xyxy * scale + offset) / self.size

    def model_to_image(self, boxes_xyxy: torch.Tensor) -> torch.Tensor:
        """Normalised model-frame xyxy -> pixel xyxy of the original image, clipped to the image."""
        sx, sy = self.scaled_width / self.width, self.scaled_height / self.height
        offset = boxes_xyxy.new_tensor([self.pad_left, self.pad_top, self.pad_left, self.pad_top])
        scale = boxes_xyxy.new_tensor([sx, sy, sx, sy])
        pixels = (boxes_xyxy * self.size - offset) / scale
        limits = boxes_xyxy.new_tensor([self.width, self.height, self.width, self.height])
        return torch.minimum(pixels.clamp(min=0), limits)


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """Copy of `medrg_box_ops.box_cxcywh_to_xyxy` (hub files of processor and model cannot import each other;
    a test proves the copies agree)."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack(((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0), dim=-1)


def _pil_to_array(image) -> np.ndarray:
    mode = image.mode
    if mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
        image = image.convert("RGBA" if mode == "PA" else "RGB") if mode != "1" else image.convert("L")
    return np.asarray(image)


def xray_to_intensity(image, max_pixels: int) -> torch.Tensor:
    """Any supported image -> `(height, width)` float32 intensities in [0, 1].

    8-bit data is divided by 255. Data of more than 8 bits (16-bit PNG, DICOM-derived arrays, float) is windowed
    to its own min..max range, because X-ray detectors use 10-16 of the 16 bits. Colour is turned into luma and
    an alpha channel is dropped (radiographs are opaque).
    """
    if hasattr(image, "getbands") and hasattr(image, "mode"):  # PIL image (no PIL import needed)
        width, height = image.size
        if width * height > max_pixels:
            raise ValueError(
                f"Image of {width}x{height} = {width * height} pixels is over the limit of {max_pixels} pixels "
                "(decompression-bomb guard; raise max_image_pixels in the processor to allow it)"
            )
        if width == 0 or height == 0:
            raise ValueError(f"Image has zero size ({width}x{height} pixels)")
        array = _pil_to_array(image)
    elif isinstance(image, np.ndarray):
        array = image
    elif torch.is_tensor(image):
        array = image.detach().cpu().numpy()
    else:
        raise TypeError(
            f"Unsupported image type {type(image).__name__}: pass a PIL image, a numpy array or a torch tensor"
        )
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # CHW -> HWC
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(
            f"Image array must be (H, W), (H, W, 1|3|4) or (1|3, H, W), got shape {tuple(array.shape)}"
        )
    height, width = array.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"Image has zero size ({width}x{height} pixels)")
    if height * width > max_pixels:
        raise ValueError(
            f"Image of {width}x{height} = {height * width} pixels is over the limit of {max_pixels} pixels "
            "(decompression-bomb guard; raise max_image_pixels in the processor to allow it)"
        )
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(f"Image array has unsupported dtype {array.dtype}")
    data = torch.from_numpy(np.ascontiguousarray(array).astype(np.float32))
    if data.ndim == 3:
        rgb = data[..., :3]
        data = rgb @ torch.tensor(_LUMA, dtype=torch.float32)
    if not torch.isfinite(data).all():
        raise ValueError("Image contains NaN or infinite values")
    if array.dtype == np.uint8:
        return data / 255.0
    low, high = float(data.min()), float(data.max())
    if np.issubdtype(array.dtype, np.floating) and low >= 0.0 and high <= 1.0:
        return data
    if high <= low:
        return torch.zeros_like(data)
    return (data - low) / (high - low)


def letterbox(intensity: torch.Tensor, size: int) -> tuple[torch.Tensor, LetterboxGeometry]:
    """`(H, W)` -> `(size, size)` with the aspect ratio kept (antialiased bilinear resize, black padding)."""
    height, width = intensity.shape
    geometry = LetterboxGeometry.compute(height, width, size)
    resized = F.interpolate(
        intensity[None, None],
        size=(geometry.scaled_height, geometry.scaled_width),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )[0, 0]
    canvas = torch.zeros(size, size, dtype=torch.float32)
    canvas[
        geometry.pad_top : geometry.pad_top + geometry.scaled_height,
        geometry.pad_left : geometry.pad_left + geometry.scaled_width,
    ] = resized.clamp(0, 1)
    return canvas, geometry


def normalise(canvas: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """`(size, size)` in [0, 1] -> `(channels, size, size)` standardised, one channel per mean/std entry."""
    channels = len(mean)
    mean_t = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    std_t = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return (canvas[None].expand(channels, -1, -1) - mean_t) / std_t


__all__ = [
    "LetterboxGeometry",
    "cxcywh_to_xyxy",
    "letterbox",
    "normalise",
    "xray_to_intensity",
    "xyxy_to_cxcywh",
]
