"""MedRGProcessor and MedRGImageProcessor: one-id <BOX>, X-ray image processing, templates, labels, targets,
save/load, post-processing of padded generation outputs."""

from __future__ import annotations

import io
import json
import logging
import sys

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, write_dicom, xray_like
from medrg.processing.image_processing_medrg import LetterboxGeometry, load_image
from medrg.processing.prompting_medrg import ANSWER_PREFIX
from PIL import Image
from transformers import AutoImageProcessor, AutoProcessor, pipeline
from transformers.image_transforms import center_to_corners_format

from medrg import MedRGImageProcessor, MedRGProcessor

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


def test_image_processor_config_round_trips_and_auto_classes_find_it(tmp_path):
    from medrg.tokenizer import train_tiny_tokenizer

    image_processor = MedRGImageProcessor(
        image_size=48, image_mean=[0.4, 0.5], image_std=[0.2, 0.25], max_image_pixels=12345
    )
    processor = MedRGProcessor(image_processor, train_tiny_tokenizer(), num_image_tokens=9, max_length=99)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["image_processor"]["image_processor_type"] == "MedRGImageProcessor"
    assert (saved["num_image_tokens"], saved["max_length"]) == (9, 99)
    for loaded in (
        MedRGProcessor.from_pretrained(tmp_path).image_processor,
        AutoProcessor.from_pretrained(tmp_path).image_processor,
        AutoImageProcessor.from_pretrained(tmp_path),
        MedRGImageProcessor.from_pretrained(tmp_path),
    ):
        assert type(loaded) is MedRGImageProcessor
        assert (loaded.image_size, loaded.image_mean, loaded.image_std, loaded.max_image_pixels) == (
            48,
            [0.4, 0.5],
            [0.2, 0.25],
            12345,
        )
    out = MedRGImageProcessor.from_pretrained(tmp_path)([xray_like(30, 60), xray_like(50, 20)])
    assert out["pixel_values"].shape == (2, 2, 48, 48)
    assert out["image_sizes"].tolist() == [[30, 60], [50, 20]]
    assert MedRGImageProcessor.model_input_names == ["pixel_values"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_mean": [0.5], "image_std": [0.5, 0.5]}, "same non-zero length"),
        ({"image_std": [0.5, 0.0, 0.5]}, "image_std must be positive"),
        ({"image_size": 0}, "image_size must be >= 1"),
        ({"max_image_pixels": 0}, "max_image_pixels must be >= 1"),
    ],
)
def test_bad_image_processor_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MedRGImageProcessor(**kwargs)


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
    pixels, geometry = processor.image_processor.prepare_image(image)
    assert pixels.shape == (3, processor.image_size, processor.image_size)
    assert torch.isfinite(pixels).all()
    assert pixels.min() >= -1.0 - 1e-6 and pixels.max() <= 1.0 + 1e-6
    assert max(geometry.scaled_height, geometry.scaled_width) == processor.image_size


def test_sixteen_bit_keeps_its_contrast(tiny):
    _, processor = tiny
    pixels, _ = processor.image_processor.prepare_image(_sixteen_bit(64, 64))
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


def test_targets_are_normalised_cxcywh_of_the_model_frame(tiny):
    _, processor = tiny  # 64 px: a 100 x 200 image is scaled by 0.32 and padded 16 px at the top
    batch = processor(
        images=np.zeros((100, 200), np.uint8),
        text="Nodule.",
        findings=[{"phrase": "nodule", "boxes": [[50, 25, 150, 75]]}],
    )
    assert torch.allclose(batch["target_boxes"][0, 0, 0], torch.tensor([0.5, 0.5, 0.5, 0.25]), atol=1e-6)


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
    assert torch.allclose(center_to_corners_format(batch["target_boxes"][0, 0, 0]), expected, atol=1e-6)
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
        MedRGImageProcessor(image_size=64, max_image_pixels=1000), processor.tokenizer, num_image_tokens=64
    )
    with pytest.raises(ValueError, match="over the limit of 1000 pixels"):
        small_limit(images=Image.fromarray(xray_like(40, 40)), text="Normal.")


