"""Reliability of image and report inputs (issue 9 item 9, issue 11's bit-depth remark, and what a demanding user
tries next). One row per case; each asserts the clear error or the correct result."""

from __future__ import annotations

import io
import logging
import sys

import numpy as np
import pytest
import torch
from conftest import write_dicom, xray_like
from medrg.processing.image_processing_medrg import load_image
from PIL import Image
from transformers import pipeline

REPORT = "Nodule in the right upper lobe."


@pytest.fixture(scope="module")
def pipe(tiny):
    model, processor = tiny
    return pipeline("report-grounding", model=model, processor=processor)


def pixels(processor, image, report: str = REPORT) -> torch.Tensor:
    return processor(images=image, text=report)["pixel_values"]


def ramp(height: int = 40, width: int = 50) -> np.ndarray:
    return (np.arange(height * width).reshape(height, width) * (4000 // (height * width) or 1)).astype(
        np.uint16
    )


# ----------------------------------------------------------------------------------------------- the cases
def case_uint8_and_int32_agree(ctx):
    image = xray_like(40, 50)
    assert torch.equal(pixels(ctx.processor, image), pixels(ctx.processor, image.astype(np.int32)))


def case_sixteen_bit_copy_agrees(ctx):
    image = xray_like(40, 50, boxes=[(5, 5, 20, 20)])
    eight = pixels(ctx.processor, Image.fromarray(image))
    assert torch.equal(eight, pixels(ctx.processor, image.astype(np.uint16) * 257))
    assert torch.equal(eight, pixels(ctx.processor, Image.fromarray(image.astype(np.uint16) * 257)))


def case_gray_alpha_png(ctx):
    image = xray_like(40, 50)
    path = ctx.tmp_path / "la.png"
    Image.fromarray(np.stack([image, np.full_like(image, 128)], axis=-1), mode="LA").save(path)
    loaded = load_image(path)
    assert loaded.mode == "LA"
    assert torch.equal(pixels(ctx.processor, loaded), pixels(ctx.processor, image))
    assert torch.equal(pixels(ctx.processor, np.stack([image, image], axis=-1)), pixels(ctx.processor, image))


def case_pathlib_path(ctx):
    path = ctx.tmp_path / "cxr.png"
    Image.fromarray(xray_like(60, 50)).save(path)
    assert ctx.pipe(path, report=REPORT, max_new_tokens=4) == ctx.pipe(
        str(path), report=REPORT, max_new_tokens=4
    )


def case_dicom_without_suffix(ctx):
    pytest.importorskip("pydicom")
    named = write_dicom(ctx.tmp_path / "study.dcm", ramp())
    bare = write_dicom(ctx.tmp_path / "IM0001", ramp())
    assert np.array_equal(load_image(bare), load_image(named))
    assert ctx.pipe(bare, report=REPORT, max_new_tokens=4) == ctx.pipe(named, report=REPORT, max_new_tokens=4)
    assert torch.equal(pixels(ctx.processor, load_image(bare)), pixels(ctx.processor, load_image(named)))


def case_bfloat16_tensor(ctx):
    values = torch.randint(0, 256, (1, 40, 50)).float() / 256  # exactly representable in bfloat16
    assert torch.equal(pixels(ctx.processor, values.bfloat16()), pixels(ctx.processor, values))
    assert torch.equal(pixels(ctx.processor, values.half()), pixels(ctx.processor, values))


def case_multiframe_dicom_first_frame(ctx, caplog):
    pytest.importorskip("pydicom")
    stack = np.stack([ramp(), 4000 - ramp(), np.zeros_like(ramp())])
    path = write_dicom(ctx.tmp_path / "multi.dcm", stack)
    single = write_dicom(ctx.tmp_path / "single.dcm", stack[0])
    with caplog.at_level(logging.INFO, logger="medrg.processing.image_processing_medrg"):
        first = load_image(path)
    assert np.array_equal(first, load_image(single))
    assert "3 frames; the first frame is used" in caplog.text
    assert "Doe" not in caplog.text and "SECRET" not in caplog.text


def case_literal_text_special_tokens(ctx):
    tokenizer = ctx.processor.tokenizer
    special = {tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id}
    for literal in ("</s>", "<pad>", "<unk>", "<|endoftext|>"):
        ids = ctx.processor(images=xray_like(), text=f"Effusion {literal} noted.")["input_ids"][0].tolist()
        assert not special & set(ids), literal
        assert f"Effusion {literal} noted." in tokenizer.decode(ids)


def case_literal_image_and_box_neutralised(ctx):
    ids = ctx.processor(images=xray_like(), text="Mass <BOX> and <image> here.")["input_ids"][0]
    assert int((ids == ctx.processor.box_token_id).sum()) == 0
    assert int((ids == ctx.processor.image_token_id).sum()) == ctx.processor.num_image_tokens


def case_float32_at_the_range_limit(ctx):
    image = np.linspace(-3e38, 3e38, 40 * 50, dtype=np.float32).reshape(40, 50)
    out = pixels(ctx.processor, image)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, pixels(ctx.processor, np.linspace(0, 1, 40 * 50).reshape(40, 50)), atol=1e-5)


