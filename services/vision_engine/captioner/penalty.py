"""The checkpoint's repetition penalty, applied to each row's own tokens only.

`generate` applies `repetition_penalty` to every token id in a row's `input_ids`, left padding included.
The pad of Qwen2-VL is `<|endoftext|>`, one of its stop tokens, so a row padded to the batch's longest
prompt would be a little less likely to stop than the same row captioned alone: a cached caption would
depend on what it happened to be batched with. This processor takes the penalty's place (the batcher
passes `repetition_penalty=1.0` to `generate`) and skips each row's padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessor


class UnpaddedRepetitionPenalty(LogitsProcessor):
    """CTRL-style repetition penalty (as transformers' own) over `input_ids[row, starts[row]:]`."""

    def __init__(self, penalty: float, starts: Sequence[int]) -> None:
        self._penalty = penalty
        self._starts = list(starts)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row, start in enumerate(self._starts):
            ids = input_ids[row, start:]
            picked = scores[row].gather(0, ids)
            picked = torch.where(picked < 0, picked * self._penalty, picked / self._penalty)
            scores[row] = scores[row].scatter(0, ids, picked)
        return scores