def test_truncation_is_reported_per_sample_only_when_asked(tiny):
    _, processor = tiny
    reports = ["Nodule in the right upper lobe.", "Patchy consolidation in the right lower lobe. " * 200]
    with pytest.warns(UserWarning, match="Sample 1: the report has"):
        batch = processor(images=[xray_like(), xray_like()], text=reports, return_report_truncated=True)
    assert batch["report_truncated"].tolist() == [False, True]
    plain = processor(images=xray_like(), text=reports[0])
    assert "report_truncated" not in plain


def test_literal_text_special_tokens_in_a_report_stay_text(tiny):
    _, processor = tiny
    tokenizer = processor.tokenizer
    report = "Report quoting </s> and <pad> and <unk> and <s> and <|endoftext|> literally."
    ids = processor(images=xray_like(), text=report)["input_ids"][0].tolist()
    special = {tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id}
    assert not special & set(ids)  # no padding in a batch of one, no EOS/UNK in a prompt
    assert ids.count(tokenizer.bos_token_id) == 1  # only the sequence start
    assert "</s> and <pad> and <unk> and <s> and <|endoftext|>" in tokenizer.decode(ids)


def test_answer_phrases_are_text_and_each_box_one_id(tiny):
    _, processor = tiny
    batch = processor(
        images=xray_like(),
        text="Odd report.",
        findings=[{"phrase": "mass </s> near <BOX> hilum", "boxes": [[1, 1, 9, 9]]}],
    )
    labels = batch["labels"][0][batch["labels"][0] != -100].tolist()
    assert labels.count(processor.box_token_id) == 1 and labels.count(processor.tokenizer.eos_token_id) == 1
    assert labels[-1] == processor.tokenizer.eos_token_id
    assert "mass </s> near < BOX > hilum<BOX>." in processor.tokenizer.decode(labels)


# ----- post-processing of padded generation outputs (contract A -> B) -----
def _ids(processor, text):
    return processor.tokenizer.encode(text, add_special_tokens=False)


def _generation(processor):
    """Three samples: two phrases; "No finding."; one phrase cut off before EOS (hand-made, padded like
    `generate_grounding`: N = 2 box slots, K = 3 boxes per slot)."""
    box, eos, pad = processor.box_token_id, processor.tokenizer.eos_token_id, processor.tokenizer.pad_token_id
    rows = [
        _ids(processor, " nodule")
        + [box]
        + _ids(processor, "; effusion")
        + [box]
        + _ids(processor, ".")
        + [eos],
        _ids(processor, " No finding.") + [eos],
        _ids(processor, " mass") + [box] + _ids(processor, "; consol"),
    ]
    width = max(len(r) for r in rows)
    generated = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    prompt = torch.full((3, 2), 7)
    a = [0.5, 0.5, 0.5, 0.25]  # -> pixels [50, 25, 150, 75] of a 100 x 200 image at 64 px
    near_a = [0.51, 0.5, 0.5, 0.25]
    apart = [0.1, 0.5, 0.1, 0.1]
    in_padding = [0.5, 0.1, 0.2, 0.1]  # y in [0.05, 0.15] of the frame: inside the 16 px top padding
    boxes = torch.zeros(3, 2, 3, 4)
    scores = torch.zeros(3, 2, 3)
    boxes[0, 0] = torch.tensor([a, near_a, apart])
    scores[0, 0] = torch.tensor([0.9, 0.8, 0.3])
    boxes[0, 1] = torch.tensor([in_padding, a, apart])
    scores[0, 1] = torch.tensor([0.4, 0.2, 0.1])
    boxes[2, 0] = torch.tensor([a, apart, near_a])
    scores[2, 0] = torch.tensor([0.7, 0.6, 0.5])
    box_mask = torch.tensor([[True, True], [False, False], [True, False]])
    return {
        "sequences": torch.cat([prompt, generated], dim=1),
        "prompt_length": 2,
        "generated_mask": mask,
        "pred_boxes": boxes,
        "pred_scores": scores,
        "box_mask": box_mask,
        "box_token_positions": torch.tensor([[3, 6], [-1, -1], [3, -1]]),
        "finished": torch.tensor([True, True, False]),
    }


