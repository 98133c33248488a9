"""DICOM pixels -> 8-bit display image (optional extra ``dicom``: ``pip install medrg[dicom]``).

Order of operations (DICOM PS3.3 C.11): modality LUT (rescale slope/intercept) -> VOI windowing
(first WindowCenter/WindowWidth, linear; min-max when absent) -> MONOCHROME1 inversion -> 8 bit.
No DICOM tag value leaves this module: callers get pixels and sizes only.
"""

from __future__ import annotations

import os

import numpy as np

from .common import DataFormatError


def _pydicom():
    try:
        import pydicom
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise ImportError("reading DICOM needs pydicom: pip install 'medrg[dicom]'") from None
    return pydicom


def _first(value) -> float | None:
    if value is None:
        return None
    try:
        return float(value[0]) if hasattr(value, "__len__") and not isinstance(value, str) else float(value)
    except (TypeError, ValueError, IndexError):
        return None


def dicom_to_uint8(
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    slope: float | None = None,
    intercept: float | None = None,
    window_center: float | None = None,
    window_width: float | None = None,
) -> np.ndarray:
    """Map stored DICOM pixel values to a ``uint8`` HxW image where bright = dense (MONOCHROME2 look)."""
    arr = pixels.astype(np.float64)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = arr[..., :3].mean(axis=-1)
    if arr.ndim != 2:
        raise ValueError(f"expected a single-frame 2-D image, got shape {pixels.shape}")
    arr = arr * (1.0 if slope is None else slope) + (0.0 if intercept is None else intercept)
    if window_center is not None and window_width is not None and window_width > 1:
        # Linear VOI function of PS3.3 C.11.2.1.2.1.
        c, w = window_center, window_width
        out = ((arr - (c - 0.5)) / (w - 1) + 0.5).clip(0.0, 1.0)
    else:
        lo, hi = float(arr.min()), float(arr.max())
        out = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    if photometric.strip().upper() == "MONOCHROME1":
        out = 1.0 - out
    return (out * 255.0).round().astype(np.uint8)


def read_dicom_image(path: str | os.PathLike, where: str = "") -> np.ndarray:
    """Read a DICOM file into a display-ready ``uint8`` HxW array."""
    pydicom = _pydicom()
    ctx = f"{where}: " if where else ""
    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except Exception as e:  # pydicom raises many types for corrupt or unsupported files
        raise DataFormatError(f"{ctx}DICOM file {path} is unreadable: {type(e).__name__}: {e}") from None
    if pixels.ndim == 3 and ds.get("NumberOfFrames", 1) not in (None, 1, "1"):
        pixels = pixels[0]
    return dicom_to_uint8(
        pixels,
        photometric=str(ds.get("PhotometricInterpretation", "MONOCHROME2")),
        slope=_first(ds.get("RescaleSlope")),
        intercept=_first(ds.get("RescaleIntercept")),
        window_center=_first(ds.get("WindowCenter")),
        window_width=_first(ds.get("WindowWidth")),
    )


def dicom_size(path: str | os.PathLike, where: str = "") -> tuple[int, int]:
    """(width, height) = (Columns, Rows) of a DICOM file, read without pixel data."""
    pydicom = _pydicom()
    ctx = f"{where}: " if where else ""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return int(ds.Columns), int(ds.Rows)
    except Exception as e:
        raise DataFormatError(f"{ctx}DICOM file {path} is unreadable: {type(e).__name__}: {e}") from None
