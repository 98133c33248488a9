"""MedRGProcessor: one-id <BOX>, X-ray image processing, templates, labels, targets, post-processing."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from conftest import xray_like
from medrg.modeling_medrg.medrg_box_ops import box_cxcywh_to_xyxy
from medrg.processing.image_processing_medrg import LetterboxGeometry, cxcywh_to_xyxy
from medrg.processing.prompting_medrg import ANSWER_PREFIX
from PIL import Image

from medrg import MedRGProcessor

CONTEXTS = [
    "<BOX>",
    " <BOX>",
    "<BOX>.",
    "nodule<BOX>",
    "a<BOX>b",
    "lobe <BOX>; mass<BOX>.",
    "\n<BOX>\n",
    "consolidation<BOX><BOX>",
    "ÄÖ<BOX>é",
]


@pytest.mark.parametrize("text", CONTEXTS)
def test_box_token_is_one_id_in_every_context(tiny, text):
    _, processor = tiny
    ids = processor.tokenizer.encode(text, add_special_tokens=False)
    assert ids.count(processor.box_token_id) == text.count("<BOX>")
    decoded_pieces = [processor.tokenizer.decode([i]) for i in ids]
    assert decoded_pieces.count("<BOX>") == text.count("<BOX>")


def test_box_token_survives_save_and_load(tiny, tmp_path):
    _, processor = tiny
    processor.save_pretrained(tmp_path)
    loaded = MedRGProcessor.from_pretrained(tmp_path)
    assert loaded.box_token_id == processor.box_token_id
    assert loaded.image_token_id == processor.image_token_id
    assert loaded.tokenizer.encode("x<BOX>y", add_special_tokens=False) == processor.tokenizer.encode(
        "x<BOX>y", add_special_tokens=False
    )
    assert (loaded.image_size, loaded.num_image_tokens, loaded.max_length) == (
        processor.image_size,
        processor.num_image_tokens,
        processor.max_length,
    )


def test_tokenizer_without_box_token_is_rejected(tiny):
    from medrg.tokenizer import train_tiny_tokenizer

    tokenizer = train_tiny_tokenizer()
    plain = type(tokenizer)(
        tokenizer_object=tokenizer.backend_tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    with pytest.raises(ValueError, match="must be ONE special token"):
        MedRGProcessor(tokenizer=plain)


def _sixteen_bit(height=50, width=70):
    ramp = np.linspace(1000, 4000, height * width).reshape(height, width).astype(np.uint16)
    return Image.fromarray(ramp)


@pytest.mark.parametrize(
    "image",
    [
        Image.fromarray(xray_like(120, 90)),  # grayscale L
        Image.fromarray(xray_like(60, 200)).convert("RGBA"),
        Image.fromarray(xray_like(33, 33)).convert("RGB"),
        Image.fromarray(xray_like(40, 30)).convert("P"),
        _sixteen_bit(),
        xray_like(77, 51),  # numpy uint8
        np.stack([xray_like(20, 25)] * 3, axis=-1),  # numpy HWC
        np.random.RandomState(0).rand(30, 40).astype(np.float32) * 3000,  # float, arbitrary range
        torch.rand(1, 45, 45),  # torch CHW
    ],
)
def test_any_image_becomes_normalised_square(tiny, image):
    _, processor = tiny
    pixels, geometry = processor.prepare_image(image)
    assert pixels.shape == (3, processor.image_size, processor.image_size)
    assert torch.isfinite(pixels).all()
    assert pixels.min() >= -1.0 - 1e-6 and pixels.max() <= 1.0 + 1e-6
    assert max(geometry.scaled_height, geometry.scaled_width) == processor.image_size


def test_sixteen_bit_keeps_its_contrast(tiny):
    _, processor = tiny
    pixels, _ = processor.prepare_image(_sixteen_bit(64, 64))
    # windowed to its own range: the ramp spans the whole [-1, 1] output, not a sliver of it
    assert pixels.max() - pixels.min() > 1.8


def test_letterbox_keeps_aspect_ratio_and_maps_boxes_back():
    geometry = LetterboxGeometry.compute(height=300, width=150, size=64)
    assert (geometry.scaled_height, geometry.scaled_width, geometry.pad_left, geometry.pad_top) == (
        64,
        32,
        16,
        0,
    )
    boxes = torch.tensor([[10.0, 20.0, 140.0, 290.0], [0.0, 0.0, 150.0, 300.0]])
    there = geometry.image_to_model(boxes)
    assert torch.allclose(there[1], torch.tensor([16 / 64, 0.0, 48 / 64, 1.0]))
    assert torch.allclose(geometry.model_to_image(there), boxes, atol=1e-4)
    # a predicted box in the padding is clipped to the image
    clipped = geometry.model_to_image(torch.tensor([[0.0, 0.0, 0.1, 0.5]]))
    assert clipped[0, 0] == 0 and clipped[0, 2] == 0


def test_box_conversion_copies_agree():
    boxes = torch.rand(100, 4)
    assert torch.equal(cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(boxes))


def test_training_inputs_mask_the_prompt_and_place_targets(tiny):
    _, processor = tiny
    findings = [
        [
            {"phrase": "nodule in the right upper lobe", "category": "Nodule", "boxes": [[10, 12, 24, 26]]},
            {
                "phrase": "bilateral effusions",
                "category": "Effusion",
                "boxes": [[2, 75, 20, 94], [60, 75, 78, 94]],
            },
        ],
        [],
    ]
    batch = processor(
        images=[xray_like(), xray_like(seed=1)],
        text=["Nodule. Bilateral effusions.", "Normal."],
        findings=findings,
    )
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert ids.shape == labels.shape == mask.shape
    assert (labels[mask == 0] == -100).all()  # padding
    assert (labels[ids == processor.image_token_id] == -100).all()  # image placeholders
    assert int((ids == processor.image_token_id).sum(1).unique()) == processor.num_image_tokens
    # the answer is exactly the labelled part and ends with EOS
    answer0 = processor.tokenizer.decode(labels[0][labels[0] != -100])
    assert answer0 == " nodule in the right upper lobe<BOX>; bilateral effusions<BOX>.</s>"
    answer1 = processor.tokenizer.decode(labels[1][labels[1] != -100])
    assert answer1 == " No finding.</s>"
    prompt0 = processor.tokenizer.decode(ids[0][labels[0] == -100][mask[0][labels[0] == -100] == 1])
    assert prompt0.endswith(ANSWER_PREFIX) and "Nodule. Bilateral effusions." in prompt0
    # targets: finding 1 has two boxes, sample 1 none
    assert batch["target_boxes"].shape == (2, 2, 2, 4)
    assert batch["target_boxes_mask"].tolist() == [
        [[True, False], [True, True]],
        [[False, False], [False, False]],
    ]
    geometry = LetterboxGeometry.compute(96, 80, processor.image_size)
    expected = geometry.image_to_model(torch.tensor([10.0, 12, 24, 26]))
    assert torch.allclose(cxcywh_to_xyxy(batch["target_boxes"][0, 0, 0]), expected, atol=1e-6)
    assert batch["image_sizes"].tolist() == [[96, 80], [96, 80]]


def test_literal_special_tokens_in_a_report_are_neutralised(tiny):
    _, processor = tiny
    batch = processor(images=xray_like(), text="Report mentions <BOX> and <image> literally.")
    assert int((batch["input_ids"] == processor.box_token_id).sum()) == 0
    assert int((batch["input_ids"] == processor.image_token_id).sum()) == processor.num_image_tokens


def test_long_report_is_truncated_with_a_warning_keeping_the_instruction(tiny):
    _, processor = tiny
    report = "Patchy consolidation in the right lower lobe. " * 200
    with pytest.warns(UserWarning, match="truncated"):
        batch = processor(images=xray_like(), text=report)
    assert batch["input_ids"].shape[1] == processor.max_length
    text = processor.tokenizer.decode(batch["input_ids"][0])
    assert processor.instruction in text and text.endswith(ANSWER_PREFIX)


def _png_bytes(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"text": ""}, ValueError, "Sample 0: the report is empty"),
        ({"text": "   "}, ValueError, "Sample 0: the report is empty"),
        ({"text": [42]}, TypeError, "Sample 0: the report must be a string"),
        ({"images": np.zeros((0, 10), np.uint8)}, ValueError, "zero size"),
        ({"images": np.zeros((5, 5, 7), np.uint8)}, ValueError, "Image array must be"),
        ({"images": "not an image object"}, TypeError, "Unsupported image type"),
        ({"images": np.full((8, 8), np.nan, np.float32)}, ValueError, "NaN"),
        (
            {"images": [xray_like(), xray_like()], "text": ["one report"]},
            ValueError,
            "2 images for 1 reports",
        ),
        (
            {"findings": [{"phrase": "x", "boxes": [[5, 5, 1, 9]]}]},
            ValueError,
            r"findings\[0\]\[0\]\['boxes'\]\[0\] has zero or negative area",
        ),
        ({"findings": [{"phrase": "x", "boxes": [[5, 5, float("nan"), 9]]}]}, ValueError, "NaN"),
        ({"findings": [{"phrase": "x", "boxes": [[5, 5, 9]]}]}, ValueError, "must have 4 numbers"),
        ({"findings": [{"phrase": "x", "boxes": []}]}, ValueError, r"\['boxes'\] is empty"),
        ({"findings": [{"boxes": [[1, 1, 2, 2]]}]}, ValueError, "must be a dict with 'phrase' and 'boxes'"),
    ],
)
def test_bad_input_names_the_problem(tiny, kwargs, error, message):
    _, processor = tiny
    call = {"images": xray_like(), "text": "Nodule in the right upper lobe."}
    call.update(kwargs)
    if "findings" in call and isinstance(call["text"], str):
        call["findings"] = call["findings"]
    with pytest.raises(error, match=message):
        processor(**call)


def test_decompression_bomb_guard(tiny):
    _, processor = tiny
    small_limit = MedRGProcessor(
        tokenizer=processor.tokenizer, image_size=64, num_image_tokens=64, max_image_pixels=1000
    )
    with pytest.raises(ValueError, match="over the limit of 1000 pixels"):
        small_limit(images=Image.fromarray(xray_like(40, 40)), text="Normal.")