SIZES = torch.tensor([[100, 200], [100, 200], [100, 200]])


def test_post_process_threshold_keep_top_box_nms_and_padding(tiny):
    _, processor = tiny
    results = processor.post_process_grounding(_generation(processor), SIZES, threshold=0.5)
    first, empty, cut = results
    assert first["labels"] == ["nodule", "effusion"]
    # nodule: 0.9 kept, 0.8 suppressed by NMS, 0.3 under the threshold; effusion: its best box (0.4) lies in the
    # letterbox padding (no extent in the image), so its best box WITH extent (0.2) is kept below the threshold
    assert torch.allclose(first["scores"], torch.tensor([0.9, 0.2]))
    assert torch.allclose(first["boxes"], torch.tensor([[50.0, 25, 150, 75], [50.0, 25, 150, 75]]), atol=1e-4)
    assert first["finished"] is True
    assert empty["labels"] == [] and empty["boxes"].shape == (0, 4) and empty["finished"] is True
    assert cut["labels"] == ["mass", "mass"] and cut["finished"] is False
    assert torch.allclose(cut["scores"], torch.tensor([0.7, 0.6]))


def test_post_process_without_keep_top_box_and_with_threshold_zero(tiny):
    _, processor = tiny
    strict = processor.post_process_grounding(
        _generation(processor), SIZES, threshold=0.5, keep_top_box=False
    )
    assert strict[0]["labels"] == ["nodule"] and strict[2]["labels"] == ["mass", "mass"]
    loose = processor.post_process_grounding(_generation(processor), SIZES, threshold=0.0)
    assert loose[0]["labels"] == ["nodule", "nodule", "effusion", "effusion"]
    assert torch.allclose(loose[0]["scores"], torch.tensor([0.9, 0.3, 0.2, 0.1]))
    # no NMS: the overlapping 0.8 box comes back
    everything = processor.post_process_grounding(_generation(processor), SIZES, nms_iou=1.0)
    assert torch.allclose(everything[0]["scores"][:3], torch.tensor([0.9, 0.8, 0.3]))


def test_post_process_reads_a_forward_output_off_its_input_ids(tiny):
    """One box layout: `forward`'s output (boxes in slots per sample, no `sequences`) post-processes like the
    generation's, its phrases read off the answers in `input_ids` (after the prompt's last answer prefix)."""
    _, processor = tiny
    generation = _generation(processor)
    prompts = processor(images=[xray_like(seed=i) for i in range(3)], text=["Nodule.", "Normal.", "Mass."])
    answers = generation["sequences"][:, generation["prompt_length"] :]
    input_ids = torch.cat((prompts["input_ids"], answers), dim=1)
    forward = {k: generation[k] for k in ("pred_boxes", "pred_scores", "box_mask", "box_token_positions")}
    from_forward = processor.post_process_grounding(forward, SIZES, threshold=0.5, input_ids=input_ids)
    from_generation = processor.post_process_grounding(generation, SIZES, threshold=0.5)
    assert [r["labels"] for r in from_forward] == [["nodule", "effusion"], [], ["mass", "mass"]]
    for a, b in zip(from_forward, from_generation):
        assert a["labels"] == b["labels"] and torch.equal(a["boxes"], b["boxes"])
        assert torch.equal(a["scores"], b["scores"])
    # a forward answer is finished when it holds EOS
    assert [r["finished"] for r in from_forward] == [True, True, False]
    with pytest.raises(ValueError, match="pass input_ids="):
        processor.post_process_grounding(forward, SIZES)
    with pytest.raises(ValueError, match="input_ids row 0: no .* ends a prompt in it"):
        processor.post_process_grounding(forward, SIZES, input_ids=answers)


def test_post_process_errors_name_the_problem(tiny):
    _, processor = tiny
    generation = _generation(processor)
    with pytest.raises(ValueError, match="Got 2 target sizes for 3 answers"):
        processor.post_process_grounding(generation, SIZES[:2])
    generation["box_mask"] = torch.tensor([[True, False], [False, False], [True, False]])
    with pytest.raises(ValueError, match="Sample 0: 2 <BOX> tokens in the answer but 1 predicted box sets"):
        processor.post_process_grounding(generation, SIZES)
    ragged = {**_generation(processor), "pred_boxes": [torch.zeros(2, 3, 4), torch.zeros(0, 3, 4)]}
    with pytest.raises(TypeError, match="needs `pred_boxes` as a padded tensor"):
        processor.post_process_grounding(ragged, SIZES)


