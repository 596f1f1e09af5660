"""The memory-budget sweep and the cold start after an idle unload, through our gateway and engine.

Sweep: the same 16-stream load at `params.mem` = 64, 256 and 1024 MiB (the engine turns the budget into KV
blocks; GetModelInfo says how many tokens that bought). Cold start: the time to first token of a request
that finds the model unloaded (it waits for the reload) against the same request on a loaded model.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from services.common.pb.proxyvision.v1 import common_pb2, text_engine_pb2_grpc

from .load import Summary, openai_stream_fn, run_load
from .servers import our_stack

IDLE_SECS = 2


@dataclass(frozen=True)
class SweepRow:
    """One budget of the sweep."""

    mem_mib: int
    kv_tokens: int
    summary: Summary


@dataclass(frozen=True)
class ColdStart:
    """Cold and warm TTFT (medians), and the engine's own load time."""

    cold_ttft: list[float]
    warm_ttft: list[float]
    load_seconds: list[float]


def model_info(address: str) -> common_pb2.ModelInfo:
    with grpc.insecure_channel(address) as channel:
        return text_engine_pb2_grpc.TextEngineStub(channel).GetModelInfo(common_pb2.GetModelInfoRequest(), timeout=10)


def budget_sweep(
    model_dir: str,
    model_name: str,
    params: dict,
    work: Path,
    budgets: tuple[int, ...],
    concurrency: int,
    max_tokens: int,
    rounds: int,
) -> list[SweepRow]:
    rows = []
    for mem in budgets:
        with our_stack(model_dir, model_name, {**params, "mem": mem}, work) as stack:
            fn = openai_stream_fn(stack.base_url, model_name)

            async def measure():
                await run_load("warm up", fn, concurrency, 8)
                return [await run_load(f"mem={mem} MiB", fn, concurrency, max_tokens) for _ in range(rounds)]

            runs = asyncio.run(measure())
            rows.append(
                SweepRow(mem, model_info(stack.engine_address).kv_cache_tokens, Summary(f"mem={mem} MiB", runs))
            )
    return rows


def cold_start(
    model_dir: str, model_name: str, params: dict, work: Path, repeats: int, max_tokens: int = 8
) -> ColdStart:
    with our_stack(model_dir, model_name, params, work, idle_unload_secs=IDLE_SECS) as stack:
        return asyncio.run(_cold_start(stack, model_name, repeats, max_tokens))


async def _cold_start(stack, model_name: str, repeats: int, max_tokens: int) -> ColdStart:
    fn = openai_stream_fn(stack.base_url, model_name)
    cold, warm, loads = [], [], []
    for _ in range(repeats):
        deadline = time.monotonic() + 60
        while model_info(stack.engine_address).state != common_pb2.MODEL_STATE_UNLOADED:
            if time.monotonic() > deadline:
                raise RuntimeError("the engine did not unload within 60 s")
            await asyncio.sleep(0.1)
        cold.append((await fn("What is the capital of France and why?", max_tokens)).ttft)
        loads.append(model_info(stack.engine_address).last_load_seconds)
        warm.append((await fn("What is the capital of France and why?", max_tokens)).ttft)  # the model is loaded now
    return ColdStart(cold, warm, loads)


def report(rows: list[SweepRow], cold: ColdStart, concurrency: int, max_tokens: int) -> str:
    lines = [
        f"budget sweep: {concurrency} concurrent streams x {max_tokens} tokens through gateway + engine, medians",
        f"  {'mem':>9} {'KV cache':>14} {'tok/s':>8} {'TTFT p50':>10} {'TTFT p95':>10}",
    ]
    for row in rows:
        s = row.summary
        lines.append(
            f"  {row.mem_mib:>5} MiB {row.kv_tokens:>7} tokens {s.tokens_per_sec:8.1f} "
            f"{s.ttft_pct(50) * 1000:8.1f}ms {s.ttft_pct(95) * 1000:8.1f}ms"
        )
    c, w = statistics.median(cold.cold_ttft), statistics.median(cold.warm_ttft)
    lines += [
        f"cold start after an idle unload ({len(cold.cold_ttft)} times, medians):",
        f"  TTFT cold {c * 1000:.1f} ms (engine load {statistics.median(cold.load_seconds) * 1000:.1f} ms)"
        f"  vs warm {w * 1000:.1f} ms  ->  cold/warm = {c / w:.1f}",
    ]
    return "\n".join(lines)
