"""The image-path section of `make bench` (issue 15 §4): where a one-image TTFT goes today, and what overlapping
the steps of the path would buy.

    python -m benchmarks.image_path --tiny-dir models/tiny [--repeats 3]

Three parts, on one stack of real processes (benchmarks/image_path_stack.py: the tiny Ministral-3 and the 58M
bench-text checkpoint as text engines, the tiny Qwen2-VL as the captioner with max_caption_tokens 256, a second
captioner with 64, a gateway per captioner; images from a loopback HTTP server or as data URLs):

1. One image's streamed TTFT split as the gateway measures it (its `: timing` SSE comment: fetch_ms,
   vision_ms, text_ttft_ms, the same vision_ms as its "Vision processing completed in %.0fms" log line) and
   the vision engine's own caption time (the `proxy_vision` chunk's `ms`); image and caption tokens by
   `detail` and caption limit, from Describe called directly over gRPC.
2. Prefix prefill overlap, emulated without a product change: a long, unique system prompt and one image (A),
   and the same with a text-only warm-up of the same system prompt sent at the same moment (B), so the
   prefix's KV blocks are in the text engine's prefix cache when the captioned prompt arrives. The text
   engine's prefix-cache counters show whether the warm-up was reused.
3. Fetch overlap as it stands: 4 images by URL from an origin that delays each differently, vs 4 data URLs.

Every image is new (the caption cache never answers) and every prompt opens with a tag of its own (the prefix
cache starts cold) unless a row says otherwise; runs alternate between rows, figures are medians.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.images import data_url

from .image_path_stack import (
    ChatTiming,
    DelayedImageServer,
    ImagePathStack,
    describe,
    image_path_stack,
    prefix_cache_counts,
    text_only_chat,
    timed_chat,
)
from .multiturn import SYSTEM
from .vision import fresh_image

TINY_TEXT, BENCH_TEXT = "tiny-ministral", "bench-text"
CAPTION_LIMITS = (256, 64)  # max_caption_tokens of the two captioners (256 is the product default)
BIG = (1344, 1008)  # natural size 1728 Qwen2-VL tokens: above max_image_tokens (1280), so `detail` matters
SMALL = (448, 448)  # 256 tokens at its own size
FETCH_DELAYS_MS = (50, 100, 200, 400)
# A warm-up of max_tokens 1 finishes in its last prefill step, and transformers' continuous batching registers
# a step's completed KV blocks for sharing only when the request is not finished (cache.mark_complete_blocks):
# the blocks of its last prefill chunk never reach the prefix cache. Two tokens keep it running one step more.
WARM_UP_TOKENS = 2
LONG_SYSTEM_RULES = 16  # about 1,000 prompt tokens with either text model's tokenizer
PROMPT = "Describe this image:"
_tags = itertools.count(1)


def _image_message(text: str, urls: list[str], detail: str = "auto") -> dict:
    parts = [{"type": "image_url", "image_url": {"url": url, "detail": detail}} for url in urls]
    return {"role": "user", "content": [{"type": "text", "text": text}, *parts]}


def _median(values) -> float:
    values = list(values)
    return statistics.median(values) if values else 0.0


@dataclass
class SplitRow:
    """Medians of one kind of streamed image request (ms), with the gateway's split."""

    label: str
    runs: list[ChatTiming] = field(default_factory=list)

    def median(self, key: str) -> float:
        if key == "ttft":
            return _median(r.ttft_ms for r in self.runs)
        if key == "caption":
            return _median(r.caption_ms for r in self.runs)
        if key == "rest":
            return _median(r.rest_ms for r in self.runs)
        return _median(r.split.get(key, 0.0) for r in self.runs)

    def line(self) -> str:
        m = self.median
        return (
            f"  {self.label:34s} {m('ttft'):7.1f} {m('fetch_ms'):7.1f} {m('vision_ms'):7.1f} {m('caption'):8.1f} "
            f"{m('text_ttft_ms'):7.1f} {m('rest'):6.1f}   vision {100 * m('vision_ms') / m('ttft'):.0f}%"
        )


