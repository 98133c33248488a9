"""Reading images for dataset rows: any PNG/JPEG (8/16-bit, RGBA, palette) or DICOM (by suffix or by its "DICM"
magic) -> 8-bit grayscale PNG bytes.

Rows store PNG bytes (not paths) so a parquet export is self-contained.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..image_processing_medrg import DICOM_SUFFIXES, is_dicom_file, xray_to_intensity
from .common import DataFormatError

__all__ = ["DICOM_SUFFIXES", "image_size_of_file", "load_image_gray8", "png_bytes_of_file", "to_png_bytes"]


def to_png_bytes(image: Image.Image | np.ndarray) -> bytes:
    """Encode an 8-bit grayscale image (PIL or ``uint8`` HxW array) as PNG bytes."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 array, got {image.dtype}")
        image = Image.fromarray(image, mode="L") if image.ndim == 2 else Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _to_gray8(img: Image.Image) -> Image.Image:
    """Any PIL image -> 8-bit grayscale. Deeper data goes through the processor's own intensity rule
    (`xray_to_intensity`), so a 16-bit copy (x * 257) of an 8-bit image gives that 8-bit image back and
    detector data (10-16 bits used) is windowed to its range, exactly as the model input would be."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img)
        intensity = xray_to_intensity(arr, max_pixels=max(1, arr.size)).numpy()
        return Image.fromarray((intensity * 255.0).round().clip(0, 255).astype(np.uint8), mode="L")
    if img.mode == "L":
        return img
    if img.mode in ("RGBA", "LA", "P", "PA"):
        img = img.convert("RGBA").convert("RGB") if img.mode != "LA" else img.convert("L")
    return img.convert("L")


def load_image_gray8(path: str | os.PathLike, where: str = "") -> Image.Image:
    """Open an image file (or DICOM) as an 8-bit grayscale PIL image.

    Raises ``DataFormatError`` naming the file (and ``where``, e.g. the annotation row) when it is missing
    or unreadable.
    """
    path = Path(path)
    ctx = f"{where}: " if where else ""
    if not path.is_file():
        raise DataFormatError(f"{ctx}image file {path} not found")
    if is_dicom_file(path):  # by suffix or by the "DICM" magic at byte 128
        from .dicom import read_dicom_image

        return Image.fromarray(read_dicom_image(path, where=where), mode="L")
    try:
        with Image.open(path) as img:
            img.load()
            return _to_gray8(img)
    except (OSError, SyntaxError, ValueError) as e:
        raise DataFormatError(f"{ctx}image file {path} is unreadable: {e}") from None


def png_bytes_of_file(path: str | os.PathLike, where: str = "") -> tuple[bytes, int, int]:
    """(png_bytes, width, height) of an image file, re-encoded as 8-bit grayscale PNG."""
    img = load_image_gray8(path, where)
    return to_png_bytes(img), img.width, img.height


def image_size_of_file(path: str | os.PathLike, where: str = "") -> tuple[int, int]:
    """(width, height) without decoding pixels where possible."""
    path = Path(path)
    ctx = f"{where}: " if where else ""
    if not path.is_file():
        raise DataFormatError(f"{ctx}image file {path} not found")
    if is_dicom_file(path):
        from .dicom import dicom_size

        return dicom_size(path, where)
    try:
        with Image.open(path) as img:
            return img.width, img.height
    except (OSError, SyntaxError, ValueError) as e:
        raise DataFormatError(f"{ctx}image file {path} is unreadable: {e}") from None
