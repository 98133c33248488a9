"""DICOM for dataset builders (optional extra ``dicom``: ``pip install medrg[dicom]``).

One reader serves the whole package: the hub-side ``medrg.processing.image_processing_medrg`` (also used by the
pipeline) holds it; this module only turns its errors into ``DataFormatError`` naming the file and row.
Order of operations (DICOM PS3.3 C.11): modality LUT (rescale slope/intercept) -> VOI windowing
(first WindowCenter/WindowWidth, linear; min-max when absent) -> MONOCHROME1 inversion -> 8 bit.
No DICOM tag value leaves the reader: callers get pixels and sizes only.
"""

from __future__ import annotations

import os

import numpy as np

from ..image_processing_medrg import dicom_image_size, dicom_to_uint8, read_dicom
from .common import DataFormatError


def read_dicom_image(path: str | os.PathLike, where: str = "") -> np.ndarray:
    """Read a DICOM file into a display-ready ``uint8`` HxW array (multi-frame: the first frame)."""
    try:
        return read_dicom(path)
    except ValueError as error:
        raise DataFormatError(f"{where}: {error}" if where else str(error)) from None


def dicom_size(path: str | os.PathLike, where: str = "") -> tuple[int, int]:
    """(width, height) = (Columns, Rows) of a DICOM file, read without pixel data."""
    try:
        return dicom_image_size(path)
    except ValueError as error:
        raise DataFormatError(f"{where}: {error}" if where else str(error)) from None


__all__ = ["dicom_size", "dicom_to_uint8", "read_dicom_image"]
