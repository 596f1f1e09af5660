"""`make loadtest`: many concurrent clients against the three services on the tiny stand-ins; nothing lost.

Clients (200 by default) each send one chat request at once: a mix of text and image requests (data URLs and
http URLs of fresh images, so captions are really made), streamed and not, and about a quarter of them leave
early (a stream after its first chunk, a plain request after a short random wait). Every outcome is one of:
  succeeded     200 and a complete answer (a stream: a finish_reason, no error event, then [DONE])
  refused       503 or 429 before the first byte, with Retry-After (the SDKs retry those)
  disconnected  the client left on purpose
  lost          anything else: a 5xx, a stream that answered 200 and then failed or broke off, a timeout
Three rounds (the first, then two more); it prints the counts, latency percentiles of the successes, the RSS of
each process before the first and after the last round, and the in-flight gauges once the load is over, which
must be back to 0. Exit status 1 when anything was lost or a gauge stayed up.

    python -m benchmarks.loadtest [--clients 200] [--rounds 3] [--max-tokens 16]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

from services.model_builder.build import build_all
from tests.support.http_servers import ScriptedServer
from tests.support.images import data_url, png
from tests.support.metrics import scrape
from tests.support.models_yaml import TEXT_MODEL, tiny
from tests.support.stack import make_stack

REPO_ROOT = Path(__file__).resolve().parents[1]
OUTCOMES = ("succeeded", "refused", "disconnected", "lost")
_colours = itertools.count(1)


def fresh_png() -> bytes:
    """An image the caption cache has never seen."""
    n = next(_colours)
    return png(((n * 37) % 256, (n * 91) % 256, (n * 53) % 256), size=(64, 48))


class Load:
    """One round of clients; collects outcomes, latencies and what went wrong (for the lost ones)."""

    def __init__(self, base_url: str, images: ScriptedServer, max_tokens: int, rng: random.Random) -> None:
        self.base_url, self.images, self.max_tokens, self.rng = base_url, images, max_tokens, rng
        self.outcomes: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.lost: list[str] = []

    def body(self, kind: str, stream: bool) -> dict:
        content: list[dict] | str = f"Say something about load number {self.rng.randrange(10**6)}."
        if kind == "image":
            if self.rng.random() < 0.5:
                url = data_url(fresh_png())
            else:
                path = f"/load-{next(_colours)}.png"
                self.images.add(path, fresh_png(), "image/png")
                url = f"{self.images.base}{path}"
            content = [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": url}},
            ]
        return {
            "model": TEXT_MODEL,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": self.max_tokens,
            "stream": stream,
            "temperature": 0.7,
        }

    async def one(self, client: httpx.AsyncClient) -> None:
        kind = "image" if self.rng.random() < 0.4 else "text"
        stream = self.rng.random() < 0.6
        leave = self.rng.random() < 0.25
        started = time.monotonic()
        try:
            outcome, detail = await (self._stream if stream else self._plain)(client, self.body(kind, stream), leave)
        except (TimeoutError, httpx.HTTPError) as exc:
            outcome, detail = "lost", f"{type(exc).__name__}: {exc}"
        self.outcomes[outcome] += 1
        if outcome == "succeeded":
            self.latencies.append(time.monotonic() - started)
        if outcome == "lost":
            self.lost.append(f"{kind} {'stream' if stream else 'plain'}: {detail}")

    @staticmethod
    def _refusal(reply: httpx.Response) -> tuple[str, str]:
        if reply.status_code in (429, 503) and reply.headers.get("retry-after"):
            return "refused", ""
        return "lost", f"HTTP {reply.status_code}: {reply.text[:200]}"

    async def _plain(self, client, body, leave) -> tuple[str, str]:
        request = asyncio.ensure_future(client.post("/v1/chat/completions", json=body))
        if leave:
            await asyncio.sleep(self.rng.uniform(0.0, 1.0))
            if not request.done():
                request.cancel()
                await asyncio.gather(request, return_exceptions=True)
                return "disconnected", ""
        reply = await request
        if reply.status_code != 200:
            return self._refusal(reply)
        answer = reply.json()
        ok = answer.get("choices") and answer["choices"][0].get("finish_reason") in ("stop", "length")
        return ("succeeded", "") if ok else ("lost", f"incomplete answer {json.dumps(answer)[:200]}")

    async def _stream(self, client, body, leave) -> tuple[str, str]:
        async with client.stream("POST", "/v1/chat/completions", json=body) as reply:
            if reply.status_code != 200:
                await reply.aread()
                return self._refusal(reply)
            finish, done = None, False
            async for line in reply.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if leave:
                    return "disconnected", ""  # left after the first chunk: the context manager closes it
                data = line.removeprefix("data: ")
                if data == "[DONE]":
                    done = True
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    return "lost", f"error event after 200: {chunk['error']}"
                for choice in chunk.get("choices", []):
                    finish = choice.get("finish_reason") or finish
        if done and finish in ("stop", "length"):
            return "succeeded", ""
        return "lost", f"stream ended without an answer (finish={finish}, done={done})"


async def run_round(base_url: str, images: ScriptedServer, clients: int, max_tokens: int, seed: int) -> Load:
    load = Load(base_url, images, max_tokens, random.Random(seed))
    limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=clients + 10)
    async with httpx.AsyncClient(base_url=base_url, timeout=600, limits=limits) as client:
        await asyncio.gather(*(load.one(client) for _ in range(clients)))
    return load


def rss_mib(stack) -> dict[str, float]:
    return {
        name: psutil.Process(service.proc.pid).memory_info().rss / 2**20
        for name, service in (("gateway", stack.gateway), ("text", stack.text), ("vision", stack.vision))
    }


def gauges(stack) -> dict[str, float]:
    """The in-flight gauges, once every client is gone (given a few seconds to settle: cancellations travel)."""
    deadline = time.monotonic() + 15
    while True:
        values = {"gateway running": scrape(stack.metrics_url("gateway")).value("proxyvision_gateway_requests_running")}
        for service in ("text", "vision"):
            sample = scrape(stack.metrics_url(service))
            values[f"{service} running"] = sample.value("proxyvision_requests_running")
            values[f"{service} waiting"] = sample.value("proxyvision_requests_waiting")
        if not any(values.values()) or time.monotonic() > deadline:
            return values
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    models = build_all(REPO_ROOT / "models" / "tiny", only={"text", "vision"})
    images = ScriptedServer({})
    with tempfile.TemporaryDirectory(prefix="pv-loadtest-") as tmp:
        config = tiny(models, vision=True, text_params={"max_num_seqs": 16, "max_queue": 64})
        config.gateway(request_timeout_secs=300, images={"allow_private_networks": ["127.0.0.0/8"]})
        stack = make_stack(Path(tmp), models, config=config, gateway_args=())
        try:
            before = rss_mib(stack)
            rounds = []
            for i in range(args.rounds):
                started = time.monotonic()
                load = asyncio.run(run_round(stack.base_url, images, args.clients, args.max_tokens, seed=i))
                rounds.append((load, time.monotonic() - started))
            after = rss_mib(stack)
            settled = gauges(stack)
        finally:
            stack.stop()
            images.close()
    total: Counter[str] = Counter()
    print(
        f"\nProxyVision load test ({time.strftime('%Y-%m-%d')}): {args.clients} concurrent clients x {args.rounds} "
        f"rounds, max_tokens {args.max_tokens}, 40% image, 60% streamed, 25% leave early"
    )
    print(
        f"{'round':>5} {'sent':>5} "
        + " ".join(f"{o:>12}" for o in OUTCOMES)
        + f" {'p50 s':>7} {'p95 s':>7} {'wall s':>7}"
    )
    for i, (load, wall) in enumerate(rounds, 1):
        total += load.outcomes
        lat = sorted(load.latencies) or [0.0]
        p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
        print(
            f"{i:>5} {sum(load.outcomes.values()):>5} "
            + " ".join(f"{load.outcomes[o]:>12}" for o in OUTCOMES)
            + f" {statistics.median(lat):>7.2f} {p95:>7.2f} {wall:>7.1f}"
        )
    print("RSS MiB before -> after: " + ", ".join(f"{k} {before[k]:.0f} -> {after[k]:.0f}" for k in before))
    print("gauges after the load: " + ", ".join(f"{k} {v:g}" for k, v in settled.items()))
    lost = [line for load, _ in rounds for line in load.lost]
    for line in lost[:20]:
        print("  lost:", line)
    ok = total["lost"] == 0 and not any(settled.values())
    print(f"lost = {total['lost']}, gauges back to 0: {not any(settled.values())} -> {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
