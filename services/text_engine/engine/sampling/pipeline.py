"""One batch step of the logits pipeline: processors -> grammar masks -> sampler -> logprobs.

`choose_tokens` is what the batching adapter (batcher.py) calls with the logits rows of the requests that get
a token this step. It returns None only when every row is plain greedy (argmax of the raw logits, nothing to
record): then the model's own argmax is the same choice and the copy is skipped. Any mask, bias, penalty or
logprobs request takes the full path, so no shortcut can bypass a grammar.

Threading: runs on the generation thread; the per-request state it touches (generator, constraint, logprobs
outbox) belongs to that thread until the request's stream pops the outbox on the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .processors import apply_bans, apply_logit_bias, apply_penalties
from .sampler import sample_batch, token_logprobs
from .spec import SampledToken, SamplingSpec


@dataclass
class Row:
    """One request's row this step: its spec, its generated tokens so far and (for the repetition penalty)
    every token it has seen, prompt included."""

    spec: SamplingSpec
    generated: list[int]
    context: list[int] = field(default_factory=list)


def choose_tokens(logits: torch.Tensor, rows: Sequence[Row]) -> torch.Tensor | None:
    """One token per row of `logits[:len(rows)]`; None when the raw argmax is every row's choice."""
    if all(row.spec.plain_greedy for row in rows):
        return None
    specs = [row.spec for row in rows]
    processed = logits[: len(rows)].float()  # a copy for bf16/f16 models; the same tensor for f32 ones
    touched = [i for i, spec in enumerate(specs) if spec.processed]
    if touched and processed.data_ptr() == logits.data_ptr():
        processed = processed.clone()  # never write into the model's own logits
    for i in touched:
        row, spec = rows[i], specs[i]
        if spec.penalized:
            apply_penalties(processed[i], spec, row.generated, row.context)
        apply_logit_bias(processed[i], spec)
        # A grammar decides when its answer ends: bans that could leave it no token are not applied under it.
        if spec.constraint is None or not spec.constraint.masks:
            apply_bans(processed[i], spec, len(row.generated))
    constrained = [
        (i, row.spec.constraint)
        for i, row in enumerate(rows)
        if row.spec.constraint is not None and row.spec.constraint.masks
    ]
    if constrained:
        mask_constrained(processed, constrained)
    chosen = sample_batch(processed, specs)
    for i, constraint in ((i, row.spec.constraint) for i, row in enumerate(rows) if row.spec.constraint):
        constraint.observe(int(chosen[i]))
    wanted = [i for i, spec in enumerate(specs) if spec.top_logprobs is not None]
    if wanted:
        index = torch.tensor(wanted, device=processed.device)
        for i, (logprob, top) in zip(
            wanted, token_logprobs(processed[index], chosen[index], [specs[i].top_logprobs for i in wanted])
        ):
            specs[i].sampled.append(SampledToken(int(chosen[i]), logprob, tuple(top)))
    return chosen


def mask_constrained(logits: torch.Tensor, constrained: list) -> None:
    """Grammar masks on the constrained rows ((row, Constraint) pairs); a reasoning model's start marker stays
    allowed until it decides. Also vLLM's logits processor's (vllm_grammar.py)."""
    from .grammar import apply_grammar_masks  # the grammar library loads only when a request uses it

    kept = [
        (i, c.also_allowed, logits[i, c.also_allowed].clone()) for i, c in constrained if c.also_allowed is not None
    ]
    apply_grammar_masks(logits, [(i, c.matcher) for i, c in constrained])
    for i, token, value in kept:
        logits[i, token] = value