def case_overflowing_float64_names_the_sample(ctx):
    huge = np.full((40, 50), 1.7e308)
    huge[:, :25] = -1.7e308  # finite values whose range (3.4e308) overflows even float64
    with pytest.raises(ValueError, match=r"Sample 1: Image values span .* a range too large to window"):
        ctx.processor(images=[xray_like(), huge], text=[REPORT, REPORT])


def case_one_by_one_image(ctx):
    out = ctx.processor(images=np.full((1, 1), 200, np.uint8), text=REPORT)
    size = ctx.processor.image_size
    assert out["image_sizes"].tolist() == [[1, 1]] and out["pixel_values"].shape == (1, 3, size, size)
    assert torch.allclose(out["pixel_values"], torch.full_like(out["pixel_values"], 200 / 255 * 2 - 1))


def case_long_thin_strip(ctx):
    out = ctx.processor(images=np.full((10000, 10), 255, np.uint8), text=REPORT)
    assert out["image_sizes"].tolist() == [[10000, 10]]
    column = out["pixel_values"][0, 0]
    assert (column.max(dim=0).values > 0.9).sum() == 1  # one model-frame column holds the strip, centred
    assert torch.isfinite(column).all()


def case_cmyk_jpeg(ctx):
    path = ctx.tmp_path / "cmyk.jpg"
    Image.fromarray(xray_like(40, 50)).convert("CMYK").save(path, format="JPEG", quality=95)
    loaded = load_image(path)
    assert loaded.mode == "CMYK"
    out = pixels(ctx.processor, loaded)
    assert torch.equal(out, pixels(ctx.processor, loaded.convert("RGB")))


def case_constant_sixteen_bit_png(ctx):
    path = ctx.tmp_path / "flat16.png"
    Image.fromarray(np.full((30, 40), 1234, np.uint16)).save(path)
    out = pixels(ctx.processor, load_image(path))
    assert torch.isfinite(out).all() and torch.equal(out, pixels(ctx.processor, np.zeros((30, 40), np.uint8)))


def case_bad_image_in_a_list_names_its_index(ctx):
    images = [xray_like(), xray_like(), np.zeros((5, 5, 7), np.uint8), xray_like()]
    with pytest.raises(ValueError, match="Sample 2: Image array must be"):
        ctx.processor(images=images, text=[REPORT] * 4)


def case_whitespace_only_report(ctx):
    with pytest.raises(ValueError, match="Sample 1: the report is empty"):
        ctx.processor(images=[xray_like(), xray_like()], text=[REPORT, " \n\t\u3000 "])


def case_emoji_only_report(ctx):
    out = ctx.processor(images=xray_like(), text="🫁🫀😷")
    assert "🫁🫀😷" in ctx.processor.tokenizer.decode(out["input_ids"][0])


def case_float64_unit_and_byte_ranges_agree(ctx):
    image = xray_like(40, 50)
    eight = pixels(ctx.processor, image)
    assert torch.equal(eight, pixels(ctx.processor, image.astype(np.float64)))
    assert torch.allclose(eight, pixels(ctx.processor, image / 255.0), atol=1e-6)


def case_unreachable_url_is_a_clear_error(ctx):
    # URLs are fetched through transformers' image loading; an unreachable host (no network here, and an
    # unresolvable name anywhere) is one clear error naming the URL
    with pytest.raises(ValueError, match=r"Cannot load the image at URL https://medrg\.invalid/cxr\.png"):
        ctx.pipe("https://medrg.invalid/cxr.png", report=REPORT)


def case_corrupt_file_without_suffix(ctx):
    path = ctx.tmp_path / "not_an_image"
    path.write_bytes(b"\x00" * 300)
    with pytest.raises(ValueError, match="Cannot read image file"):
        ctx.pipe(path, report=REPORT)


