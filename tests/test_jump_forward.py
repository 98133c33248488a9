"""Jump-forward decoding under the report guide. `ReportGuide.forced_tokens` names the tokens the guide
leaves no choice about; `generate_grounding` (with `forced_tokens_fn`, as `processor(..., guided=True)` prepares it)
feeds each such run to the LM in one forward and reads the LM's logits only where the guide leaves a choice. Its
answers are those of transformers' token-by-token `generate` under the guide and its boxes those of token-by-token
decoding, with far fewer LM forwards (a 10-finding report: at least 3x fewer than tokens generated)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import REPO_ROOT, CountForwards, xray_like
from PIL import Image
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.generation.streamers import BaseStreamer

TOLERANCE = 1e-4
HANDWRITTEN = REPO_ROOT / "tests" / "data" / "handwritten_reports.jsonl"
TEN_FINDINGS = json.loads(HANDWRITTEN.read_text().splitlines()[31])["report"]  # hw32
REPORTS = {
    0: "Heart size is normal. Lungs are clear. No pneumothorax or pleural effusion.",
    1: "Nodule in the right upper lobe.",
    3: "Left pleural effusion. Mild cardiomegaly with a small right apical pneumothorax.",
    10: TEN_FINDINGS,
}


class TokenByToken(LogitsProcessor):
    """The guide's mask as a second, separate logits processor."""

    def __init__(self, guide):
        self.guide = guide

    def __call__(self, input_ids, scores):
        return self.guide(input_ids, scores)


def _images(model_name, count):
    if model_name == "default":
        example = Image.open(REPO_ROOT / "docs" / "example_cxr.png").convert("L")
        return [example.rotate(5 * i) if i else example for i in range(count)]
    return [xray_like(seed=i) for i in range(count)]


def _counted(model, method, **kwargs):
    counter = CountForwards(model.language_model)
    try:
        return method(**kwargs), counter.calls
    finally:
        counter.remove()


def _run(model, processor, reports, images, max_new_tokens=None):
    """Jump-forward output and the token-by-token reference (`generate_grounding` without the forced runs), with
    the LM forward counts of jump-forward and of transformers' own `generate` under the guide, whose answers the
    reference has."""
    inputs = processor(
        images=images, text=reports, return_tensors="pt", guided=True, max_new_tokens=max_new_tokens
    )
    phrases = processor.report_phrases(reports)
    jump, jump_calls = _counted(model, model.generate_grounding, **inputs)
    token_by_token = {key: value for key, value in inputs.items() if key != "forced_tokens_fn"}
    reference, reference_calls = _counted(model, model.generate_grounding, **token_by_token)
    plain, plain_calls = _counted(
        model,
        model.generate,
        input_ids=inputs["input_ids"],
        pixel_values=inputs["pixel_values"],
        attention_mask=inputs["attention_mask"],
        max_new_tokens=inputs["max_new_tokens"],
        logits_processor=inputs["logits_processor"],
        do_sample=False,
    )
    assert torch.equal(plain, reference.sequences)
    assert reference_calls == plain_calls + int(bool((plain[:, -1] == processor.box_token_id).any()))
    return inputs, phrases, [(jump, jump_calls), (reference, plain_calls)]


def _assert_same(jump, reference):
    assert torch.equal(jump.sequences, reference.sequences)
    assert jump.prompt_length == reference.prompt_length
    assert torch.equal(jump.generated_mask, reference.generated_mask)
    assert torch.equal(jump.finished, reference.finished)
    assert torch.equal(jump.box_mask, reference.box_mask)
    assert torch.equal(jump.box_token_positions, reference.box_token_positions)
    assert jump.pred_boxes.shape == reference.pred_boxes.shape
    assert jump.pred_scores.shape == reference.pred_scores.shape
    assert torch.allclose(jump.pred_boxes, reference.pred_boxes, rtol=0, atol=TOLERANCE)
    assert torch.allclose(jump.pred_scores, reference.pred_scores, rtol=0, atol=TOLERANCE)


# ---- ReportGuide.forced_tokens ----


def _guide(processor, phrases, require_all=True):
    return processor.report_guide([phrases], prompt_length=0, require_all=require_all)


def _walk(guide, sample=0):
    """Follow the guide choosing the first allowed token at every choice; check forced_tokens on the way."""
    generated = []
    while True:
        forced = guide.forced_tokens(sample, generated)
        allowed = guide.allowed_tokens(sample, generated)
        if not allowed:
            assert forced == []
            return generated
        if len(allowed) > 1:
            assert forced == []
            generated.append(allowed[0])
            continue
        # forced: the run is exactly the chain of single allowed tokens
        assert forced and forced[0] == allowed[0]
        for index, token in enumerate(forced):
            assert guide.allowed_tokens(sample, generated + forced[:index]) == [token]
        after = generated + forced
        if forced[-1] != guide.eos_token_id:
            assert len(guide.allowed_tokens(sample, after)) > 1
        else:
            assert forced.count(guide.eos_token_id) == 1
        generated = after


