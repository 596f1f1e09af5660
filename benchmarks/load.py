"""The load every contender gets: N concurrent streaming chats, each asking for T tokens.

Measures, per request, time to first token (TTFT) and tokens generated; overall, completion tokens
per second of wall time. Used against OpenAI-compatible servers (ours, `transformers serve`) through
the official SDK, and against the in-process manager through a callable with the same shape.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

PROMPTS = [
    "Tell me a story about a lighthouse keeper.",
    "Explain how a bicycle stays upright.",
    "Write a short poem about the sea.",
    "What is the capital of France and why?",
]


@dataclass(frozen=True)
class StreamResult:
    """One request: seconds to its first token, tokens generated."""

    ttft: float
    tokens: int


@dataclass(frozen=True)
class LoadResult:
    """One load run."""

    label: str
    concurrency: int
    tokens: int
    wall: float
    ttfts: list[float]

    @property
    def tokens_per_sec(self) -> float:
        return self.tokens / self.wall

    def ttft_pct(self, pct: float) -> float:
        ordered = sorted(self.ttfts)
        return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]

    def row(self) -> str:
        return (
            f"{self.label:<34} c={self.concurrency:<3} {self.tokens_per_sec:8.1f} tok/s  "
            f"TTFT p50 {self.ttft_pct(50) * 1000:7.1f} ms  p95 {self.ttft_pct(95) * 1000:7.1f} ms  "
            f"({self.tokens} tokens in {self.wall:.2f}s)"
        )


StreamFn = Callable[[str, int], Awaitable[StreamResult]]


async def run_load(label: str, stream_fn: StreamFn, concurrency: int, max_tokens: int) -> LoadResult:
    """Start `concurrency` streams at once and wait for all."""
    started = time.perf_counter()
    results = await asyncio.gather(*(stream_fn(PROMPTS[i % len(PROMPTS)], max_tokens) for i in range(concurrency)))
    wall = time.perf_counter() - started
    return LoadResult(label, concurrency, sum(r.tokens for r in results), wall, [r.ttft for r in results])


def openai_stream_fn(base_url: str, model: str, **extra) -> StreamFn:
    """A StreamFn that calls an OpenAI-compatible server with the official SDK (`extra`: more request fields)."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=600)

    async def one(prompt: str, max_tokens: int) -> StreamResult:
        started = time.perf_counter()
        first = None
        chunks = 0
        usage_tokens = None
        stream = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            **extra,
        )
        async for chunk in stream:
            if chunk.usage is not None:
                usage_tokens = chunk.usage.completion_tokens
            if chunk.choices and chunk.choices[0].delta.content:
                chunks += 1
                if first is None:
                    first = time.perf_counter() - started
        return StreamResult(first if first is not None else time.perf_counter() - started, usage_tokens or chunks)

    return one


@dataclass(frozen=True)
class Summary:
    """Several runs of one contender and load: medians across runs."""

    label: str
    runs: list[LoadResult]

    @property
    def tokens_per_sec(self) -> float:
        return statistics.median(r.tokens_per_sec for r in self.runs)

    def ttft_pct(self, pct: float) -> float:
        return statistics.median(r.ttft_pct(pct) for r in self.runs)

    def row(self) -> str:
        return (
            f"{self.label:<38} c={self.runs[0].concurrency:<3} {self.tokens_per_sec:8.1f} tok/s  "
            f"TTFT p50 {self.ttft_pct(50) * 1000:7.1f} ms  p95 {self.ttft_pct(95) * 1000:7.1f} ms  "
            f"(median of {len(self.runs)}; tok/s range {min(r.tokens_per_sec for r in self.runs):.0f}-"
            f"{max(r.tokens_per_sec for r in self.runs):.0f})"
        )