SPLIT_HEADER = f"  {'':34s} {'TTFT':>7s} {'fetch':>7s} {'vision':>7s} {'caption':>8s} {'text':>7s} {'rest':>6s}"


@dataclass
class OverlapRow:
    """Variant A or B of the emulated prefix overlap: chats, and each run's prefix-cache delta and warm-up."""

    runs: list[ChatTiming] = field(default_factory=list)
    hits: list[float] = field(default_factory=list)  # prefix-cache hit tokens during the run (all its requests)
    warmup_ms: list[float] = field(default_factory=list)
    warmup_first: list[bool] = field(default_factory=list)  # the warm-up was done before the captions were


@dataclass
class ImagePathResults:
    """Everything the section measured (medians over `repeats` runs)."""

    repeats: int
    split: list[SplitRow]
    details: dict[tuple[int, str, str], list]  # (caption limit, size label, detail) -> DescribeTimings
    overlap: dict[tuple[str, str], dict[str, OverlapRow]]  # (text model, system prompt) -> variant -> row
    fetch_url: SplitRow
    fetch_data: SplitRow
    arrivals: list[tuple[float, float]]  # per URL run: first and last image written by the origin (ms after POST)

    def report(self) -> str:
        lines = ["1. one image (448x448 JPEG), streamed TTFT split today, ms (tiny Ministral-3 text):", SPLIT_HEADER]
        lines += [row.line() for row in self.split]
        lines.append(
            "  (fetch = find+fetch/decode+check, all before the 200; vision = the Describe calls as the gateway "
            "times them; caption = the vision engine's own ms; text = the text engine's first token; rest = "
            "HTTP and framing)"
        )
        lines.append("   caption limit  image           detail  image tokens  caption tokens  caption ms")
        for (limit, size, detail), timings in self.details.items():
            lines.append(
                f"   {limit:>13d}  {size:14s}  {detail:6s}  {_median(t.image_tokens for t in timings):12.0f}  "
                f"{_median(t.caption_tokens for t in timings):14.0f}  {_median(t.engine_ms for t in timings):10.1f}"
            )
        lines.append(
            "\n2. prefix prefill overlap, emulated: B also sends the system prompt + the user's text without the "
            f"image (max_tokens {WARM_UP_TOKENS}) at the same moment; B1 the same with max_tokens 1"
        )
        lines.append(
            f"   {'text model, system prompt':30s} {'':2s} {'TTFT':>7s} {'vision':>7s} {'text':>7s}  prefix hits / prompt tokens  warm-up ms (done before the captions)"
        )
        for (model, system), variants in self.overlap.items():
            for name, row in variants.items():
                tokens = _median(r.prompt_tokens for r in row.runs)
                warm = (
                    f"{_median(row.warmup_ms):7.1f} ({sum(row.warmup_first)}/{len(row.warmup_first)})"
                    if row.warmup_ms
                    else ""
                )
                lines.append(
                    f"   {model + ', ' + system:30s} {name:2s} {_median(r.ttft_ms for r in row.runs):7.1f} "
                    f"{_median(r.split.get('vision_ms', 0) for r in row.runs):7.1f} "
                    f"{_median(r.split.get('text_ttft_ms', 0) for r in row.runs):7.1f}  "
                    f"{_median(row.hits):11.0f} / {tokens:<13.0f}  {warm}"
                )
            alone = _median(r.ttft_ms for r in variants["A"].runs)
            ratios = "   ".join(
                f"{name}/A = {_median(r.ttft_ms for r in row.runs) / alone:.2f}"
                for name, row in variants.items()
                if name != "A"
            )
            lines.append(f"   {'':30s} TTFT {ratios}")
        lines.append(
            f"\n3. fetch overlap: 4 images in one message, by URL (origin delays {'/'.join(map(str, FETCH_DELAYS_MS))} ms) vs data URLs"
        )
        lines.append(SPLIT_HEADER)
        lines += [self.fetch_url.line(), self.fetch_data.line()]
        first, last = _median(a[0] for a in self.arrivals), _median(a[1] for a in self.arrivals)
        wait = self.fetch_url.median("ttft") - self.fetch_data.median("ttft")
        lines.append(
            f"   TTFT URL - data = {wait:.1f} ms (the fetch wait); images arrived {first:.1f} .. {last:.1f} ms after "
            f"the POST: {last - first:.1f} ms between first and last = what describing each image as it "
            f"arrives could hide at most"
        )
        return "\n".join(lines)


