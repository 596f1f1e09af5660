"""The sampler: one token per row, each row with its own request's parameters and random generator."""

from __future__ import annotations

import torch

from .spec import SamplingSpec


def sample_batch(logits: torch.Tensor, specs: list[SamplingSpec]) -> torch.Tensor:
    """One token per row of `logits` [rows, vocab] (already processed: penalties, bias, masks).

    The tensor work (temperature, top-k, top-p, min-p, softmax) is done for the whole batch at once; only one
    uniform number per sampled row comes from that request's own generator, and it is turned into a token
    by inverse-CDF lookup. So a seeded request draws the same tokens whatever else is in the batch."""
    rows, vocab = logits.shape
    device = logits.device
    greedy = torch.tensor([spec.greedy for spec in specs], device=device)
    temperature = torch.tensor([1.0 if spec.greedy else spec.temperature for spec in specs], device=device)
    top_k = torch.tensor([spec.top_k if 0 < spec.top_k < vocab else vocab for spec in specs], device=device)
    top_p = torch.tensor([spec.top_p for spec in specs], device=device)
    uniform = torch.stack(
        [
            torch.zeros((), device=device) if spec.greedy else torch.rand((), generator=spec.generator, device=device)
            for spec in specs
        ]
    )
    scaled = logits / temperature[:, None]
    if any(spec.min_p > 0 for spec in specs):
        min_p = torch.tensor([spec.min_p for spec in specs], device=device)
        # min-p (vLLM's): drop tokens less likely than min_p times the most likely one, after temperature.
        probs = torch.softmax(scaled, dim=-1)
        scaled = scaled.masked_fill(probs < min_p[:, None] * probs.max(dim=-1, keepdim=True).values, float("-inf"))
    if bool(((top_k < vocab) | (top_p < 1.0)).any()):
        scaled, order = torch.sort(scaled, dim=-1, descending=True)
        ranks = torch.arange(vocab, device=device)[None, :]
        scaled = scaled.masked_fill(ranks >= top_k[:, None], float("-inf"))
        probs = torch.softmax(scaled, dim=-1)
        # Drop a token when the tokens before it already reach top_p (the first token always stays).
        scaled = scaled.masked_fill(probs.cumsum(dim=-1) - probs >= top_p[:, None], float("-inf"))
    else:
        order = None  # nothing to cut: no need to sort the vocabulary
    cdf = torch.softmax(scaled, dim=-1).cumsum(dim=-1)
    picked = torch.searchsorted(cdf, (uniform * cdf[:, -1])[:, None]).clamp_(max=vocab - 1)
    sampled = (order.gather(1, picked) if order is not None else picked).squeeze(1)
    return torch.where(greedy, logits.argmax(dim=-1), sampled)


def token_logprobs(
    logits: torch.Tensor, chosen: torch.Tensor, top_n: list[int]
) -> list[tuple[float, list[tuple[int, float]]]]:
    """Per row: the chosen token's log-probability and the `top_n[row]` most likely (id, logprob) pairs.

    The distribution is log-softmax of the processed logits (after penalties, logit_bias and grammar masks,
    before temperature, top-k, top-p and min-p): what the model says given the request's constraints, not an
    artefact of the sampling settings. docs/api.md says so."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    chosen_lp = logprobs.gather(1, chosen[:, None]).squeeze(1).tolist()
    k = max(top_n, default=0)
    top_values, top_ids = logprobs.topk(k, dim=-1) if k else (None, None)
    out = []
    for row, n in enumerate(top_n):
        top = list(zip(top_ids[row, :n].tolist(), top_values[row, :n].tolist())) if n else []
        out.append((chosen_lp[row], top))
    return out