def case_chw_tensor_equals_hwc_array(ctx):
    rgb = np.stack([xray_like(40, 50, seed=s) for s in range(3)], axis=-1)
    expected = pixels(ctx.processor, rgb)
    assert torch.equal(pixels(ctx.processor, torch.from_numpy(rgb).permute(2, 0, 1)), expected)
    assert torch.equal(pixels(ctx.processor, Image.fromarray(rgb).convert("RGBA")), expected)


def case_tensor_requiring_grad(ctx):
    image = torch.rand(40, 50, requires_grad=True)
    assert torch.equal(pixels(ctx.processor, image), pixels(ctx.processor, image.detach()))


def case_complex_dtype_refused(ctx):
    with pytest.raises(TypeError, match="Sample 0: Image array has unsupported dtype complex"):
        ctx.processor(images=np.zeros((8, 8), np.complex64), text=REPORT)


def case_signed_ct_like_values_are_windowed(ctx):
    image = np.linspace(-1024, 3071, 40 * 50).reshape(40, 50).astype(np.int16)
    out = pixels(ctx.processor, image)
    assert torch.isfinite(out).all() and out.max() - out.min() > 1.8


def case_monochrome1_dicom_is_inverted(ctx):
    pytest.importorskip("pydicom")
    normal = load_image(write_dicom(ctx.tmp_path / "m2.dcm", ramp(), "MONOCHROME2"))
    inverted = load_image(write_dicom(ctx.tmp_path / "m1.dcm", ramp(), "MONOCHROME1"))
    assert np.array_equal(inverted, 255 - normal)


def case_dicom_without_pydicom_is_a_clear_error(ctx, monkeypatch):
    path = ctx.tmp_path / "x.dcm"
    path.write_bytes(b"\x00" * 128 + b"DICM")
    monkeypatch.setitem(sys.modules, "pydicom", None)  # as if pydicom were not installed
    with pytest.raises(ImportError, match="Reading DICOM needs pydicom"):
        load_image(path)


def case_bomb_in_a_list_names_its_index(ctx):
    from medrg import MedRGImageProcessor

    guard = MedRGImageProcessor(image_size=32, max_image_pixels=1000)
    with pytest.raises(ValueError, match="Sample 1: Image of 40x40 = 1600 pixels is over the limit"):
        guard([xray_like(20, 20), Image.fromarray(xray_like(40, 40))])


def case_png_bytes_in_memory(ctx):
    buffer = io.BytesIO()
    Image.fromarray(xray_like(40, 50)).save(buffer, format="PNG")
    with pytest.raises(TypeError, match="Unsupported image type bytes"):
        ctx.processor(images=buffer.getvalue(), text=REPORT)
    assert torch.equal(pixels(ctx.processor, Image.open(buffer)), pixels(ctx.processor, xray_like(40, 50)))


CASES = [
    # issue 9 item 9 (+ issue 11: a 16-bit copy gives the same input as its 8-bit original)
    case_uint8_and_int32_agree,
    case_sixteen_bit_copy_agrees,
    case_gray_alpha_png,
    case_pathlib_path,
    case_dicom_without_suffix,
    case_bfloat16_tensor,
    case_multiframe_dicom_first_frame,
    case_literal_text_special_tokens,
    case_literal_image_and_box_neutralised,
    case_float32_at_the_range_limit,
    case_overflowing_float64_names_the_sample,
    # what a demanding user tries next
    case_one_by_one_image,
    case_long_thin_strip,
    case_cmyk_jpeg,
    case_constant_sixteen_bit_png,
    case_bad_image_in_a_list_names_its_index,
    case_whitespace_only_report,
    case_emoji_only_report,
    case_float64_unit_and_byte_ranges_agree,
    case_unreachable_url_is_a_clear_error,
    case_corrupt_file_without_suffix,
    case_chw_tensor_equals_hwc_array,
    case_tensor_requiring_grad,
    case_complex_dtype_refused,
    case_signed_ct_like_values_are_windowed,
    case_monochrome1_dicom_is_inverted,
    case_dicom_without_pydicom_is_a_clear_error,
    case_bomb_in_a_list_names_its_index,
    case_png_bytes_in_memory,
]


class _Context:
    def __init__(self, processor, pipe, tmp_path):
        self.processor, self.pipe, self.tmp_path = processor, pipe, tmp_path


@pytest.mark.parametrize("case", CASES, ids=[c.__name__.removeprefix("case_") for c in CASES])
def test_input_case(case, tiny, pipe, tmp_path, request):
    context = _Context(tiny[1], pipe, tmp_path)
    extra = [
        request.getfixturevalue(name) for name in case.__code__.co_varnames[1 : case.__code__.co_argcount]
    ]
    case(context, *extra)