def test_forced_tokens_of_a_normal_report_is_the_whole_no_finding_answer(tiny):
    _, processor = tiny
    guide = _guide(processor, [])
    forced = guide.forced_tokens(0, [])
    assert forced == [*guide.options[0]["none"], guide.eos_token_id]
    assert guide.forced_tokens(0, forced) == []  # complete


def test_forced_tokens_of_one_finding_is_the_whole_answer(tiny):
    _, processor = tiny
    guide = _guide(processor, ["right upper lobe nodule"])
    option = guide.options[0]
    forced = guide.forced_tokens(0, [])
    assert forced == [*option["first"][0], guide.box_token_id, *option["end"], guide.eos_token_id]
    # from any point inside the answer, the rest of it
    for cut in range(len(forced)):
        assert guide.forced_tokens(0, forced[:cut]) == forced[cut:]


def test_forced_tokens_stop_at_each_choice_and_run_through_phrase_box_and_separator(tiny):
    _, processor = tiny
    phrases = ["left pleural effusion", "cardiomegaly", "right apical pneumothorax"]
    guide = _guide(processor, phrases)
    option = guide.options[0]
    assert guide.forced_tokens(0, []) == []  # three first phrases to choose from
    first = option["first"][1]  # "cardiomegaly"
    forced = guide.forced_tokens(0, first[:1])
    # the rest of the phrase and its <BOX>, then (the separator is shared by the remaining phrases) on up to the
    # next choice
    assert forced[: len(first) - 1 + 1] == [*first[1:], guide.box_token_id]
    assert len(guide.allowed_tokens(0, first[:1] + forced)) == 2
    answer = _walk(guide)
    assert answer.count(guide.box_token_id) == 3 and answer[-1] == guide.eos_token_id


def test_forced_tokens_after_the_last_phrase_run_to_eos_unless_the_answer_may_end_early(tiny):
    _, processor = tiny
    phrases = ["left pleural effusion", "cardiomegaly"]
    strict = _guide(processor, phrases)
    answer = _walk(strict)
    last_box = len(answer) - 1 - answer[::-1].index(strict.box_token_id)
    assert strict.forced_tokens(0, answer[: last_box + 1]) == answer[last_box + 1 :]
    loose = _guide(processor, phrases, require_all=False)
    _walk(loose)
    first = loose.options[0]["first"][0]
    # after one phrase the answer may end or go on: a choice
    assert loose.forced_tokens(0, [*first, loose.box_token_id]) == []


def test_forced_tokens_of_a_finished_or_off_guide_answer_are_empty(tiny):
    _, processor = tiny
    guide = _guide(processor, ["cardiomegaly"])
    answer = _walk(guide)
    assert guide.forced_tokens(0, answer) == []
    off = processor.tokenizer.encode(" zebra", add_special_tokens=False)
    assert guide.forced_tokens(0, off) == []


def test_forced_tokens_of_the_ten_finding_report(tiny):
    _, processor = tiny
    phrases = processor.report_phrases([TEN_FINDINGS])[0]
    assert len(phrases) == 10
    guide = _guide(processor, phrases)
    answer = _walk(guide)
    assert answer.count(guide.box_token_id) == 10


# ---- jump-forward decoding equals token-by-token guided generation ----


@pytest.mark.parametrize("model_name", ["tiny", "default"])
def test_jump_forward_equals_token_by_token_guided_generation(model_name, tiny_sharp, default_model):
    model, processor = tiny_sharp if model_name == "tiny" else default_model
    counts = [0, 1, 3, 10]
    reports = [REPORTS[n] for n in counts]
    inputs, phrases, [(jump, jump_calls), (reference, reference_calls)] = _run(
        model, processor, reports, _images(model_name, len(reports))
    )
    mask = inputs["attention_mask"]
    assert bool((mask[:, 0] == 0).any()) and len(set(mask.sum(1).tolist())) > 1, "reports must be left-padded"
    assert [len(p) for p in phrases] == counts
    _assert_same(jump, reference)
    # every stated finding grounded, the normal report without a box, all answers complete
    assert jump.box_mask.sum(1).tolist() == counts
    assert jump.finished.all()
    generated = jump.sequences.shape[1] - jump.prompt_length
    assert reference_calls == generated  # one per generated token (the last, EOS, never fed) + the prefill
    assert jump_calls < reference_calls
    if model_name == "default":
        real = jump.pred_boxes[jump.box_mask]
        assert (real - real.mean(0)).abs().max() > 100 * TOLERANCE


@pytest.mark.parametrize("model_name", ["tiny", "default"])
@pytest.mark.parametrize("findings", [0, 1, 3, 10])
def test_jump_forward_single_report(model_name, findings, tiny_sharp, default_model):
    model, processor = tiny_sharp if model_name == "tiny" else default_model
    _, phrases, [(jump, jump_calls), (reference, reference_calls)] = _run(
        model, processor, [REPORTS[findings]], _images(model_name, 1)
    )
    _assert_same(jump, reference)
    assert jump.box_mask.sum().item() == findings and bool(jump.finished.all())
    generated = jump.sequences.shape[1] - jump.prompt_length
    assert reference_calls == generated
    if findings == 10:
        assert jump_calls * 3 <= generated, (jump_calls, generated)
    else:
        assert jump_calls < generated or generated <= 2


