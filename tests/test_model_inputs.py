"""Model inputs: hostile or faulty inputs and checkpoints get a clear error or the correct result.

Table-driven: every case is one function in CASES (non-finite costs, predictions and targets; missing, renamed
and mis-shaped weights; answers that could not finish; mis-shaped targets). Cases that could spin forever (the
Hungarian matcher on NaN costs) run under ``time_limit``, so a hang fails the test instead of blocking CI.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import forced_generation, time_limit, xray_like
from medrg.modeling_medrg.medrg_loss import box_losses, match_queries_to_targets
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import LogitsProcessor

import medrg

FINDINGS = [
    [{"phrase": "nodule in the right upper lobe", "boxes": [[10, 12, 24, 26]]}],
    [
        {"phrase": "left pleural effusion", "boxes": [[50, 60, 78, 90]]},
        {"phrase": "bilateral effusions", "boxes": [[2, 75, 20, 94], [60, 75, 78, 94]]},
    ],
]
REPORTS = ["Nodule in the right upper lobe.", "Left pleural effusion. Bilateral effusions."]


def _batch(processor, findings=FINDINGS, reports=REPORTS):
    images = [xray_like(seed=i) for i in range(len(reports))]
    return processor(images=images, text=reports, findings=findings)


def _saved(tiny, tmp_path):
    model, _ = tiny
    model.save_pretrained(tmp_path)
    return tmp_path / "model.safetensors"


def _rewrite(path, change):
    weights = load_file(path)
    change(weights)
    save_file(weights, path, metadata={"format": "pt"})


# ----- NaN never hangs the matcher; non-finite box losses are a clear error -----
def nan_cost_matcher_returns(tiny, tmp_path):
    cost = torch.full((4, 3, 3), float("nan"))
    with time_limit(20):
        match = match_queries_to_targets(cost, torch.ones(4, 3, dtype=torch.bool))
    assert match.shape == (4, 3)


def nan_predictions_raise_instead_of_hanging(tiny, tmp_path):
    boxes = torch.full((3, 2, 3, 4), float("nan"))
    targets = torch.full((1, 2, 1, 4), 0.5)
    with time_limit(20), pytest.raises(ValueError, match="box predictions .*are not finite"):
        box_losses(
            boxes, torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), targets, torch.ones(1, 2, 1), 5, 2
        )


def diverged_model_forward_raises(tiny, tmp_path):
    model, processor = tiny
    diverged = copy.deepcopy(model)
    with torch.no_grad():
        diverged.box_decoder.initial_box_head.layers[-1].weight.fill_(float("nan"))
    with time_limit(60), pytest.raises(ValueError, match="not finite .*training has diverged"):
        diverged(**_batch(processor))


def nan_target_boxes_raise(tiny, tmp_path):
    model, processor = tiny
    batch = _batch(processor)
    batch["target_boxes"][1, 1, 0, 2] = float("nan")
    with pytest.raises(ValueError, match="target boxes are not finite"):
        model(**batch)


# ----- missing / renamed / mis-shaped weights fail loudly -----
def missing_box_decoder_tensor_fails_to_load(tiny, tmp_path):
    path = _saved(tiny, tmp_path)
    _rewrite(path, lambda w: w.pop("box_decoder.score_head.weight"))
    with pytest.raises(ValueError, match=r"1 missing keys \(box_decoder.score_head.weight\)") as error:
        medrg.MedRGForReportGrounding.from_pretrained(tmp_path)
    assert str(tmp_path) in str(error.value)


def renamed_tensor_fails_to_load(tiny, tmp_path):
    path = _saved(tiny, tmp_path)
    _rewrite(
        path,
        lambda w: w.__setitem__("box_decoder.score_head.weight_old", w.pop("box_decoder.score_head.weight")),
    )
    with pytest.raises(ValueError, match=r"missing keys .*score_head.weight\).*unexpected keys .*weight_old"):
        medrg.MedRGForReportGrounding.from_pretrained(tmp_path)


def mis_shaped_tensor_fails_even_when_ignoring_sizes(tiny, tmp_path):
    path = _saved(tiny, tmp_path)
    _rewrite(path, lambda w: w.__setitem__("box_decoder.score_head.bias", torch.zeros(2)))
    with pytest.raises(ValueError, match=r"1 mismatched keys \(box_decoder.score_head.bias\)"):
        medrg.MedRGForReportGrounding.from_pretrained(tmp_path, ignore_mismatched_sizes=True)


def complete_checkpoint_loads_with_loading_info(tiny, tmp_path):
    model, processor = tiny
    _saved(tiny, tmp_path)
    loaded, info = medrg.MedRGForReportGrounding.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    batch = _batch(processor)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(**batch).pred_boxes, model(**batch).pred_boxes)


# ----- "could not finish" is not "no finding" -----
class BanTokens(LogitsProcessor):
    def __init__(self, banned):
        self.banned = banned

    def __call__(self, input_ids, scores):
        scores[:, self.banned] = float("-inf")
        return scores


def cut_off_answer_is_not_finished_and_full_answer_is(tiny, tmp_path):
    model = medrg.MedRGForReportGrounding.from_pretrained(medrg.DEFAULT_MODEL_DIR).eval()
    processor = medrg.MedRGProcessor.from_pretrained(medrg.DEFAULT_MODEL_DIR)
    image = Image.open(medrg.DEFAULT_MODEL_DIR / "example_cxr.png")
    inputs = processor(images=[image], text=[(medrg.DEFAULT_MODEL_DIR / "example_report.txt").read_text()])
    args = (inputs["input_ids"], inputs["pixel_values"], inputs["attention_mask"])
    full = model.generate_grounding(*args, max_new_tokens=64)
    cut = model.generate_grounding(*args, max_new_tokens=3)
    assert full.finished.tolist() == [True] and full.box_mask.sum() >= 1
    assert cut.finished.tolist() == [False]
    records = processor.post_process_grounding(cut, inputs["image_sizes"])
    assert records[0]["finished"] is False


def never_ending_answer_is_not_finished(tiny, tmp_path):
    model, processor = tiny
    inputs = processor(images=[xray_like()], text=REPORTS[:1])
    out = forced_generation(model, inputs, BanTokens([processor.tokenizer.eos_token_id]), max_new_tokens=4)
    assert out.finished.tolist() == [False] and out.generated_mask.sum() == 4


# ----- further cases a demanding user tries -----
def inf_pixel_values_are_a_clear_error(tiny, tmp_path):
    model, processor = tiny
    batch = _batch(processor)
    batch["pixel_values"][1, 0, 3, 3] = float("inf")
    with pytest.raises(ValueError, match=r"pixel_values hold NaN or inf values \(samples \[1\]\)"):
        model(**batch)


def nan_pixel_values_in_generation_are_a_clear_error(tiny, tmp_path):
    model, processor = tiny
    inputs = processor(images=[xray_like()], text=REPORTS[:1])
    pixels = torch.full_like(inputs["pixel_values"], float("nan"))
    with pytest.raises(ValueError, match="pixel_values hold NaN or inf"):
        model.generate_grounding(inputs["input_ids"], pixels, inputs["attention_mask"], max_new_tokens=2)


def target_boxes_for_another_batch_size(tiny, tmp_path):
    model, processor = tiny
    batch = _batch(processor)
    batch["target_boxes"], batch["target_boxes_mask"] = (
        batch["target_boxes"][:1],
        batch["target_boxes_mask"][:1],
    )
    with pytest.raises(ValueError, match=r"target_boxes must have shape \(batch=2, findings, boxes, 4\)"):
        model(**batch)


def target_mask_of_another_shape(tiny, tmp_path):
    model, processor = tiny
    batch = _batch(processor)
    batch["target_boxes_mask"] = batch["target_boxes_mask"][:, :, :1]
    with pytest.raises(ValueError, match="target_boxes_mask must have shape"):
        model(**batch)


def findings_without_any_box_token(tiny, tmp_path):
    model, processor = tiny
    batch = _batch(processor)
    is_box = batch["input_ids"] == processor.box_token_id
    batch["input_ids"] = batch["input_ids"].masked_fill(is_box, processor.tokenizer.pad_token_id)
    with pytest.raises(ValueError, match="Sample 0 has 0 <BOX> tokens but 1 target findings"):
        model(**batch)


def batch_without_findings_gives_zero_box_loss_with_gradients(tiny, tmp_path):
    model, processor = tiny
    model.zero_grad()
    out = model(**_batch(processor, findings=[[], []], reports=["Normal chest.", "No acute findings."]))
    for name in ("box_l1_loss", "box_giou_loss", "box_confidence_loss"):
        assert out[name] == 0, name
    out.loss.backward()
    assert all(p.grad is not None for p in model.box_decoder.parameters())  # DDP needs every parameter
    model.zero_grad()


def one_query_per_box_trains(tiny, tmp_path):
    model, processor = medrg.build_tiny_medrg(seed=0, num_box_queries=1)
    out = model(**_batch(processor))  # the second finding has 2 boxes: only the closer one is supervised
    assert out.pred_boxes.shape == (2, 2, 1, 4)  # 2 samples, at most 2 findings, K = 1
    assert all(
        torch.isfinite(out[n]) for n in ("loss", "box_l1_loss", "box_giou_loss", "box_confidence_loss")
    )
    out.loss.backward()


def bfloat16_forward_gives_finite_float32_box_losses(tiny, tmp_path):
    model, processor = tiny
    half = copy.deepcopy(model).to(torch.bfloat16)
    with torch.no_grad():
        out = half(**_batch(processor))
    assert out.pred_boxes.dtype == torch.bfloat16
    assert out.box_l1_loss.dtype == torch.float32 and torch.isfinite(out.loss)


def more_boxes_than_queries_supervise_the_best_k(tiny, tmp_path):
    cost = torch.tensor([[[5.0, 0.0, 9.0, 1.0, 7.0], [0.5, 8.0, 9.0, 9.0, 0.2], [9.0, 9.0, 0.1, 9.0, 9.0]]])
    match = match_queries_to_targets(cost, torch.ones(1, 5, dtype=torch.bool))
    assert match.tolist() == [[1, 4, 2]]  # total 0.3, the optimum


def padded_targets_are_never_matched(tiny, tmp_path):
    cost = torch.tensor(
        [[[9.0, -5.0, 1.0], [8.0, -5.0, 2.0], [9.5, -5.0, 3.0]]]
    )  # padded column 1 is cheapest
    match = match_queries_to_targets(cost, torch.tensor([[True, False, True]]))
    assert match.tolist() == [[2, 0, -1]]  # both real targets matched (1 + 8), the padded one never


def point_sized_target_box_gives_finite_loss(tiny, tmp_path):
    boxes = torch.rand(2, 1, 3, 4).clamp(0.1, 0.9)
    targets = torch.tensor([[[[0.5, 0.5, 0.0, 0.0]]]])
    losses = box_losses(
        boxes, torch.zeros(1, 3), torch.zeros(1, dtype=torch.long), targets, torch.ones(1, 1, 1), 5, 2
    )
    assert all(torch.isfinite(loss) for loss in losses)


def unmanageable_assignment_table_is_refused(tiny, tmp_path):
    with pytest.raises(ValueError, match="candidate assignments .*use fewer queries"):
        match_queries_to_targets(torch.zeros(1, 9, 30), torch.ones(1, 30, dtype=torch.bool))


CASES = [
    nan_cost_matcher_returns,
    nan_predictions_raise_instead_of_hanging,
    diverged_model_forward_raises,
    nan_target_boxes_raise,
    missing_box_decoder_tensor_fails_to_load,
    renamed_tensor_fails_to_load,
    mis_shaped_tensor_fails_even_when_ignoring_sizes,
    complete_checkpoint_loads_with_loading_info,
    cut_off_answer_is_not_finished_and_full_answer_is,
    never_ending_answer_is_not_finished,
    inf_pixel_values_are_a_clear_error,
    nan_pixel_values_in_generation_are_a_clear_error,
    target_boxes_for_another_batch_size,
    target_mask_of_another_shape,
    findings_without_any_box_token,
    batch_without_findings_gives_zero_box_loss_with_gradients,
    one_query_per_box_trains,
    bfloat16_forward_gives_finite_float32_box_losses,
    more_boxes_than_queries_supervise_the_best_k,
    padded_targets_are_never_matched,
    point_sized_target_box_gives_finite_loss,
    unmanageable_assignment_table_is_refused,
]


@pytest.mark.parametrize("case", CASES, ids=[case.__name__ for case in CASES])
def test_model_input_case(case, tiny, tmp_path):
    case(tiny, tmp_path)
