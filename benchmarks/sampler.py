"""Microbenchmark of the engine's sampler: the batched `sample_batch` against the per-row loop it replaced
(kept here as the baseline), on one step's logits of 16 sampled requests. Run: python -m benchmarks.sampler
"""

from __future__ import annotations

import time

import torch

from services.text_engine.engine.sampling.sampler import sample_batch
from services.text_engine.engine.sampling.spec import SamplingSpec


def per_row_reference(logits: torch.Tensor, specs: list[SamplingSpec]) -> torch.Tensor:
    """The previous sampler: every row on its own (temperature, top-k by threshold, top-p by sort, multinomial)."""
    chosen = torch.zeros(logits.shape[0], dtype=torch.long)
    for row, spec in enumerate(specs):
        x = logits[row] / spec.temperature
        if 0 < spec.top_k < x.shape[-1]:
            x = x.masked_fill(x < torch.topk(x, spec.top_k).values[-1], float("-inf"))
        if spec.top_p < 1.0:
            sorted_x, order = torch.sort(x, descending=True)
            p = torch.softmax(sorted_x, dim=-1)
            drop = (p.cumsum(dim=-1) - p) >= spec.top_p
            x = x.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
        chosen[row] = int(torch.multinomial(torch.softmax(x, dim=-1), 1, generator=spec.generator))
    return chosen


def per_step_ms(fn, logits, specs, iters: int = 300) -> float:
    for _ in range(20):
        fn(logits, specs)
    started = time.perf_counter()
    for _ in range(iters):
        fn(logits, specs)
    return (time.perf_counter() - started) / iters * 1000


def main() -> None:
    rows, vocab = 16, 2048
    logits = torch.randn(rows, vocab)
    for top_p in (1.0, 0.9):
        specs = [SamplingSpec(temperature=0.7, top_p=top_p, top_k=0).bind(torch.device("cpu")) for _ in range(rows)]
        for _ in range(3):
            old, new = per_step_ms(per_row_reference, logits, specs), per_step_ms(sample_batch, logits, specs)
            print(
                f"{rows} rows x {vocab} vocab, temperature 0.7, top_p {top_p}: per-row {old:.3f} ms/step, "
                f"batched {new:.3f} ms/step, batched/per-row = {new / old:.2f}"
            )


if __name__ == "__main__":
    main()