@pytest.mark.parametrize("model_name", ["tiny", "default"])
def test_jump_forward_cut_off_by_max_new_tokens(model_name, tiny_sharp, default_model):
    """A budget that ends inside the answers (right after a <BOX> for one of them): the same cut answers,
    finished False, the trailing <BOX> grounded."""
    model, processor = tiny_sharp if model_name == "tiny" else default_model
    reports = [REPORTS[3], REPORTS[10], REPORTS[1]]
    images = _images(model_name, len(reports))
    _, _, [(full, _), _] = _run(model, processor, reports, images)
    box = processor.box_token_id
    generated = full.sequences[1, full.prompt_length :].tolist()
    second_box = [i for i, t in enumerate(generated) if t == box][1] + 1
    for budget in (1, second_box, second_box + 1, second_box + 3):
        _, _, [(jump, _), (reference, _)] = _run(model, processor, reports, images, max_new_tokens=budget)
        _assert_same(jump, reference)
        assert jump.sequences.shape[1] - jump.prompt_length == budget
        assert not bool(jump.finished[1])
        if budget == second_box:
            assert int(jump.box_token_positions[1].max()) == jump.sequences.shape[1] - 1


def test_jump_forward_under_other_generation_settings(tiny_sharp):
    """Forced runs skip LM forwards whatever else `generate` is asked (more logits processors, no cache) with the
    same answers; one sequence per input only."""
    model, processor = tiny_sharp
    inputs = processor(images=_images("tiny", 1), text=[REPORTS[3]], return_tensors="pt", guided=True)
    base, base_calls = _counted(model, model.generate_grounding, **inputs)
    guide = inputs["logits_processor"][0]
    twice = {**inputs, "logits_processor": LogitsProcessorList([guide, TokenByToken(guide)])}
    for options in ({"use_cache": False}, twice):
        out, calls = _counted(model, model.generate_grounding, **{**inputs, **options})
        assert torch.equal(out.sequences, base.sequences) and torch.equal(out.box_mask, base.box_mask)
        assert torch.allclose(out.pred_boxes, base.pred_boxes, rtol=0, atol=TOLERANCE)
        assert calls == base_calls < out.sequences.shape[1] - out.prompt_length
    assert base.box_mask.sum().item() == 3
    with pytest.raises(ValueError, match="one sequence per input"):
        model.generate_grounding(**inputs, num_beams=2)
    with pytest.raises(ValueError, match="synced_gpus is not supported"):
        model.generate_grounding(**inputs, synced_gpus=True)


class CollectStreamer(BaseStreamer):
    def __init__(self):
        self.puts, self.ended = [], 0

    def put(self, value):
        self.puts.append(value.tolist())

    def end(self):
        self.ended += 1


def test_a_streamer_gets_the_prompt_then_every_answer_token_as_generate_gives_them(tiny_sharp):
    """`streamer=` reaches the decoding loop (generate keeps its own streamer for its built-in loops): the prompt,
    then every appended token in order, forced runs included, then one `end()`; the answer is unchanged."""
    model, processor = tiny_sharp
    inputs = processor(images=_images("tiny", 1), text=[REPORTS[3]], return_tensors="pt", guided=True)
    base = model.generate_grounding(**inputs)
    streamer = CollectStreamer()
    out = model.generate_grounding(**inputs, streamer=streamer)
    assert torch.equal(out.sequences, base.sequences) and streamer.ended == 1
    assert streamer.puts[0] == inputs["input_ids"].tolist()
    streamed = [token for put in streamer.puts[1:] for token in put]
    assert streamed == out.sequences[0, out.prompt_length :].tolist() and len(streamed) > 3


def test_processor_prepares_guided_and_free_decoding(tiny):
    _, processor = tiny
    reports = [REPORTS[3], REPORTS[0]]
    images = _images("tiny", 2)
    inputs = processor(images=images, text=reports, return_tensors="pt", guided=True)
    guide = inputs["logits_processor"][0]
    assert inputs["forced_tokens_fn"] == guide.forced_tokens
    assert inputs["max_new_tokens"] == max(64, guide.min_new_tokens())
    assert guide.prompt_length == inputs["input_ids"].shape[1]
    assert processor(images=images, text=reports, guided=True, max_new_tokens=7)["max_new_tokens"] == 7
    free = processor(images=images, text=reports, guided=False)
    assert free["max_new_tokens"] == 64 and "logits_processor" not in free
    assert "max_new_tokens" not in processor(images=images, text=reports)
    with pytest.raises(ValueError, match="guided"):
        processor(images=images, text=reports, guided=True, findings=[[], []])
