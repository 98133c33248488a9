"""MedRGImageProcessor: any X-ray -> the normalised, letterboxed square model input, and the letterbox geometry.

Any X-ray means 8- or 16-bit, grayscale (L), gray+alpha (LA), RGB(A), palette, CMYK; a PIL image, a numpy array
or a torch tensor (any real dtype, bfloat16 included); `load_image` also opens files (PNG/JPEG/..., and DICOM,
recognised by its suffix or by the "DICM" magic at byte 128). Images are letterboxed (aspect ratio kept, centred,
black padding); `LetterboxGeometry` maps boxes from the caller's pixels to the model frame and back exactly.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.processing_utils import ImagesKwargs

logger = logging.getLogger(__name__)

# ITU-R BT.601 luma weights: an RGB-stored radiograph becomes one intensity channel.
_LUMA = (0.299, 0.587, 0.114)
# 8-bit content copied into a 16-bit container by the usual full-range expansion x * 257 (0 -> 0, 255 -> 65535)
_EIGHT_TO_SIXTEEN_BIT = 257
DICOM_SUFFIXES = (".dcm", ".dicom")
# PIL modes read as they are; every other mode is converted first (see `_pil_to_array`)
_PIL_DIRECT_MODES = {"L", "LA", "RGB", "RGBA", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}
_PIL_CONVERT = {"1": "L", "La": "L", "P": "RGB", "PA": "RGBA", "RGBa": "RGB"}


@dataclass(frozen=True)
class LetterboxGeometry:
    """How an `height x width` image sits inside the `size x size` model frame (all in pixels)."""

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
        """`(..., 4)` normalised model-frame xyxy -> pixel xyxy of the original image, clipped to the image."""
        sx, sy = self.scaled_width / self.width, self.scaled_height / self.height
        offset = boxes_xyxy.new_tensor([self.pad_left, self.pad_top, self.pad_left, self.pad_top])
        scale = boxes_xyxy.new_tensor([sx, sy, sx, sy])
        pixels = (boxes_xyxy * self.size - offset) / scale
        limits = boxes_xyxy.new_tensor([self.width, self.height, self.width, self.height])
        return torch.minimum(pixels.clamp(min=0), limits)


# ----------------------------------------------------------------------------------------------- files and DICOM
def _import_pydicom():
    try:  # inside try: transformers' remote-code import check does not demand pydicom of hub users without DICOM
        import pydicom
    except ImportError:
        raise ImportError("Reading DICOM needs pydicom: pip install pydicom (or medrg[dicom])") from None
    return pydicom


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True for a `.dcm`/`.dicom` file name or a file with the DICOM magic "DICM" at byte 128."""
    if str(path).lower().endswith(DICOM_SUFFIXES):
        return True
    try:
        with open(path, "rb") as handle:
            header = handle.read(132)
    except OSError:
        return False
    return header[128:132] == b"DICM"


def _first_number(value) -> float | None:
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
    """Stored DICOM pixel values `(H, W)` (or `(H, W, 3|4)`) -> `uint8 (H, W)` display image, bright = dense.

    Order of operations (DICOM PS3.3 C.11): modality LUT (rescale slope/intercept) -> VOI windowing (linear, with
    the given window centre/width; min-max when absent) -> MONOCHROME1 inversion -> 8 bit.
    """
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