def test_embedded_default_model_inputs_are_those_it_was_trained_with():
    """The example inputs against golden values measured with the processor the embedded default model was trained
    with (tests/data/default_model_example_inputs.json, re-measured when that model is retrained): token ids
    exactly; pixels as 16 x 16 block means per channel to within 0.01 (well under one grey level of 255 after
    normalisation), which a change of resampling implementation keeps and a shifted letterbox, another intensity
    window, other channel statistics or a flipped image does not. A processor change that moves them changes what
    the shipped weights see."""
    from medrg.defaults import DEFAULT_MODEL_DIR

    golden = json.loads((REPO_ROOT / "tests" / "data" / "default_model_example_inputs.json").read_text())
    image = Image.open(REPO_ROOT / "docs" / "example_cxr.png")
    report = (REPO_ROOT / "docs" / "example_report.txt").read_text()
    for processor in (
        MedRGProcessor.from_pretrained(DEFAULT_MODEL_DIR),
        AutoProcessor.from_pretrained(DEFAULT_MODEL_DIR),
    ):
        inputs = processor(images=image, text=report)
        assert set(inputs) == {"input_ids", "attention_mask", "pixel_values", "image_sizes"}
        assert inputs["input_ids"].tolist() == [golden["input_ids"]]
        assert inputs["attention_mask"].tolist() == [[1] * len(golden["input_ids"])]
        assert inputs["image_sizes"].tolist() == [[256, 256]]
        pixels = inputs["pixel_values"].double()
        assert list(pixels.shape) == golden["pixel_values_shape"]
        block_means = torch.nn.functional.avg_pool2d(pixels, 16)[0]
        expected = torch.tensor(golden["pixel_values_16x16_means"], dtype=torch.double)
        assert torch.allclose(block_means, expected, rtol=0, atol=0.01), (block_means - expected).abs().max()


# ------------------------------------------------------------------------- image and report inputs
# Each input form a user may hand over gives the same model input as its plain equivalent, or one clear
# error naming the sample.
REPORT = "Nodule in the right upper lobe."


@pytest.fixture(scope="module")
def processor(tiny):
    return tiny[1]


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


def test_uint8_and_int32_agree(processor):
    image = xray_like(40, 50)
    assert torch.equal(pixels(processor, image), pixels(processor, image.astype(np.int32)))


def test_sixteen_bit_copy_agrees(processor):
    image = xray_like(40, 50, boxes=[(5, 5, 20, 20)])
    eight = pixels(processor, Image.fromarray(image))
    assert torch.equal(eight, pixels(processor, image.astype(np.uint16) * 257))
    assert torch.equal(eight, pixels(processor, Image.fromarray(image.astype(np.uint16) * 257)))


def test_gray_alpha_png(processor, tmp_path):
    image = xray_like(40, 50)
    path = tmp_path / "la.png"
    Image.fromarray(np.stack([image, np.full_like(image, 128)], axis=-1), mode="LA").save(path)
    loaded = load_image(path)
    assert loaded.mode == "LA"
    assert torch.equal(pixels(processor, loaded), pixels(processor, image))
    assert torch.equal(pixels(processor, np.stack([image, image], axis=-1)), pixels(processor, image))


def test_pathlib_path(pipe, tmp_path):
    path = tmp_path / "cxr.png"
    Image.fromarray(xray_like(60, 50)).save(path)
    assert pipe(path, report=REPORT, max_new_tokens=4) == pipe(str(path), report=REPORT, max_new_tokens=4)


def test_dicom_without_suffix(processor, pipe, tmp_path):
    pytest.importorskip("pydicom")
    named = write_dicom(tmp_path / "study.dcm", ramp())
    bare = write_dicom(tmp_path / "IM0001", ramp())
    assert np.array_equal(load_image(bare), load_image(named))
    assert pipe(bare, report=REPORT, max_new_tokens=4) == pipe(named, report=REPORT, max_new_tokens=4)
    assert torch.equal(pixels(processor, load_image(bare)), pixels(processor, load_image(named)))