def _split_runs(stack: ImagePathStack, server: DelayedImageServer, repeats: int) -> list[SplitRow]:
    url, data, short = (
        SplitRow("URL, max_caption_tokens 256"),
        SplitRow("data URL, max_caption_tokens 256"),
        SplitRow("URL, max_caption_tokens 64"),
    )
    for _ in range(repeats):
        for row, limit, as_url in ((url, 256, True), (data, 256, False), (short, 64, True)):
            tag = next(_tags)
            image = fresh_image(SMALL)
            source = server.add(f"/one-{tag}.jpg", image) if as_url else data_url(image)
            row.runs.append(
                timed_chat(stack.gateways[limit], TINY_TEXT, [_image_message(f"(run {tag}) {PROMPT}", [source])])
            )
    return [url, data, short]


def _detail_runs(stack: ImagePathStack, repeats: int) -> dict:
    out: dict[tuple[int, str, str], list] = {}
    cells = [(256, size, detail) for size in (SMALL, BIG) for detail in ("low", "auto", "high")]
    cells += [(64, size, "auto") for size in (SMALL, BIG)]
    for _ in range(repeats):
        for limit, size, detail in cells:
            label = f"{size[0]}x{size[1]}"
            out.setdefault((limit, label, detail), []).append(describe(stack.vision[limit], fresh_image(size), detail))
    return out


def _system_prompt(kind: str, tag: int) -> str:
    if kind == "short":
        return f"Session {tag}. You are a careful assistant."
    rules = " Rule ".join(SYSTEM.split(" Rule ")[:LONG_SYSTEM_RULES])
    return f"Session {tag}. {rules}"


def _overlap_run(
    stack: ImagePathStack, server: DelayedImageServer, model: str, kind: str, row: OverlapRow, warm_up: int
) -> None:
    """One captioned request (system prompt `kind`, one new image by URL); with `warm_up` (its max_tokens), the
    system prompt and the user's text without the image go to the text model through the gateway at the same
    moment."""
    tag = next(_tags)
    system = {"role": "system", "content": _system_prompt(kind, tag)}
    url = server.add(f"/overlap-{tag}.jpg", fresh_image(SMALL))
    base = stack.gateways[256]
    before = prefix_cache_counts(stack.text_metrics[model])[0]
    warm: dict[str, float] = {}

    def send_warm_up() -> None:
        warm["ms"] = text_only_chat(base, model, [system, {"role": "user", "content": PROMPT}], max_tokens=warm_up)
        warm["done"] = time.perf_counter()

    thread = threading.Thread(target=send_warm_up) if warm_up else None
    if thread:
        thread.start()
    chat = timed_chat(base, model, [system, _image_message(PROMPT, [url])])
    if thread:
        thread.join()
        captions_done = chat.started + (chat.split.get("fetch_ms", 0) + chat.split.get("vision_ms", 0)) / 1000
        row.warmup_ms.append(warm["ms"])
        row.warmup_first.append(warm["done"] <= captions_done)
    row.runs.append(chat)
    row.hits.append(prefix_cache_counts(stack.text_metrics[model])[0] - before)


