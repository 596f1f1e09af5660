"""A/Bs of the engine step's knobs (issue 15 §2), each in one run with its baseline, alternated round by round.

* `compile`: transformers' continuous batching with `default_compile_level=1` (its varlen forward under
  `torch.compile`, dynamic shapes; on a CPU the decode fast path, and so `decode_compile_config`, is not
  available: it needs flash attention on CUDA) vs eager. The compile warm-up is reported apart.
* `threads`: torch intra-op threads of the engine, 2 (one per core, torch's default here) vs 1, both in-process and
  as the full stack (engine process with OMP_NUM_THREADS=1, leaving a core to the gateway and the client).
* `chunk`: the batch-token budget per forward (`params.prefill_chunk_size`, the manager's `max_batch_tokens`), with
  16 prompts of ~300 tokens arriving at once: TTFT and throughput per budget.

`python -m benchmarks.engine_ab --model-dir models/tiny/bench-text [--sections compile,threads,chunk]`.
The cache is the text bench's (64 blocks x 64 tokens), so figures compare with `make bench`'s text section.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import math
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from services.common.config import ModelParams
from services.common.hf_models import MIB, kv_bytes_per_token

from .inprocess import InProcessManager
from .load import PROMPTS, Summary, openai_stream_fn, run_load
from .servers import our_stack

MODEL_NAME = "bench-text"


def bench_params(model_dir: str, concurrency: int, num_blocks: int, block_size: int = 64, **overrides) -> dict:
    """The text bench's params: a cache of num_blocks x block_size tokens, f32, one slot per stream."""
    from transformers import AutoConfig

    per_token = kv_bytes_per_token(AutoConfig.from_pretrained(model_dir).get_text_config(), torch.float32)
    mem = max(1, math.ceil(num_blocks * block_size * per_token / MIB))
    return {
        "mem": mem,
        "dtype": "f32",
        "max_num_seqs": concurrency,
        "prefill_chunk_size": 1024,
        "block_size": block_size,
        **overrides,
    }


async def alternate(
    contenders: dict[str, Callable], concurrency: int, max_tokens: int, rounds: int
) -> dict[str, Summary]:
    """Each contender once per round, in turn (the machine's speed drifts; alternating spreads it evenly)."""
    runs: dict[str, list] = {key: [] for key in contenders}
    for _ in range(rounds):
        for key, fn in contenders.items():
            runs[key].append(await run_load(key, fn, concurrency, max_tokens))
    return {key: Summary(key, results) for key, results in runs.items()}


def print_table(title: str, summaries: dict[str, Summary], baseline: str) -> None:
    print(f"\n{title}")
    base = summaries[baseline]
    for summary in summaries.values():
        print(f"  {summary.row()}")
        print(
            f"      vs {baseline}: tok/s x{summary.tokens_per_sec / base.tokens_per_sec:.2f}, "
            f"TTFT p50 x{summary.ttft_pct(50) / base.ttft_pct(50):.2f}"
        )


def compile_section(model_dir: str, args) -> None:
    params = ModelParams(**bench_params(model_dir, args.concurrency, args.num_blocks))
    eager = InProcessManager(model_dir, params)
    started = time.perf_counter()
    compiled = InProcessManager(model_dir, params, default_compile_level=1)

    async def go():
        await run_load("warm up", compiled.stream, args.concurrency, 8)
        warm = time.perf_counter() - started
        await run_load("warm up", eager.stream, args.concurrency, 8)
        contenders = {"eager": eager.stream, "compile level 1": compiled.stream}
        return warm, await alternate(contenders, args.concurrency, args.compile_tokens, args.rounds)

    try:
        warm, summaries = asyncio.run(go())
    finally:
        eager.close(), compiled.close()
    print_table(
        f"torch.compile of the CB forward ({args.concurrency} streams x {args.compile_tokens} tokens; "
        f"compile load + warm-up {warm:.0f} s)",
        summaries,
        "eager",
    )


