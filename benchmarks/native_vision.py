"""The native-vision section of `make bench`: one image answered natively vs through the proxy, 1 vs 4 images
natively, and the caption cache in a three-turn conversation that re-sends its image.

One stack of real processes (benchmarks/servers.py `native_stack`): the tiny Ministral-3 served twice by text
engines, once text-only (its images are captioned by the tiny Qwen2-VL vision engine: the proxy path) and once
with `vision_mode: native` (its Pixtral tower looks at the images itself). Both answer with the same text model,
so the difference is the caption. The three-turn rows run the proxy path twice, on a vision engine with its
caption cache and on one without (`cache_max_entries: 0`). Every image that must not be cached is new.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass

import httpx

from tests.support.images import data_url

from .vision import fresh_image

PROMPT = "Describe this image:"


def _image_part(data: bytes) -> dict:
    return {"type": "image_url", "image_url": {"url": data_url(data)}}


@dataclass(frozen=True)
class Timed:
    """One streamed answer: time to its first token and to its end (ms), its text, and its proxy_vision report."""

    ttft_ms: float
    total_ms: float
    text: str
    captions: tuple[dict, ...] = ()


def stream_chat(base_url: str, model: str, messages: list[dict], max_tokens: int) -> Timed:
    """POST a streamed chat; time the first reasoning or content delta and the end of the stream."""
    body = {"model": model, "stream": True, "max_tokens": max_tokens, "temperature": 0, "messages": messages}
    started = time.perf_counter()
    ttft, text, captions = None, [], ()
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=600) as reply:
        reply.raise_for_status()
        for line in reply.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(f"{model}: {chunk['error']}")
            captions = tuple(chunk.get("proxy_vision", {}).get("images", ())) or captions
            for choice in chunk.get("choices", ()):
                delta = choice.get("delta", {})
                piece = (delta.get("content") or "") + (delta.get("reasoning_content") or "")
                if piece and ttft is None:
                    ttft = (time.perf_counter() - started) * 1000
                text.append(delta.get("content") or "")
    total = (time.perf_counter() - started) * 1000
    return Timed(ttft if ttft is not None else total, total, "".join(text), captions)


def one_turn(images: list[bytes]) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": PROMPT}, *(_image_part(d) for d in images)]}]


def _median(runs: list[Timed]) -> tuple[float, float]:
    return statistics.median(r.ttft_ms for r in runs), statistics.median(r.total_ms for r in runs)


@dataclass
class NativeResults:
    """Medians (ms) of every row of the section."""

    max_tokens: int
    native_one: tuple[float, float]
    proxy_one: tuple[float, float]
    native_four: tuple[float, float]
    turns_cached: list[tuple[float, bool]]  # per turn: TTFT, whether every caption came from the cache
    turns_uncached: list[tuple[float, bool]]

    def report(self) -> str:
        (nt, ntot), (pt, ptot), (ft, ftot) = self.native_one, self.proxy_one, self.native_four
        lines = [
            f"one image, {self.max_tokens} tokens          TTFT ms   total ms",
            f"  native (Pixtral tower)        {nt:8.1f}  {ntot:8.1f}",
            f"  proxy (caption, then text)    {pt:8.1f}  {ptot:8.1f}   native/proxy: TTFT {nt / pt:.2f}, total {ntot / ptot:.2f}",
            f"native, 4 images in one message {ft:8.1f}  {ftot:8.1f}   4/1: TTFT {ft / nt:.2f}, total {ftot / ntot:.2f}",
            "three-turn conversation re-sending one image (proxy), TTFT ms per turn:",
        ]
        for label, turns in (
            ("with the caption cache", self.turns_cached),
            ("without (cache_max_entries 0)", self.turns_uncached),
        ):
            cells = "  ".join(
                f"turn {i + 1} {ms:7.1f}{' (cached)' if cached else ''}" for i, (ms, cached) in enumerate(turns)
            )
            lines.append(f"  {label:30s} {cells}")
        later = statistics.mean(ms for ms, _ in self.turns_cached[1:]) / statistics.mean(
            ms for ms, _ in self.turns_uncached[1:]
        )
        lines.append(f"  turns 2-3 TTFT, cached / uncached = {later:.2f}")
        return "\n".join(lines)


def three_turns(base_url: str, model: str, image: bytes, max_tokens: int) -> list[tuple[float, bool]]:
    """A conversation whose first user message carries `image`; every turn re-sends the whole history."""
    messages = one_turn([image])
    out = []
    for turn in range(3):
        answer = stream_chat(base_url, model, messages, max_tokens)
        out.append((answer.ttft_ms, bool(answer.captions) and all(c.get("cached") for c in answer.captions)))
        messages = [
            *messages,
            {"role": "assistant", "content": answer.text or "..."},
            {"role": "user", "content": f"Tell me more ({turn + 2})."},
        ]
    return out


def run_native_section(
    base_url: str, native_model: str, proxy_model: str, uncached_base_url: str, repeats: int = 3, max_tokens: int = 16
) -> NativeResults:
    """Measure every row; medians of `repeats` (contenders alternated run by run, fresh images each time)."""
    for model in (native_model, proxy_model):  # warm-up: first-call costs (allocations, lazy imports)
        stream_chat(base_url, model, one_turn([fresh_image()]), 4)
    stream_chat(uncached_base_url, proxy_model, one_turn([fresh_image()]), 4)
    native, proxy, four = [], [], []
    for _ in range(repeats):
        native.append(stream_chat(base_url, native_model, one_turn([fresh_image()]), max_tokens))
        proxy.append(stream_chat(base_url, proxy_model, one_turn([fresh_image()]), max_tokens))
        four.append(stream_chat(base_url, native_model, one_turn([fresh_image() for _ in range(4)]), max_tokens))
    cached_runs, uncached_runs = [], []
    for _ in range(repeats):
        cached_runs.append(three_turns(base_url, proxy_model, fresh_image(), max_tokens))
        uncached_runs.append(three_turns(uncached_base_url, proxy_model, fresh_image(), max_tokens))

    def per_turn(runs):
        return [(statistics.median(r[t][0] for r in runs), all(r[t][1] for r in runs)) for t in range(3)]

    return NativeResults(
        max_tokens, _median(native), _median(proxy), _median(four), per_turn(cached_runs), per_turn(uncached_runs)
    )
