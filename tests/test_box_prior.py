"""The box prior: a phrase's mean training box (finding, side, zone) as the box decoder's first box, the in-order
guide that lines the n-th `<BOX>` up with the n-th phrase, and the side rule of post-processing."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import xray_like
from medrg.processing.box_prior_medrg import BoxPrior
from medrg.processing.reading_medrg import ReportReader

import medrg

READER = ReportReader()
# training phrases with boxes normalised to the image: right upper lobe nodules high in the image's left half,
# left effusions low in its right half
TRAIN = [
    ("nodule in the right upper lobe", [[0.20, 0.20, 0.30, 0.30]]),
    ("right upper lobe nodule", [[0.22, 0.18, 0.32, 0.28]]),
    ("small nodule in the right upper lobe", [[0.18, 0.22, 0.28, 0.32]]),
    ("left pleural effusion", [[0.60, 0.70, 0.90, 0.95]]),
    ("small left pleural effusion", [[0.62, 0.72, 0.88, 0.93]]),
    ("left effusion", [[0.58, 0.68, 0.92, 0.97]]),
    ("no pneumothorax", [[0.1, 0.1, 0.2, 0.2]]),  # nothing stated: skipped
]


def test_prior_reads_finding_side_and_zone_and_backs_off():
    prior = BoxPrior.fit(TRAIN, READER)
    assert prior.cells["nodule|right|upper"][4] == 3
    box = prior.box("right upper lobe nodule", READER)
    assert box == pytest.approx([0.25, 0.25, 0.1, 0.1], abs=1e-4)
    # a zone the table lacks backs off to (category, side); an unknown side to the category
    assert prior.box("nodule in the right lower lobe", READER) == pytest.approx(
        [0.25, 0.25, 0.1, 0.1], abs=1e-4
    )
    assert prior.box("pleural effusion", READER)[0] == pytest.approx(0.75, abs=1e-4)
    # no finding read, or a category without training boxes: no prior box
    assert prior.box("normal heart size", READER) is None
    assert prior.box("cardiomegaly", READER) is None
    assert prior.side("left pleural effusion", READER) == "left" and prior.side("cardiomegaly", READER) == ""
    assert "pneumothorax|*|*" not in prior.cells
    again = BoxPrior.from_dict(prior.to_dict())
    assert again.cells == prior.cells and again.min_count == prior.min_count


@pytest.mark.parametrize(
    "cells, message",
    [
        ({"nodule": [0.5, 0.5, 0.1, 0.1, 3]}, "category|side|zone"),
        ({"nodule|right|*": [0.5, 0.5, 1.5, 0.1, 3]}, "must lie in"),
        ({"nodule|right|*": [0.5, 0.5, 0.1, 3]}, "category|side|zone"),
    ],
)
def test_prior_refuses_a_malformed_table(cells, message):
    with pytest.raises(ValueError, match=message):
        BoxPrior(cells)


@pytest.fixture(scope="module")
def with_prior():
    model, processor = medrg.build_tiny_medrg(
        seed=0,
        box_feature_levels=[1, 2],
        box_feature_channels=[16, 32],
        box_initial_source="text",
        box_sampling_window=2.0,
    )
    processor = copy.deepcopy(processor)
    processor.prior = BoxPrior.fit(TRAIN, processor.reader)
    processor.box_prior = processor.prior.to_dict()
    return model.eval(), processor


def test_training_inputs_carry_the_prior_box_and_the_decoder_starts_from_it(with_prior):
    model, processor = with_prior
    images = [xray_like(height=100, width=100, seed=1), xray_like(height=100, width=100, seed=2)]
    findings = [
        [{"phrase": "left pleural effusion", "boxes": [[60, 70, 90, 95]]}],
        [
            {"phrase": "nodule in the right upper lobe", "boxes": [[20, 20, 30, 30]]},
            {"phrase": "cardiomegaly", "boxes": [[30, 40, 70, 80]]},
        ],
    ]
    batch = processor(
        images=images,
        text=["Left pleural effusion.", "Right upper lobe nodule. Cardiomegaly."],
        findings=findings,
    )
    assert batch["reference_boxes"].shape == (2, 2, 2, 4)
    assert batch["reference_boxes_mask"].tolist() == [[True, False], [True, False]]
    torch.testing.assert_close(
        batch["reference_boxes"][1, 0, 0], torch.tensor([0.25, 0.25, 0.1, 0.1]), atol=1e-4, rtol=0
    )
    captured = []
    handle = model.box_decoder.layers[0].register_forward_pre_hook(lambda m, args: captured.append(args[1]))
    try:
        with torch.no_grad():
            out = model(**batch)
            without = model(**{k: v for k, v in batch.items() if not k.startswith("reference")})
    finally:
        handle.remove()
    first_layer_boxes = captured[0]  # (M, K, 4): the boxes the first layer refines
    expected = batch["reference_boxes"][[0, 1], 0, 0]  # first finding of each sample has a prior box
    k = model.config.num_box_queries
    torch.testing.assert_close(
        first_layer_boxes[[0, 1]], expected[:, None].expand(-1, k, -1), atol=1e-4, rtol=0
    )
    # cardiomegaly (no prior box) starts from the decoder's own first guess
    torch.testing.assert_close(first_layer_boxes[2], out.intermediate_boxes[0][1, 1])  # sample 1, slot 1
    # the decoder's own guess is returned (and trained) either way; the refined boxes differ with the prior
    torch.testing.assert_close(out.intermediate_boxes[0], without.intermediate_boxes[0])
    first = ([0, 1], [0, 0])  # the first finding of each sample
    assert (out.pred_boxes[first] - without.pred_boxes[first]).abs().max() > 1e-3
    assert torch.isfinite(model(**batch).loss)


def test_reference_boxes_are_checked(with_prior):
    model, processor = with_prior
    batch = processor(
        images=[xray_like(seed=1)], text=["Left pleural effusion."],
        findings=[[{"phrase": "left pleural effusion", "boxes": [[50, 60, 78, 90]]}]],
    )  # fmt: skip
    with pytest.raises(ValueError, match="reference_boxes must be"):
        model(**{**batch, "reference_boxes": batch["reference_boxes"][0, 0]})
    bad = batch["reference_boxes"].clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model(**{**batch, "reference_boxes": bad})


def test_in_order_guide_names_the_phrases_in_the_given_order(with_prior):
    _, processor = with_prior
    phrases = [["left pleural effusion", "nodule in the right upper lobe"]]
    ordered = processor.report_guide(phrases, prompt_length=0)
    free = processor.report_guide(phrases, prompt_length=0, in_order=False)
    first_tokens = {ids[0] for ids in free.options[0]["first"]}
    assert len(free.allowed_tokens(0, [])) == len(first_tokens) == 2
    assert ordered.allowed_tokens(0, []) == [ordered.options[0]["first"][0][0]]
    # after the first phrase and its <BOX>, only the second phrase may follow
    box = processor.box_token_id
    after_first = [*ordered.options[0]["first"][0], box]
    run = ordered.forced_tokens(0, after_first)
    assert run == [
        *ordered.options[0]["next"][1],
        box,
        *ordered.options[0]["end"],
        processor.tokenizer.eos_token_id,
    ]


def test_guided_pipeline_grounds_each_phrase_from_its_prior_box(with_prior):
    """End to end: the pipeline's guided decoding passes each phrase's prior box to the decoder, in order."""
    model, processor = with_prior
    image = xray_like(height=100, width=100, seed=3)
    report = "Small left pleural effusion. Nodule in the right upper lobe."
    captured = []
    handle = model.box_decoder.layers[0].register_forward_pre_hook(lambda m, args: captured.append(args[1]))
    try:
        grounder = medrg.ReportGroundingPipeline(model=model, processor=processor)
        result = grounder(image, report)
    finally:
        handle.remove()
    assert [r["label"] for r in result] == ["small left pleural effusion", "nodule in the right upper lobe"]
    starts = captured[-1][:, 0]  # (2, 4): first query's start box per <BOX>
    assert starts[0, 0] > 0.5 and starts[0, 1] > 0.5  # effusion: image's right half, low
    assert starts[1, 0] < 0.5 and starts[1, 1] < 0.5  # right upper lobe nodule: image's left half, high


def test_a_box_on_the_wrong_side_is_mirrored_onto_the_named_side(tiny):
    _, processor = tiny
    boxes = torch.tensor([[10.0, 5.0, 30.0, 20.0], [70.0, 5.0, 90.0, 20.0]])
    # the patient's left is the image's right half: the first box is mirrored, the second stays
    left = processor.on_named_side(boxes, "left pleural effusion", width=100)
    torch.testing.assert_close(left, torch.tensor([[70.0, 5.0, 90.0, 20.0], [70.0, 5.0, 90.0, 20.0]]))
    right = processor.on_named_side(boxes, "right upper lobe nodule", width=100)
    torch.testing.assert_close(right, torch.tensor([[10.0, 5.0, 30.0, 20.0], [10.0, 5.0, 30.0, 20.0]]))
    for phrase in ("cardiomegaly", "bilateral pleural effusions"):
        torch.testing.assert_close(processor.on_named_side(boxes, phrase, width=100), boxes)


def test_a_bilateral_finding_starts_and_ends_with_a_box_on_each_side(with_prior):
    """ "bilateral pleural effusions": the queries start from each side's prior box in turn, and post-processing
    keeps the best box of each half of the image."""
    model, processor = with_prior
    prior = BoxPrior.fit(TRAIN + [("right pleural effusion", [[0.1, 0.7, 0.4, 0.95]])] * 3, processor.reader)
    processor = copy.deepcopy(processor)
    processor.prior = prior
    starts = prior.starts("bilateral pleural effusions", processor.reader)
    assert starts[0][0] < 0.5 < starts[1][0]  # patient's right (image left) first, then left
    assert (
        prior.starts("left pleural effusion", processor.reader)
        == [prior.box("left pleural effusion", processor.reader)] * 2
    )
    captured = []
    handle = model.box_decoder.layers[0].register_forward_pre_hook(lambda m, args: captured.append(args[1]))
    try:
        grounder = medrg.ReportGroundingPipeline(model=model, processor=processor)
        result = grounder(xray_like(height=100, width=100, seed=4), "Bilateral pleural effusions.", top_k=1)
    finally:
        handle.remove()
    first = captured[-1][0]  # (K, 4) start boxes of the one <BOX>
    assert (first[0::2, 0] < 0.5).all() and (first[1::2, 0] > 0.5).all()
    assert len(result) == 2 and {r["label"] for r in result} == {"bilateral pleural effusions"}
    centres = sorted((r["box"]["xmin"] + r["box"]["xmax"]) / 2 for r in result)
    assert centres[0] < 50 <= centres[1]


def test_a_batch_without_any_box_runs_the_decoder_and_gives_every_decoder_weight_a_gradient(with_prior):
    """A batch of normal reports (no `<BOX>`): the box decoder still runs (on no rows), so a sharded decoder's
    all-gather is entered on every process, and the zero box loss reaches every decoder weight (DDP needs that)."""
    model, processor = with_prior
    batch = processor(images=[xray_like(seed=5)], text=["Normal chest."], findings=[[]])
    calls = []
    handle = model.box_decoder.register_forward_hook(lambda m, args, out: calls.append(out[0].shape))
    try:
        out = model(**batch)
    finally:
        handle.remove()
    assert calls and calls[0][1] == 0 and out.pred_boxes.shape[:2] == (1, 0)
    assert float(out.box_l1_loss.detach()) == 0.0 and torch.isfinite(out.loss.detach())
    model.zero_grad(set_to_none=True)
    out.loss.backward()
    assert all(p.grad is not None for p in model.box_decoder.parameters())
    model.zero_grad(set_to_none=True)