def _overlap_runs(stack: ImagePathStack, server: DelayedImageServer, repeats: int) -> dict:
    out: dict[tuple[str, str], dict[str, OverlapRow]] = {}
    for model in (TINY_TEXT, BENCH_TEXT):
        for kind in ("long", "short"):
            # B1 (a warm-up of max_tokens 1) only where there is a prefix to reuse
            names = ("A", "B", "B1") if kind == "long" else ("A", "B")
            out[(model, kind)] = {name: OverlapRow() for name in names}
    warm_up_tokens = {"A": 0, "B": WARM_UP_TOKENS, "B1": 1}
    for _ in range(repeats):
        for (model, kind), variants in out.items():
            for name, row in variants.items():
                _overlap_run(stack, server, model, kind, row, warm_up_tokens[name])
    return out


def _fetch_runs(stack: ImagePathStack, server: DelayedImageServer, repeats: int):
    by_url, by_data = SplitRow("4 URLs, delayed"), SplitRow("4 data URLs")
    arrivals = []
    for _ in range(repeats):
        tag = next(_tags)
        paths = [f"/fetch-{tag}-{i}.jpg" for i in range(len(FETCH_DELAYS_MS))]
        urls = [server.add(p, fresh_image(SMALL), d / 1000) for p, d in zip(paths, FETCH_DELAYS_MS)]
        chat = timed_chat(stack.gateways[256], TINY_TEXT, [_image_message(f"(run {tag}) {PROMPT}", urls)])
        by_url.runs.append(chat)
        sent = sorted((server.sent[p] - chat.started) * 1000 for p in paths)
        arrivals.append((sent[0], sent[-1]))
        tag = next(_tags)
        datas = [data_url(fresh_image(SMALL)) for _ in FETCH_DELAYS_MS]
        by_data.runs.append(
            timed_chat(stack.gateways[256], TINY_TEXT, [_image_message(f"(run {tag}) {PROMPT}", datas)])
        )
    return by_url, by_data, arrivals


def _warm_up(stack: ImagePathStack, server: DelayedImageServer) -> None:
    """First-call costs (allocations, lazy imports, the first compile of each shape) out of the figures."""
    for limit in CAPTION_LIMITS:
        describe(stack.vision[limit], fresh_image(SMALL))
        for model in (TINY_TEXT, BENCH_TEXT):
            tag = next(_tags)
            timed_chat(
                stack.gateways[limit],
                model,
                [_image_message(f"(warm-up {tag}) {PROMPT}", [server.add(f"/warm-{tag}.jpg", fresh_image())])],
            )


def run_image_path_section(tiny_dir: str | Path, work: Path, repeats: int = 3) -> ImagePathResults:
    """Start the stack and the image origin, measure the three parts (runs alternated, `repeats` of each), stop
    everything; returns the results (`.report()` prints them)."""
    tiny = Path(tiny_dir).resolve()
    text_models = {TINY_TEXT: str(tiny / "ministral-3-tiny"), BENCH_TEXT: str(tiny / "bench-text")}
    server = DelayedImageServer()
    try:
        with image_path_stack(text_models, str(tiny / "qwen2-vl-tiny"), work, CAPTION_LIMITS) as stack:
            _warm_up(stack, server)
            split = _split_runs(stack, server, repeats)
            details = _detail_runs(stack, repeats)
            overlap = _overlap_runs(stack, server, repeats)
            by_url, by_data, arrivals = _fetch_runs(stack, server, repeats)
    finally:
        server.close()
    return ImagePathResults(repeats, split, details, overlap, by_url, by_data, arrivals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny-dir", default="models/tiny", help="where the tiny text and vision models are")
    parser.add_argument("--repeats", type=int, default=3, help="runs of every row (medians)")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pv-image-path-") as tmp:
        results = run_image_path_section(args.tiny_dir, Path(tmp), args.repeats)
    print(
        f"\nProxyVision image path (tiny Qwen2-VL captions; tiny Ministral-3 and the 58M bench-text as text models; "
        f"medians of {args.repeats}; {time.monotonic() - started:.0f} s)"
    )
    print(results.report())


if __name__ == "__main__":
    main()