def test_bfloat16_tensor(processor):
    values = torch.randint(0, 256, (1, 40, 50)).float() / 256  # exactly representable in bfloat16
    assert torch.equal(pixels(processor, values.bfloat16()), pixels(processor, values))
    assert torch.equal(pixels(processor, values.half()), pixels(processor, values))


def test_multiframe_dicom_first_frame(tmp_path, caplog):
    pytest.importorskip("pydicom")
    stack = np.stack([ramp(), 4000 - ramp(), np.zeros_like(ramp())])
    path = write_dicom(tmp_path / "multi.dcm", stack)
    single = write_dicom(tmp_path / "single.dcm", stack[0])
    with caplog.at_level(logging.INFO, logger="medrg.processing.image_processing_medrg"):
        first = load_image(path)
    assert np.array_equal(first, load_image(single))
    assert "3 frames; the first frame is used" in caplog.text
    assert "Doe" not in caplog.text and "SECRET" not in caplog.text


def test_literal_text_special_tokens(processor):
    tokenizer = processor.tokenizer
    special = {tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id}
    for literal in ("</s>", "<pad>", "<unk>", "<|endoftext|>"):
        ids = processor(images=xray_like(), text=f"Effusion {literal} noted.")["input_ids"][0].tolist()
        assert not special & set(ids), literal
        assert f"Effusion {literal} noted." in tokenizer.decode(ids)


def test_literal_image_and_box_neutralised(processor):
    ids = processor(images=xray_like(), text="Mass <BOX> and <image> here.")["input_ids"][0]
    assert int((ids == processor.box_token_id).sum()) == 0
    assert int((ids == processor.image_token_id).sum()) == processor.num_image_tokens


def test_float32_at_the_range_limit(processor):
    image = np.linspace(-3e38, 3e38, 40 * 50, dtype=np.float32).reshape(40, 50)
    out = pixels(processor, image)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, pixels(processor, np.linspace(0, 1, 40 * 50).reshape(40, 50)), atol=1e-5)


def test_overflowing_float64_names_the_sample(processor):
    huge = np.full((40, 50), 1.7e308)
    huge[:, :25] = -1.7e308  # finite values whose range (3.4e308) overflows even float64
    with pytest.raises(ValueError, match=r"Sample 1: Image values span .* a range too large to window"):
        processor(images=[xray_like(), huge], text=[REPORT, REPORT])


def test_one_by_one_image(processor):
    out = processor(images=np.full((1, 1), 200, np.uint8), text=REPORT)
    size = processor.image_size
    assert out["image_sizes"].tolist() == [[1, 1]] and out["pixel_values"].shape == (1, 3, size, size)
    assert torch.allclose(out["pixel_values"], torch.full_like(out["pixel_values"], 200 / 255 * 2 - 1))


def test_long_thin_strip(processor):
    out = processor(images=np.full((10000, 10), 255, np.uint8), text=REPORT)
    assert out["image_sizes"].tolist() == [[10000, 10]]
    column = out["pixel_values"][0, 0]
    assert (column.max(dim=0).values > 0.9).sum() == 1  # one model-frame column holds the strip, centred
    assert torch.isfinite(column).all()


