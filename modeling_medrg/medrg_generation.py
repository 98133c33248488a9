"""Jump-forward decoding, run by `GenerationMixin.generate(custom_generate=jump_forward_decoding)`, and the
bookkeeping of a generated answer: where it ends (EOS) and which of its tokens are `<BOX>`.

`generate` prepares the inputs, the generation config, the logits processors and the stopping criteria as for any
decoding; `jump_forward_decoding` then runs the decoding loop. Where `forced_tokens_fn(sample, generated)` names a
run of tokens that must come next whatever the LM prefers (a report guide's rest of a phrase, its `<BOX>`, a
separator, the end), the run is appended without asking the LM and later fed to it in one multi-token forward on
the KV cache; the LM's logits are read only where there is a choice. Without `forced_tokens_fn` every token is a
choice: one forward per token, as greedy (or sampling) `generate`. The loop also keeps the LM's last-layer state
of every generated token it feeds: the states the box decoder reads at each `<BOX>`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class MedRGGenerateOutput(ModelOutput):
    r"""
    Output of [`jump_forward_decoding`] (what `generate(custom_generate=jump_forward_decoding)` returns).

    Args:
        sequences (`torch.LongTensor` of shape `(batch, prompt + generated)`): prompt and generated ids, pad after
            a sample finished.
        token_states (`torch.FloatTensor` of shape `(batch, fed, hidden)`): the LM's last-layer state of each of the
            first `fed` generated tokens; `fed` covers every generated `<BOX>`.
        generated_mask (`torch.LongTensor` of shape `(batch, generated)`): 1 up to and including the first EOS.
        finished (`torch.BoolTensor` of shape `(batch,)`): True where the answer ended with EOS.
    """

    sequences: torch.LongTensor | None = None
    token_states: torch.FloatTensor | None = None
    generated_mask: torch.LongTensor | None = None
    finished: torch.BoolTensor | None = None


def answer_mask(generated: torch.Tensor, eos_token_id) -> tuple[torch.Tensor, torch.Tensor]:
    """`generated` `(batch, generated)` ids -> the mask `(batch, generated)`, 1 up to and including the first EOS
    (`eos_token_id`: an id, a list of ids or None), and `finished` `(batch,)`: whether an EOS was generated."""
    eos = [] if eos_token_id is None else torch.as_tensor(eos_token_id).flatten().tolist()
    is_eos = torch.isin(generated, torch.tensor(eos, dtype=generated.dtype, device=generated.device))
    before_first_eos = torch.cumsum(is_eos.long(), dim=1) - is_eos.long() == 0
    return before_first_eos.long(), is_eos.any(dim=1)


def generated_box_mask(
    sequences: torch.Tensor, prompt_length: int, generated_mask: torch.Tensor, box_token_id: int
) -> torch.Tensor:
    """`(batch, prompt + generated)` bool: True at each `<BOX>` of the answers (the prompt's `<BOX>` and anything
    after an answer's EOS excluded)."""
    is_box = torch.zeros_like(sequences, dtype=torch.bool)
    is_box[:, prompt_length:] = (sequences[:, prompt_length:] == box_token_id) & generated_mask.bool()
    return is_box


class _JumpForward:
    """One decoding: the sequences so far, the unfinished samples, the LM's cache and logits after the last fed
    token, and the last-layer states of the generated tokens fed so far."""

    # generate's per-sequence inputs that a forward over the whole sequence (no cache) rebuilds itself
    _SEQUENCE_INPUTS = ("attention_mask", "position_ids", "cache", "use_cache", "logits_to_keep")

    def __init__(
        self, model, input_ids, logits_processor, stopping_criteria, generation_config, model_kwargs, streamer
    ):
        self.model, self.config, self.streamer = model, generation_config, streamer
        self.logits_processor, self.stopping_criteria = logits_processor, stopping_criteria
        self.sequences, self.prompt_length = input_ids, input_ids.shape[1]
        mask = model_kwargs.get("attention_mask")
        self.prompt_mask = torch.ones_like(input_ids) if mask is None else mask.long()
        self.unfinished = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        pad = generation_config._pad_token_tensor  # as generate prepared it (its first EOS when unset)
        self.pad = input_ids.new_tensor(0 if pad is None else int(pad))
        self.image_inputs = {k: v for k, v in model_kwargs.items() if k not in self._SEQUENCE_INPUTS}
        self.states: list[torch.Tensor] = []
        self.fed = 0  # generated tokens fed to the LM so far
        prefill = model(input_ids=input_ids, **model_kwargs)
        self.cache = prefill.cache if model_kwargs.get("use_cache") else None
        self.logits = prefill.logits[:, -1]
        self.scores = self.logits.float()
        if streamer is not None:
            streamer.put(input_ids.cpu())

    @property
    def length(self) -> int:
        return self.sequences.shape[1] - self.prompt_length

    def append(self, tokens: torch.Tensor) -> None:
        """Append `tokens` `(batch, k)` one position at a time, as token-by-token decoding would: pad for finished
        samples, the stopping criteria after every position."""
        for column in tokens.T:
            if not bool(self.unfinished.any()):
                return
            column = torch.where(self.unfinished, column.to(self.sequences.device), self.pad)
            self.sequences = torch.cat((self.sequences, column[:, None]), dim=1)
            if self.streamer is not None:
                self.streamer.put(column.cpu())
            self.unfinished &= ~self.stopping_criteria(self.sequences, self.scores)

    def feed(self, upto: int) -> None:
        """Feed generated tokens `fed..upto-1` to the LM (in one forward) for the logits after them and their states."""
        count = upto - self.fed
        mask = torch.cat((self.prompt_mask, self.prompt_mask.new_ones(self.prompt_mask.shape[0], upto)), 1)
        common = {"attention_mask": mask, "logits_to_keep": count, "output_hidden_states": True}
        if self.cache is not None:
            start = self.prompt_length + self.fed
            ids = self.sequences[:, start : start + count]
            step = self.model(input_ids=ids, cache=self.cache, use_cache=True, **common)
            self.cache = step.cache
        else:  # no cache: the whole sequence again
            ids = self.sequences[:, : self.prompt_length + upto]
            step = self.model(input_ids=ids, use_cache=False, **common, **self.image_inputs)
        self.logits, self.fed = step.logits[:, -1], upto
        self.states.append(step.hidden_states[-1])

    def forced_run(self, forced_tokens_fn: Callable | None) -> torch.Tensor | None:
        """`(batch, k)`: the next k tokens every unfinished sample is forced to take (k = the shortest run of the
        batch), or None when some sample has a choice now."""
        if forced_tokens_fn is None:
            return None
        generated = self.sequences[:, self.prompt_length :].tolist()
        alive = self.unfinished.tolist()
        runs = [list(forced_tokens_fn(i, row)) if alive[i] else None for i, row in enumerate(generated)]
        k = min(len(run) for run in runs if run is not None)
        if k == 0:
            return None
        return torch.tensor([run[:k] if run is not None else [0] * k for run in runs])

    def choose(self) -> None:
        """One token per sample from the LM's logits after every token so far, under the logits processors."""
        if self.fed < self.length:
            self.feed(self.length)
        scores = self.logits_processor(self.sequences, self.logits.to(copy=True, dtype=torch.float32))
        if self.config.do_sample:
            chosen = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        else:
            chosen = scores.argmax(dim=-1)
        self.scores = scores
        self.append(chosen[:, None])

    def output(self, box_token_id: int) -> MedRGGenerateOutput:
        """The result, after feeding the generated `<BOX>` tokens not fed yet (their states)."""
        generated_mask, finished = answer_mask(
            self.sequences[:, self.prompt_length :], self.config.eos_token_id
        )
        is_box = generated_box_mask(self.sequences, self.prompt_length, generated_mask, box_token_id)
        boxes_at = is_box[:, self.prompt_length :].any(dim=0).nonzero()
        if boxes_at.numel() and int(boxes_at[-1]) >= self.fed:
            self.feed(int(boxes_at[-1]) + 1)
        hidden = self.model.config.text_config.hidden_size
        states = (
            torch.cat(self.states, dim=1) if self.states else self.logits.new_zeros(len(finished), 0, hidden)
        )
        return MedRGGenerateOutput(
            sequences=self.sequences, token_states=states, generated_mask=generated_mask, finished=finished
        )


def jump_forward_decoding(
    model,
    input_ids: torch.LongTensor,
    logits_processor,
    stopping_criteria,
    generation_config,
    forced_tokens_fn: Callable[[int, list[int]], list[int]] | None = None,
    answer_streamer=None,
    **model_kwargs,
) -> MedRGGenerateOutput:
    """A decoding loop for `model.generate(..., custom_generate=jump_forward_decoding, forced_tokens_fn=...)`.

    Greedy (or, with `do_sample`, sampling) decoding of one sequence per input under `generate`'s logits
    processors and stopping criteria, where `forced_tokens_fn(sample, generated_ids)` (optional) returns the tokens
    that must follow sample's generated ids whatever the LM prefers (empty when there is a choice; a run ends at
    the latest with EOS), e.g. `guide_medrg.ReportGuide.forced_tokens`. Forced runs are appended without a forward
    and fed to the LM together with the next choice's token; the answers are those of token-by-token decoding
    under a logits processor that allows only the forced token. `answer_streamer`: a transformers streamer (e.g.
    `TextStreamer`) that gets the prompt, then every token as it is appended (`generate` passes its own `streamer`
    to its built-in loops only; `generate_grounding` passes it here). Returns [`MedRGGenerateOutput`]."""
    if generation_config.num_beams != 1 or (generation_config.num_return_sequences or 1) != 1:
        raise ValueError(
            "jump_forward_decoding decodes one sequence per input greedily or by sampling; got num_beams="
            f"{generation_config.num_beams}, num_return_sequences={generation_config.num_return_sequences}"
        )
    decoder = _JumpForward(
        model,
        input_ids,
        logits_processor,
        stopping_criteria,
        generation_config,
        model_kwargs,
        answer_streamer,
    )
    while bool(decoder.unfinished.any()):
        run = decoder.forced_run(forced_tokens_fn)
        if run is None:
            decoder.choose()
        else:
            decoder.append(run)
    if answer_streamer is not None:
        answer_streamer.end()
    return decoder.output(model.config.box_token_id)


__all__ = ["MedRGGenerateOutput", "answer_mask", "generated_box_mask", "jump_forward_decoding"]
