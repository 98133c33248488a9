"""Report-guided decoding: the answer may only name findings that the report states, in the report's own words.

The model writes its answer token by token as always (`phrase<BOX>; phrase<BOX>.` + EOS), but a
[`ReportGuide`] (a transformers `LogitsProcessor`) masks every token that would leave the set of answers the
report allows:

- each phrase is one of the report's key phrases (`reading_medrg.report_key_phrases`: the findings the report
  states, negated and hypothetical ones left out), each at most once;
- the answer ends once every stated finding has its `<BOX>` (`require_all=True`), so a report listing ten
  findings gets ten boxes;
- a report that states no finding (a normal report, or one that only denies findings) can only get the
  no-finding answer, so it never gets a box.

The language model chooses the order of the phrases (unless the guide keeps the given order, `in_order`: then the
n-th `<BOX>` is the n-th phrase, which lets a reference box per phrase reach the box decoder), and the hidden state at each `<BOX>` (which has read
the image, the whole report and the phrase) conditions the box decoder exactly as without the guide. Where the
guide leaves one token only (the rest of a phrase once its first token is chosen, its `<BOX>`, the separator, the
end), `forced_tokens` names the whole forced run: passed as `forced_tokens_fn` to `generate_grounding` (as
`processor.guided_decoding` does), the run is fed to the LM in one forward (jump-forward decoding) instead of one
forward per token; as a logits processor alone the guide decodes token by token with the same answer. The token pieces are encoded exactly as the processor
encodes training answers (`processing_medrg._answer_ids`).
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor


class ReportGuide(LogitsProcessor):
    """Masks the logits of every token that does not continue an answer the report allows.

    Args:
        options: per sample a dict with `first` (token ids of each allowed phrase as the answer's first piece),
            `next` (the same phrases as a later piece, after the separator), `end` (ids that close an answer
            with findings) and `none` (ids of the no-finding answer).
        prompt_length: length of the (padded) prompt; generated tokens start there.
        box_token_id, eos_token_id: the `<BOX>` and end-of-sequence ids.
        require_all: the answer may end only when every allowed phrase has been written.
    """

    def __init__(
        self,
        options: list[dict],
        prompt_length: int,
        box_token_id: int,
        eos_token_id: int,
        require_all: bool = True,
    ):
        self.options = options
        self.prompt_length = int(prompt_length)
        self.box_token_id = int(box_token_id)
        self.eos_token_id = int(eos_token_id)
        self.require_all = bool(require_all)

    def min_new_tokens(self) -> int:
        """Tokens the longest allowed complete answer of the batch needs (a safe `max_new_tokens`)."""
        lengths = []
        for option in self.options:
            if option["first"]:
                longest_first = max(len(ids) for ids in option["first"])
                rest = sum(len(ids) + 1 for ids in option["next"]) - min(
                    len(ids) + 1 for ids in option["next"]
                )
                lengths.append(longest_first + 1 + rest + len(option["end"]) + 1)
            else:
                lengths.append(len(option["none"]) + 1)
        return max(lengths) if lengths else 1

    def _continuations(self, option: dict, generated: list[int]) -> list[list[int]]:
        """The token sequences that may follow the last `<BOX>` of `generated` (each ends in `<BOX>` or EOS)."""
        done = generated.count(self.box_token_id)
        if done == 0:
            if not option["first"]:
                return [[*option["none"], self.eos_token_id]]
            first = option["first"][:1] if option.get("in_order") else option["first"]
            return [[*ids, self.box_token_id] for ids in first]
        pieces, current = [], []
        for token in generated:
            if token == self.box_token_id:
                pieces.append(current)
                current = []
            else:
                current.append(token)
        used = {tuple(pieces[0])} | {tuple(piece) for piece in pieces[1:]}
        remaining = [
            k
            for k, (first, later) in enumerate(zip(option["first"], option["next"]))
            if tuple(first) not in used and tuple(later) not in used
        ]
        if option.get("in_order"):
            remaining = remaining[:1]  # the phrases in the given order
        out = [[*option["next"][k], self.box_token_id] for k in remaining]
        if not remaining or not self.require_all:
            out.append([*option["end"], self.eos_token_id])
        return out

    def allowed_tokens(self, sample: int, generated: list[int]) -> list[int]:
        """Token ids that may come next for `sample` after `generated` (empty once its answer is complete)."""
        if self.eos_token_id in generated:
            return []
        last_box = max((i for i, t in enumerate(generated) if t == self.box_token_id), default=-1)
        partial = generated[last_box + 1 :]
        head = generated[: last_box + 1]
        allowed = {
            seq[len(partial)]
            for seq in self._continuations(self.options[sample], head)
            if len(seq) > len(partial) and seq[: len(partial)] == partial
        }
        return sorted(allowed)

    def forced_tokens(self, sample: int, generated: list[int]) -> list[int]:
        """The tokens that must follow `generated` for `sample` whatever the model prefers: the unique
        continuation up to (not including) the next point where more than one token is allowed, or up to and
        including EOS. Empty when there is a choice now, or when the answer is complete (or off the guide).

        A decoder may feed these tokens to the LM in one forward instead of one each (jump-forward decoding):
        greedy decoding under this guide would pick exactly them."""
        generated = list(generated)
        run: list[int] = []
        while self.eos_token_id not in generated:
            last_box = max((i for i, t in enumerate(generated) if t == self.box_token_id), default=-1)
            partial = generated[last_box + 1 :]
            # the pieces that may follow the last <BOX> and agree with what was written after it
            pieces = [
                seq
                for seq in self._continuations(self.options[sample], generated[: last_box + 1])
                if len(seq) > len(partial) and seq[: len(partial)] == partial
            ]
            index = len(partial)
            while pieces and len({seq[index] for seq in pieces}) == 1:
                token = pieces[0][index]
                run.append(token)
                generated.append(token)
                if token in (self.box_token_id, self.eos_token_id):
                    break  # a piece ends (pieces hold <BOX>/EOS only as their last token)
                index += 1
            else:  # a choice, or the answer is off the guide
                return run
        return run

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[0] != len(self.options):
            raise ValueError(
                f"ReportGuide was built for {len(self.options)} samples, generation has {input_ids.shape[0]}"
            )
        mask = torch.zeros_like(scores, dtype=torch.bool)
        for sample, row in enumerate(input_ids[:, self.prompt_length :].tolist()):
            allowed = self.allowed_tokens(sample, row)
            if allowed:
                mask[sample, allowed] = True
            else:  # a finished answer (or one off the guide): leave it to the generation's own stopping
                mask[sample] = True
        return scores.masked_fill(~mask, torch.finfo(scores.dtype).min)


__all__ = ["ReportGuide"]