def threads_section(model_dir: str, args, work: Path) -> None:
    """The full stack twice, the engine process with torch's default threads (one per core) and with one
    (OMP_NUM_THREADS=1), so the gateway and the client get the other core. (An in-process A/B would need the
    setting on the manager's own thread: OpenMP's thread count is per thread.)"""
    params = bench_params(model_dir, args.concurrency, args.num_blocks)
    threads = torch.get_num_threads()
    one_dir, default_dir = work / "threads-1", work / "threads-default"
    one_dir.mkdir(), default_dir.mkdir()
    with (
        our_stack(model_dir, MODEL_NAME, params, default_dir) as default_stack,
        our_stack(model_dir, MODEL_NAME, params, one_dir, engine_env={"OMP_NUM_THREADS": "1"}) as one_stack,
    ):
        contenders = {
            f"engine {threads} threads": openai_stream_fn(default_stack.base_url, MODEL_NAME),
            "engine 1 thread": openai_stream_fn(one_stack.base_url, MODEL_NAME),
        }

        async def go():
            for fn in contenders.values():
                await run_load("warm up", fn, args.concurrency, 8)
            return await alternate(contenders, args.concurrency, args.max_tokens, args.rounds)

        summaries = asyncio.run(go())
    print_table(
        f"engine torch threads, gateway+engine stack ({args.concurrency} streams x {args.max_tokens} tokens)",
        summaries,
        f"engine {threads} threads",
    )


def chunk_section(model_dir: str, args) -> None:
    budgets = [int(b) for b in args.chunks.split(",")]
    # Longer prompts (~300 tokens each), all at once: the budget decides how many prefill in one forward.
    long_prompts = [(p + " ") * 12 for p in PROMPTS]
    managers = {
        f"max_batch_tokens {b}": InProcessManager(
            model_dir,
            ModelParams(**bench_params(model_dir, args.concurrency, args.num_blocks * 2, prefill_chunk_size=b)),
        )
        for b in budgets
    }

    def long_stream(manager: InProcessManager):
        counter = iter(range(10**9))

        async def one(prompt: str, max_tokens: int):
            return await manager.stream(long_prompts[next(counter) % len(long_prompts)], max_tokens)

        return one

    async def go():
        contenders = {key: long_stream(m) for key, m in managers.items()}
        for fn in contenders.values():
            await run_load("warm up", fn, args.concurrency, 4)
        return await alternate(contenders, args.concurrency, args.max_tokens, args.rounds)

    try:
        summaries = asyncio.run(go())
    finally:
        for manager in managers.values():
            manager.close()
    print_table(
        f"batch-token budget ({args.concurrency} prompts of ~300 tokens at once x {args.max_tokens} tokens)",
        summaries,
        "max_batch_tokens 1024",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--compile-tokens", type=int, default=16, help="tokens per stream in the compile A/B")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-blocks", type=int, default=64)
    parser.add_argument("--chunks", default="256,512,1024,4096", help="max_batch_tokens values of the chunk A/B")
    parser.add_argument("--sections", default="threads,chunk,compile")
    args = parser.parse_args()
    model_dir = str(Path(args.model_dir).resolve())
    print(
        f"engine A/Bs  {datetime.date.today()}  {platform.node()}  torch {torch.__version__}  "
        f"cores={__import__('os').cpu_count()}  model {model_dir}  medians of {args.rounds} alternated rounds"
    )
    sections = args.sections.split(",")
    with tempfile.TemporaryDirectory(prefix="pv-ab-") as tmp:
        for section in sections:
            if section == "compile":
                compile_section(model_dir, args)
            elif section == "threads":
                threads_section(model_dir, args, Path(tmp))
            elif section == "chunk":
                chunk_section(model_dir, args)
            else:
                raise SystemExit(f"unknown section {section!r}")


if __name__ == "__main__":
    main()