def read_dicom(path: str | os.PathLike) -> np.ndarray:
    """A DICOM file -> `uint8 (H, W)` display image (see `dicom_to_uint8`); multi-frame files give their first
    frame. No tag value leaves this function (privacy): callers get pixels only.

    Raises `ValueError` naming the file when it cannot be decoded, `ImportError` without pydicom.
    """
    pydicom = _import_pydicom()
    try:
        dataset = pydicom.dcmread(path, force=True)
        pixels = dataset.pixel_array
    except Exception as error:  # pydicom raises many types for corrupt or unsupported files
        raise ValueError(f"DICOM file {path} is unreadable: {type(error).__name__}: {error}") from None
    try:
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        frames = 1
    if frames > 1:
        logger.info("A DICOM file holds %d frames; the first frame is used", frames)
        pixels = pixels[0]
    return dicom_to_uint8(
        pixels,
        photometric=str(dataset.get("PhotometricInterpretation", "MONOCHROME2")),
        slope=_first_number(dataset.get("RescaleSlope")),
        intercept=_first_number(dataset.get("RescaleIntercept")),
        window_center=_first_number(dataset.get("WindowCenter")),
        window_width=_first_number(dataset.get("WindowWidth")),
    )


def dicom_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """`(width, height)` = (Columns, Rows) of a DICOM file, read without its pixel data."""
    pydicom = _import_pydicom()
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        return int(dataset.Columns), int(dataset.Rows)
    except Exception as error:
        raise ValueError(f"DICOM file {path} is unreadable: {type(error).__name__}: {error}") from None


def load_image(source):
    """A file path (`str` or `os.PathLike`) -> a PIL image (16-bit PNGs keep their depth) or, for DICOM, a `uint8`
    array; any other object is returned unchanged (it is checked by `MedRGImageProcessor`)."""
    if not isinstance(source, (str, os.PathLike)):
        return source
    path = os.fspath(source)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if path.startswith(("http://", "https://")):
        raise ValueError(f"Image URLs are not downloaded: fetch {path} first and pass the file or the image")
    if not os.path.isfile(path):
        if os.path.isdir(path):
            raise ValueError(f"Image path {path} is a folder; expected an image file (PNG/JPEG/DICOM)")
        if os.path.exists(path):
            raise ValueError(
                f"Image path {path} is not a regular file (a pipe, device or socket); save the image to a file"
            )
        raise ValueError(f"Image file not found: {path}")
    if is_dicom_file(path):
        return read_dicom(path)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            opened.load()
            return opened.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"Cannot read image file {path}: {error}") from None


# ---------------------------------------------------------------------------------------------------- intensity
def _pil_to_array(image) -> np.ndarray:
    mode = image.mode
    if mode not in _PIL_DIRECT_MODES:
        image = image.convert(_PIL_CONVERT.get(mode, "RGB"))
    return np.asarray(image)


def _to_array(image) -> np.ndarray:
    if hasattr(image, "getbands") and hasattr(image, "mode"):  # PIL image (no PIL import needed)
        return _pil_to_array(image)
    if isinstance(image, np.ndarray):
        return image
    if torch.is_tensor(image):
        if image.is_meta:
            raise ValueError(
                f"Image tensor of shape {tuple(image.shape)} is on the meta device (it holds no pixel values); "
                "pass a tensor with data"
            )
        tensor = image.detach().cpu()
        if tensor.is_complex():
            raise TypeError(f"Image tensor has unsupported dtype {tensor.dtype}")
        if tensor.is_floating_point() and tensor.dtype not in (torch.float32, torch.float64):
            tensor = tensor.float()  # bfloat16/float16 -> float32 is exact; numpy has no bfloat16
        return tensor.numpy()
    raise TypeError(
        f"Unsupported image type {type(image).__name__}: pass a PIL image, a numpy array or a torch tensor"
    )


def _check_size(height: int, width: int, max_pixels: int) -> None:
    if height == 0 or width == 0:
        raise ValueError(f"Image has zero size ({width}x{height} pixels)")
    if height * width > max_pixels:
        raise ValueError(
            f"Image of {width}x{height} = {height * width} pixels is over the limit of {max_pixels} pixels "
            "(decompression-bomb guard; raise max_image_pixels in the image processor to allow it)"
        )