def test_cmyk_jpeg(processor, tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(xray_like(40, 50)).convert("CMYK").save(path, format="JPEG", quality=95)
    loaded = load_image(path)
    assert loaded.mode == "CMYK"
    out = pixels(processor, loaded)
    assert torch.equal(out, pixels(processor, loaded.convert("RGB")))


def test_constant_sixteen_bit_png(processor, tmp_path):
    path = tmp_path / "flat16.png"
    Image.fromarray(np.full((30, 40), 1234, np.uint16)).save(path)
    out = pixels(processor, load_image(path))
    assert torch.isfinite(out).all() and torch.equal(out, pixels(processor, np.zeros((30, 40), np.uint8)))


def test_bad_image_in_a_list_names_its_index(processor):
    images = [xray_like(), xray_like(), np.zeros((5, 5, 7), np.uint8), xray_like()]
    with pytest.raises(ValueError, match="Sample 2: Image array must be"):
        processor(images=images, text=[REPORT] * 4)


def test_whitespace_only_report(processor):
    with pytest.raises(ValueError, match="Sample 1: the report is empty"):
        processor(images=[xray_like(), xray_like()], text=[REPORT, " \n\t\u3000 "])


def test_emoji_only_report(processor):
    out = processor(images=xray_like(), text="🫁🫀😷")
    assert "🫁🫀😷" in processor.tokenizer.decode(out["input_ids"][0])


def test_float64_unit_and_byte_ranges_agree(processor):
    image = xray_like(40, 50)
    eight = pixels(processor, image)
    assert torch.equal(eight, pixels(processor, image.astype(np.float64)))
    assert torch.allclose(eight, pixels(processor, image / 255.0), atol=1e-6)


def test_unreachable_url_is_a_clear_error(pipe):
    # URLs are fetched through transformers' image loading; an unreachable host (no network here, and an
    # unresolvable name anywhere) is one clear error naming the URL
    with pytest.raises(ValueError, match=r"Cannot load the image at URL https://medrg\.invalid/cxr\.png"):
        pipe("https://medrg.invalid/cxr.png", report=REPORT)


def test_corrupt_file_without_suffix(pipe, tmp_path):
    path = tmp_path / "not_an_image"
    path.write_bytes(b"\x00" * 300)
    with pytest.raises(ValueError, match="Cannot read image file"):
        pipe(path, report=REPORT)


def test_chw_tensor_equals_hwc_array(processor):
    rgb = np.stack([xray_like(40, 50, seed=s) for s in range(3)], axis=-1)
    expected = pixels(processor, rgb)
    assert torch.equal(pixels(processor, torch.from_numpy(rgb).permute(2, 0, 1)), expected)
    assert torch.equal(pixels(processor, Image.fromarray(rgb).convert("RGBA")), expected)


def test_tensor_requiring_grad(processor):
    image = torch.rand(40, 50, requires_grad=True)
    assert torch.equal(pixels(processor, image), pixels(processor, image.detach()))


def test_complex_dtype_refused(processor):
    with pytest.raises(TypeError, match="Sample 0: Image array has unsupported dtype complex"):
        processor(images=np.zeros((8, 8), np.complex64), text=REPORT)


def test_signed_ct_like_values_are_windowed(processor):
    image = np.linspace(-1024, 3071, 40 * 50).reshape(40, 50).astype(np.int16)
    out = pixels(processor, image)
    assert torch.isfinite(out).all() and out.max() - out.min() > 1.8


def test_monochrome1_dicom_is_inverted(tmp_path):
    pytest.importorskip("pydicom")
    normal = load_image(write_dicom(tmp_path / "m2.dcm", ramp(), "MONOCHROME2"))
    inverted = load_image(write_dicom(tmp_path / "m1.dcm", ramp(), "MONOCHROME1"))
    assert np.array_equal(inverted, 255 - normal)


def test_dicom_without_pydicom_is_a_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "x.dcm"
    path.write_bytes(b"\x00" * 128 + b"DICM")
    monkeypatch.setitem(sys.modules, "pydicom", None)  # as if pydicom were not installed
    with pytest.raises(ImportError, match="Reading DICOM needs pydicom"):
        load_image(path)


def test_bomb_in_a_list_names_its_index():
    from medrg import MedRGImageProcessor

    guard = MedRGImageProcessor(image_size=32, max_image_pixels=1000)
    with pytest.raises(ValueError, match="Sample 1: Image of 40x40 = 1600 pixels is over the limit"):
        guard([xray_like(20, 20), Image.fromarray(xray_like(40, 40))])


def test_png_bytes_in_memory(processor):
    buffer = io.BytesIO()
    Image.fromarray(xray_like(40, 50)).save(buffer, format="PNG")
    with pytest.raises(TypeError, match="Unsupported image type bytes"):
        processor(images=buffer.getvalue(), text=REPORT)
    assert torch.equal(pixels(processor, Image.open(buffer)), pixels(processor, xray_like(40, 50)))
