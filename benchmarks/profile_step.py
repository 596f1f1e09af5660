"""Where a decode step's time goes (issue 15): the bench model's plain forward vs a continuous-batching step.

`python -m benchmarks.profile_step --model-dir models/tiny/bench-text` prints, in one run:
  1. one decode step of the plain model (f32, and the same weights in bf16) (`model(ids[B, 1], past_key_values=DynamicCache)`, B rows at a ~100-token
     context): the forward's own cost, with no scheduler;
  2. the in-process continuous-batching manager under B streams: wall time per step (B tokens / tok/s);
  3. torch.profiler over the plain decode steps (the profiler sees the thread that starts it, and the manager
     runs on its own): the ops that take the most self CPU time, and how much of the step's wall time the ops
     account for (the rest is Python between them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import time

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import DynamicCache

from services.common.config import ModelParams

from .inprocess import InProcessManager
from .load import run_load


def plain_decode_ms(
    model, batch: int, context: int = 100, steps: int = 20, around_steps=contextlib.nullcontext
) -> float:
    """Median ms of one decode step of `batch` rows after a `context`-token prefill (no scheduler at all);
    `around_steps()` wraps the decode steps only (e.g. a profiler)."""
    ids = torch.randint(10, 1000, (batch, context))
    with torch.inference_mode():
        cache = DynamicCache()
        out = model(input_ids=ids, past_key_values=cache, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
        times = []
        with around_steps():
            for _ in range(steps):
                started = time.perf_counter()
                out = model(input_ids=token, past_key_values=out.past_key_values, use_cache=True)
                token = out.logits[:, -1:].argmax(-1)
                times.append((time.perf_counter() - started) * 1000)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    params = ModelParams(mem=64, dtype="f32", max_num_seqs=args.concurrency, prefill_chunk_size=1024, block_size=64)
    manager = InProcessManager(args.model_dir, params)
    try:
        model = manager.loaded.model
        plain = {b: plain_decode_ms(model, b) for b in (1, args.concurrency)}
        half = copy.deepcopy(model).to(torch.bfloat16)  # the same weights in bf16: half the bytes per step
        plain_bf16 = plain_decode_ms(half, args.concurrency)
        del half
        asyncio.run(run_load("warm up", manager.stream, args.concurrency, 8))
        load = asyncio.run(run_load("cb", manager.stream, args.concurrency, args.max_tokens))
        step_ms = args.concurrency / load.tokens_per_sec * 1000
        steps = 10
        prof = profile(activities=[ProfilerActivity.CPU])
        step_wall = plain_decode_ms(model, args.concurrency, steps=steps, around_steps=lambda: prof)
        wall_ms = step_wall * steps
    finally:
        manager.close()
    print(
        f"plain decode step: batch 1 {plain[1]:.1f} ms, batch {args.concurrency} {plain[args.concurrency]:.1f} ms "
        f"(bf16 weights: {plain_bf16:.1f} ms, bf16/f32 = {plain_bf16 / plain[args.concurrency]:.2f})"
    )
    print(
        f"continuous batching, {args.concurrency} streams x {args.max_tokens} tokens: {load.tokens_per_sec:.1f} tok/s "
        f"= {step_ms:.1f} ms per step (x{step_ms / plain[args.concurrency]:.2f} the plain forward)"
    )
    events = prof.key_averages()
    op_ms = sum(e.self_cpu_time_total for e in events) / 1000
    print(
        f"profiled plain decode ({steps} steps, batch {args.concurrency}): ~{wall_ms:.0f} ms wall, "
        f"torch ops' self CPU time {op_ms:.0f} ms ({op_ms / wall_ms:.0%} of wall; the rest is Python between ops)"
    )
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.top))


if __name__ == "__main__":
    main()