def _to_channels_last(array: np.ndarray) -> np.ndarray:
    """`(H, W)`, `(H, W, C)` or `(C, H, W)` with C in 1..4 -> `(H, W)` or `(H, W, 3)` (alpha dropped)."""
    if array.ndim == 3 and array.shape[0] in (1, 2, 3, 4) and array.shape[-1] not in (1, 2, 3, 4):
        array = np.moveaxis(array, 0, -1)  # CHW -> HWC
    if array.ndim == 3 and array.shape[-1] in (1, 2):
        array = array[..., 0]  # gray, or gray + alpha (radiographs are opaque)
    if array.ndim == 3 and array.shape[-1] == 4:
        array = array[..., :3]  # RGBA: alpha dropped
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3):
        raise ValueError(
            f"Image array must be (H, W), (H, W, 1|2|3|4) or (1|2|3|4, H, W), got shape {tuple(array.shape)}"
        )
    return array


def _luma(data: torch.Tensor) -> torch.Tensor:
    return data @ torch.tensor(_LUMA, dtype=data.dtype) if data.ndim == 3 else data


def xray_to_intensity(image, max_pixels: int) -> torch.Tensor:
    """Any supported image -> `(height, width)` float32 intensities in [0, 1].

    The pixel VALUES decide the scale, not the container type, so one picture gives one result at any bit depth:
    - float data within [0, 1] is already an intensity;
    - whole numbers within [0, 255] are 8-bit data: divided by 255 (uint8, int32, uint16 or float holding them);
    - whole multiples of 257 within [0, 65535] are 8-bit data expanded to 16 bits (x * 257): divided by 65535,
      which gives exactly x / 255;
    - anything else (10-16-bit detector data, arbitrary floats, negative values) is windowed to its own
      min..max range (a constant image becomes 0).
    Colour becomes luma, an alpha channel is dropped (radiographs are opaque).
    """
    if hasattr(image, "getbands") and hasattr(image, "size"):
        width, height = image.size
        _check_size(height, width, max_pixels)  # before decoding a PIL image's pixels
    array = _to_channels_last(_to_array(image))
    _check_size(array.shape[0], array.shape[1], max_pixels)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    is_float = np.issubdtype(array.dtype, np.floating)
    if not (np.issubdtype(array.dtype, np.integer) or is_float):
        raise TypeError(f"Image array has unsupported dtype {array.dtype}")
    if is_float and not np.isfinite(array).all():
        raise ValueError("Image contains NaN or infinite values")
    low, high = array.min(), array.max()
    whole = not is_float or bool((np.floor(array) == array).all())
    if is_float and low >= 0 and high <= 1:
        return _luma(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)))
    if whole and low >= 0 and high <= 255:
        return _luma(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)) / 255.0)
    if whole and low >= 0 and high <= 65535 and not (array % _EIGHT_TO_SIXTEEN_BIT).any():
        return _luma(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)) / 65535.0)
    with np.errstate(over="ignore", invalid="ignore"):
        data = array.astype(np.float64)
        if data.ndim == 3:
            data = data @ np.asarray(_LUMA, dtype=np.float64)
        low, high = float(data.min()), float(data.max())
        if high <= low:
            return torch.zeros(data.shape, dtype=torch.float32)
        windowed = (data - low) / (high - low)
    if not np.isfinite(windowed).all():
        raise ValueError(
            f"Image values span [{low:.3g}, {high:.3g}], a range too large to window in floating point"
        )
    return torch.from_numpy(windowed.astype(np.float32))


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


