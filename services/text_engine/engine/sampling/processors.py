"""Logits processors: what changes one request's logits before the sampler chooses.

Each works on one row (a request's logits, float) in place and is applied only to the rows that asked for it.
Order, as in transformers and vLLM: penalties, then logit_bias, then bans (ignore_eos, min_tokens); grammar
masks come last (pipeline.py), so nothing can re-allow a token the grammar forbids.
"""

from __future__ import annotations

import torch

from .spec import SamplingSpec


def apply_penalties(row: torch.Tensor, spec: SamplingSpec, generated: list[int], context: list[int]) -> None:
    """OpenAI's presence/frequency penalties over the tokens generated so far, and transformers' (and vLLM's)
    multiplicative repetition penalty over every token seen (prompt and output): a positive logit is divided
    by it, a negative one multiplied."""
    vocab = row.shape[-1]
    if (spec.presence_penalty or spec.frequency_penalty) and generated:
        ids = torch.tensor([t for t in generated if t < vocab], dtype=torch.long, device=row.device)
        counts = torch.bincount(ids, minlength=vocab)[:vocab].to(row.dtype)
        row -= spec.frequency_penalty * counts + spec.presence_penalty * (counts > 0).to(row.dtype)
    if spec.repetition_penalty != 1.0 and context:
        ids = torch.tensor(sorted({t for t in context if t < vocab}), dtype=torch.long, device=row.device)
        seen = row[ids]
        row[ids] = torch.where(seen > 0, seen / spec.repetition_penalty, seen * spec.repetition_penalty)


def apply_logit_bias(row: torch.Tensor, spec: SamplingSpec) -> None:
    """OpenAI's logit_bias: added to the logits of the given ids (admission checked they are in the vocabulary)."""
    if spec.logit_bias:
        ids = torch.tensor(list(spec.logit_bias), dtype=torch.long, device=row.device)
        row[ids] += torch.tensor(list(spec.logit_bias.values()), dtype=row.dtype, device=row.device)


def apply_bans(row: torch.Tensor, spec: SamplingSpec, generated_count: int) -> None:
    """Tokens this request may not sample now: EOS under ignore_eos; the end tokens before min_tokens."""
    banned = list(spec.banned_ids)
    if generated_count < spec.min_tokens:
        banned += spec.end_ids
    if banned:
        row[torch.tensor(banned, dtype=torch.long, device=row.device)] = float("-inf")
