"""`generate_grounding` grounds the generated `<BOX>` from the decoding's own hidden states (no second
pass over prompt + answer); its boxes equal those of a teacher-forced `forward` over prompt + answer."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO_ROOT, CountForwards, ForceAnswers, forced_generation, xray_like
from PIL import Image

TOLERANCE = 1e-4
REPORTS = [
    "Nodule in the right upper lobe.",
    "Left pleural effusion. Bilateral effusions. Mild cardiomegaly with a small right apical pneumothorax.",
    "Normal chest.",
]
PHRASES = [
    ["right upper lobe nodule", "left pleural effusion", "cardiomegaly"],
    ["bilateral effusions"],
    ["pneumothorax", "nodule", "atelectasis", "effusion"],
]


def _images(processor, model_name):
    if model_name == "default":
        example = Image.open(REPO_ROOT / "docs" / "example_cxr.png").convert("L")
        return [example, Image.fromarray(xray_like(120, 100, seed=1)), example.rotate(10)]
    return [xray_like(seed=i) for i in range(3)]


def _ground(model, processor, model_name, answers, max_new_tokens, **generate_kwargs):
    """One-pass output and the teacher-forced reference for a left-padded batch of 3 forced answers."""
    images = _images(processor, model_name)
    inputs = processor(images=images, text=REPORTS, return_tensors="pt")
    mask = inputs["attention_mask"]
    assert len(set(mask.sum(1).tolist())) == 3 and bool((mask[:, 0] == 0).any()), (
        "reports must be left-padded"
    )
    prompt = inputs["input_ids"].shape[1]
    eos = processor.tokenizer.eos_token_id
    force = ForceAnswers(answers, eos, prompt)
    counter = CountForwards(model)
    try:
        out = forced_generation(model, inputs, force, max_new_tokens=max_new_tokens, **generate_kwargs)
    finally:
        counter.remove()
    for row, answer in enumerate(answers):
        generated = out.sequences[row, prompt:][out.generated_mask[row].bool()].tolist()
        assert generated == (answer + [eos])[: len(generated)]
    with torch.no_grad():  # the reference: one teacher-forced pass over prompt + answer, as in training
        reference = model(
            input_ids=out.sequences,
            pixel_values=inputs["pixel_values"],
            attention_mask=torch.cat((mask, out.generated_mask), dim=1),
            use_cache=False,
            logits_to_keep=1,
        )
    # the prompts hold no <BOX>
    assert bool((reference.box_token_positions[reference.box_mask] >= prompt).all())
    reference_slots = (
        reference.pred_boxes,
        reference.pred_scores,
        reference.box_mask,
        reference.box_token_positions,
    )
    return out, reference_slots, counter, prompt


def _answers(processor):
    return [processor._answer_ids(phrases, index)[:-1] for index, phrases in enumerate(PHRASES)]


def _assert_same(out, reference):
    boxes, scores, box_mask, positions = reference
    assert torch.equal(out.box_mask, box_mask)
    assert torch.equal(out.box_token_positions, positions)
    assert out.pred_boxes.shape == boxes.shape and out.pred_scores.shape == scores.shape
    assert torch.allclose(out.pred_boxes, boxes, rtol=0, atol=TOLERANCE)
    assert torch.allclose(out.pred_scores, scores, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("model_name", ["tiny", "default"])
def test_one_pass_boxes_equal_teacher_forced_boxes(model_name, tiny_sharp, default_model):
    model, processor = tiny_sharp if model_name == "tiny" else default_model
    answers = _answers(processor)
    box = processor.box_token_id
    out, reference, counter, prompt = _ground(
        model, processor, model_name, answers, max(map(len, answers)) + 2
    )
    # several <BOX> per answer, every sample finished with EOS
    assert out.box_mask.sum(1).tolist() == [len(p) for p in PHRASES]
    assert out.finished.tolist() == [True, True, True]
    assert (out.sequences.gather(1, out.box_token_positions.clamp(min=0))[out.box_mask] == box).all()
    _assert_same(out, reference)
    # the boxes are not all alike (the comparison above means something)
    real = out.pred_boxes[out.box_mask]
    assert (real - real.mean(0)).abs().max() > 100 * TOLERANCE
    # no second pass: one forward per generated token, the last generated token (EOS) is never fed
    assert counter.calls == out.sequences.shape[1] - prompt


@pytest.mark.parametrize("model_name", ["tiny", "default"])
def test_box_as_last_generated_token_needs_one_extra_step_only(model_name, tiny_sharp, default_model):
    model, processor = tiny_sharp if model_name == "tiny" else default_model
    answers = _answers(processor)
    box = processor.box_token_id
    # sample 0 cut right after its second <BOX>, sample 2 ends with its only <BOX> at the same step, sample 1
    # finishes before
    cut = [index for index, token in enumerate(answers[0]) if token == box][1] + 1
    answers[2] = answers[2][: cut - 1] + [box]
    assert len(answers[1]) + 1 < cut
    out, reference, counter, prompt = _ground(model, processor, model_name, answers, cut)
    assert out.sequences[:, -1].tolist() == [box, processor.tokenizer.pad_token_id, box]
    assert out.finished.tolist() == [False, True, False]
    assert out.box_mask.sum(1).tolist() == [2, len(PHRASES[1]), answers[2].count(box)]
    assert int(out.box_token_positions[0].max()) == out.sequences.shape[1] - 1
    _assert_same(out, reference)
    assert counter.calls == out.sequences.shape[1] - prompt + 1  # generation + one step for the last <BOX>


def test_box_mask_and_finished_are_those_of_the_reference(tiny_sharp):
    """Unfinished, finished and box-free samples in one batch: mask, positions, finished as before."""
    model, processor = tiny_sharp
    box = processor.box_token_id
    word = processor.tokenizer.encode("nodule", add_special_tokens=False)[0]
    answers = [[word, box, word, word, box], [word, box], [word, box, word, box, word, box, word, box]]
    for max_new_tokens, finished in (
        (8, [True, True, False]),
        (5, [False, True, False]),
        (2, [False, False, False]),
    ):
        out, reference, _, prompt = _ground(model, processor, "tiny", answers, max_new_tokens)
        _assert_same(out, reference)
        assert out.finished.tolist() == finished
        generated = out.generated_mask.bool()
        is_eos = out.sequences[:, prompt:] == processor.tokenizer.eos_token_id
        assert out.finished.tolist() == (is_eos & generated).any(1).tolist()
        expected = [min(answer.count(box), answer[:max_new_tokens].count(box)) for answer in answers]
        assert out.box_mask.sum(1).tolist() == expected


def test_a_single_generated_box_token_is_grounded(tiny_sharp):
    """max_new_tokens=1 and the one generated token is <BOX>: its state comes from the extra step only."""
    model, processor = tiny_sharp
    box = processor.box_token_id
    out, reference, counter, prompt = _ground(model, processor, "tiny", [[box]] * 3, 1)
    assert out.sequences[:, prompt:].tolist() == [[box]] * 3 and out.box_mask.tolist() == [[True]] * 3
    _assert_same(out, reference)
    assert counter.calls == 2


def test_no_box_in_any_answer_gives_empty_tensors_without_a_second_pass(tiny_sharp):
    model, processor = tiny_sharp
    word = processor.tokenizer.encode("normal", add_special_tokens=False)[0]
    out, reference, counter, prompt = _ground(model, processor, "tiny", [[word], [word, word], []], 4)
    _assert_same(out, reference)
    k = model.config.num_box_queries
    assert out.pred_boxes.shape == (3, 0, k, 4) and out.box_mask.shape == (3, 0)
    assert counter.calls == out.sequences.shape[1] - prompt


@pytest.mark.parametrize(
    "generate_kwargs",
    [
        {"output_hidden_states": False, "return_dict_in_generate": False},
        {"output_hidden_states": True, "return_dict_in_generate": True, "output_scores": True},
    ],
    ids=["user-false", "user-true"],
)
def test_callers_generation_options_do_not_break_it(tiny_sharp, generate_kwargs):
    model, processor = tiny_sharp
    answers = _answers(processor)
    out, reference, counter, _ = _ground(model, processor, "tiny", answers, 12, **generate_kwargs)
    _assert_same(out, reference)
    assert torch.is_tensor(out.sequences) and out.pred_boxes.dim() == 4


def test_decoding_without_cache_gives_the_same_boxes(tiny_sharp):
    """use_cache=False: each step runs over the whole sequence, a trailing <BOX> included; the same boxes."""
    model, processor = tiny_sharp
    answers = _answers(processor)
    for max_new_tokens in (4, 40):
        out, reference, counter, prompt = _ground(
            model, processor, "tiny", answers, max_new_tokens, use_cache=False
        )
        _assert_same(out, reference)
        trailing_box = int(bool((out.sequences[:, -1] == processor.box_token_id).any()))
        assert counter.calls == out.sequences.shape[1] - prompt + trailing_box


def test_forward_returns_hidden_states_only_when_asked_and_only_kept_positions(tiny_sharp):
    model, processor = tiny_sharp
    inputs = processor(images=[xray_like()], text=REPORTS[:1], return_tensors="pt")
    with torch.no_grad():
        plain = model(**inputs)
        asked = model(**inputs, output_hidden_states=True, logits_to_keep=1)
        full = model(**inputs, output_hidden_states=True)
    assert plain.hidden_states is None
    layers = model.config.text_config.num_hidden_layers + 1
    assert len(asked.hidden_states) == layers and asked.hidden_states[-1].shape[1] == 1
    assert full.hidden_states[-1].shape[1] == inputs["input_ids"].shape[1]
    assert torch.allclose(asked.hidden_states[-1][:, -1], full.hidden_states[-1][:, -1], atol=1e-5)
    assert torch.equal(plain.logits, full.logits)