def standardise(canvas: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """`(size, size)` in [0, 1] -> `(channels, size, size)` standardised, one channel per mean/std entry."""
    channels = len(mean)
    mean_t = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    std_t = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return (canvas[None].expand(channels, -1, -1) - mean_t) / std_t


# --------------------------------------------------------------------------------------------- image processor
class MedRGImagesKwargs(ImagesKwargs, total=False):
    """`from_pretrained(..., image_size=...)` overrides accepted besides the standard image kwargs."""

    image_size: int
    max_image_pixels: int


class MedRGImageProcessor(BaseImageProcessor):
    r"""
    X-ray image processor of MedRG (numpy/PIL/torch only; no torchvision).

    Args:
        image_size (`int`): side of the square, letterboxed model input, in pixels.
        image_mean, image_std (`list[float]`): per-channel normalisation; their length is the channel count.
        max_image_pixels (`int`): images with more pixels are refused (decompression-bomb guard).

    `__call__`/`preprocess(images)` returns a `BatchFeature` with `pixel_values` `(B, C, image_size, image_size)`
    float32 and `image_sizes` `(B, 2)` long, the original `(height, width)` of each image.
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = MedRGImagesKwargs

    def __init__(
        self,
        image_size: int = 224,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        max_image_pixels: int = 100_000_000,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_size = int(image_size)
        self.image_mean = [float(v) for v in image_mean] if image_mean is not None else [0.5, 0.5, 0.5]
        self.image_std = [float(v) for v in image_std] if image_std is not None else [0.5, 0.5, 0.5]
        self.max_image_pixels = int(max_image_pixels)
        if len(self.image_mean) != len(self.image_std) or not self.image_mean:
            raise ValueError(
                f"image_mean and image_std need the same non-zero length, got {self.image_mean} and {self.image_std}"
            )
        if any(not s > 0 for s in self.image_std):
            raise ValueError(f"image_std must be positive, got {self.image_std}")
        for name in ("image_size", "max_image_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"MedRGImageProcessor.{name} must be >= 1, got {getattr(self, name)}")

    def letterbox_geometry(self, height: int, width: int) -> LetterboxGeometry:
        """Where an image of `height x width` pixels sits in the model frame."""
        return LetterboxGeometry.compute(int(height), int(width), self.image_size)

    def prepare_image(self, image) -> tuple[torch.Tensor, LetterboxGeometry]:
        """One image -> `(channels, image_size, image_size)` model input and its letterbox geometry."""
        intensity = xray_to_intensity(image, self.max_image_pixels)
        canvas, geometry = letterbox(intensity, self.image_size)
        pixels = standardise(canvas, self.image_mean, self.image_std)
        if not torch.isfinite(pixels).all():
            raise ValueError("Image processing produced non-finite pixel values")
        return pixels, geometry

    def preprocess(self, images, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        """
        Args:
            images: one image or a list (PIL image, numpy array or torch tensor; see `xray_to_intensity`).

        Returns:
            `BatchFeature` with `pixel_values` `(B, C, S, S)` and `image_sizes` `(B, 2)` = original (height, width).
            An unusable image raises `ValueError`/`TypeError` naming its index in the batch ("Sample i: ...").
        """
        if kwargs:
            raise TypeError(f"MedRGImageProcessor got unexpected arguments: {sorted(kwargs)}")
        image_list = list(images) if isinstance(images, (list, tuple)) else [images]
        if not image_list:
            raise ValueError("MedRGImageProcessor needs at least one image")
        pixel_values, sizes = [], []
        for index, image in enumerate(image_list):
            try:
                pixels, geometry = self.prepare_image(image)
            except (ValueError, TypeError) as error:
                raise type(error)(f"Sample {index}: {error}") from None
            pixel_values.append(pixels)
            sizes.append([geometry.height, geometry.width])
        data = {
            "pixel_values": torch.stack(pixel_values),
            "image_sizes": torch.tensor(sizes, dtype=torch.long),
        }
        return BatchFeature(data=data, tensor_type=return_tensors)

    def __call__(self, images, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        return self.preprocess(images, return_tensors=return_tensors, **kwargs)


__all__ = [
    "DICOM_SUFFIXES",
    "LetterboxGeometry",
    "MedRGImageProcessor",
    "dicom_image_size",
    "dicom_to_uint8",
    "is_dicom_file",
    "letterbox",
    "load_image",
    "read_dicom",
    "standardise",
    "xray_to_intensity",
]
