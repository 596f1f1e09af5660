"""Scale-out that keeps caches warm (issue 16 §4): the rendered chart's processes with 3 replicas of each engine,
round-robin vs affinity vs affinity + the shared Redis caption cache, in one run.

Each variant renders the chart (examples/cpu-demo.yaml, `engineDefaults.replicas: 3`, the routing and cache
values of the variant) and runs its Deployments as local processes (tests/deploy/local_cluster.py: each
container's own command, args and env; only addresses, ports and paths rewritten). The load: 20 conversations
at once, 5 turns each; every turn re-sends the conversation's history and its one image (unique to the
conversation) and streams the answer. Measured per variant:

* caption cache hit rate of turns 2-5 (what every user sees: `proxy_vision.images[].cached` of each answer),
  and the captions the vision replicas computed (their in-process misses not answered by Redis);
* text time to first token of turns 2-5 (p50, p90) and the prefix cache's hit ratio on the text replicas;
* CPU seconds the engine processes spent (user + system, from /proc) during the load.

`--kill-vision` adds the affinity variants again with one vision replica SIGKILLed after turn 2: no request may
fail, and the captions recomputed afterwards are the killed replica's share of the images (with Redis: none).

`python -m benchmarks.scale_out` (about 10 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import datetime
import json
import platform
import signal
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from tests.deploy.chart import NAMESPACE, RELEASE, example_values, render
from tests.deploy.local_cluster import LocalCluster, LocalPod, sample, scrape

from .vision import fresh_image

TEXT, VISION = "ministral-3-3b-reasoning", "qwen2-vl-7b"
QUESTIONS = [
    "What is in this picture?",
    "What colour is the top-left corner?",
    "Is there any text?",
    "Describe the background.",
    "Summarise what we said.",
]


@dataclass
class Variant:
    """One configuration of the chart."""

    label: str
    text_routing: str
    vision_routing: str
    redis: bool = False
    kill_vision_after_turn: int | None = None


@dataclass
class Turn:
    """One answer as the client saw it."""

    conversation: int
    turn: int
    ttft_ms: float
    cached: tuple[bool, ...]
    error: str = ""


@dataclass
class VariantResult:
    """What one variant measured."""

    variant: Variant
    turns: list[Turn] = field(default_factory=list)
    captions_computed: float = 0
    computed_after_kill: float = 0
    killed_share: float = 0
    prefix_hit_ratio: float = 0
    shared_errors: float = 0  # shared-cache lookups Redis did not answer (timeout, down, breaker open)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0

    def later(self) -> list[Turn]:
        return [t for t in self.turns if t.turn >= 2 and not t.error]

    @property
    def errors(self) -> int:
        return sum(1 for t in self.turns if t.error)

    @property
    def hit_rate(self) -> float:
        flags = [c for t in self.later() for c in t.cached]
        return sum(flags) / len(flags) if flags else 0.0

    def ttft(self, pct: float) -> float:
        values = sorted(t.ttft_ms for t in self.later())
        return values[min(len(values) - 1, round(pct / 100 * (len(values) - 1)))] if values else float("nan")

    def row(self) -> str:
        kill = (
            f"  recomputed after the kill {self.computed_after_kill:.0f} (killed replica's share {self.killed_share:.0f})"
            if self.variant.kill_vision_after_turn
            else ""
        )
        if self.variant.redis:
            kill += f"  shared cache errors {self.shared_errors:.0f}"
        return (
            f"{self.variant.label:<40} hit rate {self.hit_rate:4.2f}  captions computed {self.captions_computed:4.0f}  "
            f"TTFT t2-5 p50 {self.ttft(50):7.1f} ms p90 {self.ttft(90):7.1f} ms  prefix hits {self.prefix_hit_ratio:4.2f}  "
            f"CPU s text {self.cpu_seconds.get('text', 0):6.1f} vision {self.cpu_seconds.get('vision', 0):6.1f}  "
            f"errors {self.errors}  wall {self.wall_s:5.1f} s{kill}"
        )


def chart_values(variant: Variant, replicas: int, caption_tokens: int) -> dict:
    values = example_values("cpu-demo")
    models = values["modelsConfig"]["models"]
    vision = next(m for m in models if m["name"] == VISION)
    vision["capabilities"]["vision_proxy"]["max_caption_tokens"] = caption_tokens
    values["modelsConfig"]["gateway"] = {
        "routing": {"text": variant.text_routing, "vision": variant.vision_routing, "load_guard_gap": 8}
    }
    values["engineDefaults"]["replicas"] = replicas
    if variant.redis:
        values["captionCache"] = {"redis": {"enabled": True}}
    return values


def cpu_seconds(pods: list[LocalPod], last_seen: dict[str, float]) -> float:
    """User + system seconds of the pods' processes; a pod gone (killed) counts with what it had spent when it was
    last seen (`last_seen` is updated)."""
    for pod in pods:
        try:
            times = psutil.Process(pod.proc.pid).cpu_times()
            last_seen[pod.name] = times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return sum(last_seen.get(pod.name, 0.0) for pod in pods)


def data_url(image: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(image).decode()


def stream_turn(client: httpx.Client, base_url: str, messages: list[dict], max_tokens: int) -> tuple[float, str, tuple]:
    """(TTFT ms, answer text, captions' cached flags) of one streamed chat."""
    body = {"model": TEXT, "stream": True, "max_tokens": max_tokens, "temperature": 0, "messages": messages}
    started = time.perf_counter()
    ttft, text, cached = None, [], ()
    with client.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=600) as reply:
        if reply.status_code != 200:
            raise RuntimeError(f"HTTP {reply.status_code}: {reply.read().decode()[:300]}")
        for line in reply.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(str(chunk["error"]))
            images = chunk.get("proxy_vision", {}).get("images")
            if images:
                cached = tuple(bool(i.get("cached")) for i in images)
            for choice in chunk.get("choices", ()):
                piece = (choice.get("delta") or {}).get("content") or ""
                if piece and ttft is None:
                    ttft = (time.perf_counter() - started) * 1000
                text.append(piece)
    total = (time.perf_counter() - started) * 1000
    return (ttft if ttft is not None else total), "".join(text), cached


def vision_misses(pods: list[LocalPod]) -> dict[str, float]:
    """Captions each live vision replica computed so far: in-process misses not answered by the shared cache."""
    out = {}
    for pod in pods:
        if pod.proc.poll() is not None:
            continue
        samples = scrape(f"127.0.0.1:{pod.local_port('metrics')}")
        misses = sample(samples, "proxyvision_vision_cache_misses_total", model=VISION)
        shared_hits = sample(samples, "proxyvision_vision_shared_cache_requests_total", model=VISION, result="hit")
        out[pod.name] = misses - shared_hits
    return out


def shared_errors(pods: list[LocalPod]) -> float:
    """Shared-cache lookups the live vision replicas could not get an answer from Redis for."""
    return sum(
        sample(
            scrape(f"127.0.0.1:{pod.local_port('metrics')}"),
            "proxyvision_vision_shared_cache_requests_total",
            model=VISION,
            result="error",
        )
        for pod in pods
        if pod.proc.poll() is None
    )


def prefix_ratio(pods: list[LocalPod], before: dict[str, tuple[float, float]]) -> float:
    queried = hit = 0.0
    for pod in pods:
        samples = scrape(f"127.0.0.1:{pod.local_port('metrics')}")
        q = sample(samples, "proxyvision_prefix_cache_queries_total", model=TEXT)
        h = sample(samples, "proxyvision_prefix_cache_hits_total", model=TEXT)
        queried += q - before.get(pod.name, (0, 0))[0]
        hit += h - before.get(pod.name, (0, 0))[1]
    return hit / queried if queried else 0.0


def prefix_counts(pods: list[LocalPod]) -> dict[str, tuple[float, float]]:
    out = {}
    for pod in pods:
        samples = scrape(f"127.0.0.1:{pod.local_port('metrics')}")
        out[pod.name] = (
            sample(samples, "proxyvision_prefix_cache_queries_total", model=TEXT),
            sample(samples, "proxyvision_prefix_cache_hits_total", model=TEXT),
        )
    return out


def run_variant(variant: Variant, args, work: Path) -> VariantResult:
    cluster = LocalCluster(render(chart_values(variant, args.replicas, args.caption_tokens)), work, NAMESPACE)
    result = VariantResult(variant)
    try:
        cluster.run_init_containers()
        cluster.start()
        cluster.wait_ready()
        base_url = f"http://{cluster.service_address(RELEASE, 'http')}"
        deadline = time.monotonic() + 60
        while httpx.get(f"{base_url}/ready", timeout=5).json()["vision"]["available"] is not True:
            assert time.monotonic() < deadline, "the gateway never saw the vision engine"
            time.sleep(0.5)
        text_pods = cluster.pods_behind(f"{RELEASE}-text-{TEXT}")
        vision_pods = cluster.pods_behind(f"{RELEASE}-vision-{VISION}")
        with httpx.Client() as client:  # warm-up: every replica loads and runs once (images not used later)
            for _ in range(2 * args.replicas):
                stream_turn(
                    client,
                    base_url,
                    [
                        {
                            "role": "user",
                            "content": [
                                {"type": "text", "text": "warm up"},
                                {"type": "image_url", "image_url": {"url": data_url(fresh_image((64, 48)))}},
                            ],
                        }
                    ],
                    4,
                )
        result.turns = drive(variant, args, base_url, text_pods, vision_pods, result)
    finally:
        cluster.stop()
    return result


def drive(
    variant: Variant, args, base_url: str, text_pods: list[LocalPod], vision_pods: list[LocalPod], result: VariantResult
) -> list[Turn]:
    """The conversations, turn by turn (all of a turn at once; a barrier between turns, where the kill happens)."""
    images = [fresh_image((args.image_size, args.image_size)) for _ in range(args.conversations)]
    misses_start = vision_misses(vision_pods)
    prefix_before = prefix_counts(text_pods)
    seen: dict[str, float] = {}
    cpu_before = {"text": cpu_seconds(text_pods, seen), "vision": cpu_seconds(vision_pods, seen)}
    killed: dict[str, float] = {}

    def between_turns(turn: int) -> None:
        if variant.kill_vision_after_turn == turn:
            misses = vision_misses(vision_pods)
            # The replica that computed the most captions so far owns the largest share: kill it.
            victim = max(misses, key=lambda name: misses[name] - misses_start.get(name, 0))
            pod = next(p for p in vision_pods if p.name == victim)
            cpu_seconds([pod], seen)  # what it spent until now still counts
            pod.proc.send_signal(signal.SIGKILL)
            pod.proc.wait(10)
            killed["share"] = misses[victim] - misses_start.get(victim, 0)
            killed.update({f"before:{n}": v for n, v in misses.items() if n != victim})

    barrier = threading.Barrier(args.conversations, action=lambda: between_turns(len(done_turns) // args.conversations))
    done_turns: list[Turn] = []
    lock = threading.Lock()

    def conversation(index: int) -> None:
        messages = [
            {"role": "system", "content": f"Conversation {index}: answer about the user's picture."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": QUESTIONS[0]},
                    {"type": "image_url", "image_url": {"url": data_url(images[index])}},
                ],
            },
        ]
        with httpx.Client() as client:
            for turn in range(1, args.turns + 1):
                try:
                    ttft, text, cached = stream_turn(client, base_url, messages, args.max_tokens)
                    record = Turn(index, turn, ttft, cached)
                except Exception as exc:  # noqa: BLE001 - a failed request is a result here, reported
                    record, text = Turn(index, turn, 0.0, (), error=str(exc)[:200]), "..."
                with lock:
                    done_turns.append(record)
                barrier.wait()
                messages = [
                    *messages,
                    {"role": "assistant", "content": text or "..."},
                    {"role": "user", "content": QUESTIONS[turn % len(QUESTIONS)]},
                ]

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(args.conversations) as pool:
        list(pool.map(conversation, range(args.conversations)))
    result.wall_s = time.perf_counter() - started
    result.cpu_seconds = {
        "text": cpu_seconds(text_pods, seen) - cpu_before["text"],
        "vision": cpu_seconds(vision_pods, seen) - cpu_before["vision"],
    }
    misses_end = vision_misses(vision_pods)
    result.captions_computed = (
        sum(misses_end.values()) - sum(misses_start.get(n, 0) for n in misses_end) + killed.get("share", 0)
    )
    if killed:
        result.killed_share = killed["share"]
        result.computed_after_kill = sum(v - killed.get(f"before:{n}", 0) for n, v in misses_end.items())
    result.prefix_hit_ratio = prefix_ratio(text_pods, prefix_before)
    result.shared_errors = shared_errors(vision_pods)
    return sorted(done_turns, key=lambda t: (t.turn, t.conversation))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--conversations", type=int, default=20)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--caption-tokens", type=int, default=32, help="vision_proxy.max_caption_tokens")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument(
        "--kill-vision", action="store_true", help="also the affinity variants with a vision replica killed"
    )
    parser.add_argument("--variants", default="round_robin,affinity,affinity_redis")
    args = parser.parse_args()
    known = {
        "round_robin": Variant("round-robin (text and vision)", "round_robin", "round_robin"),
        "affinity": Variant("affinity (text and vision)", "affinity", "affinity"),
        "affinity_redis": Variant("affinity + shared Redis cache", "affinity", "affinity", redis=True),
    }
    variants = [known[v] for v in args.variants.split(",")]
    if args.kill_vision:
        variants += [
            Variant(
                f"{v.label}, vision replica killed after turn 2",
                v.text_routing,
                v.vision_routing,
                v.redis,
                kill_vision_after_turn=2,
            )
            for v in variants
            if v.vision_routing == "affinity"
        ]
    print(
        f"scale-out  {datetime.date.today()}  {platform.node()}  cores={psutil.cpu_count()}  {args.replicas} replicas "
        f"of each engine, {args.conversations} conversations x {args.turns} turns, one {args.image_size}px image "
        f"re-sent per turn, {args.max_tokens} answer tokens, {args.caption_tokens} caption tokens",
        flush=True,
    )
    results = []
    for variant in variants:
        with tempfile.TemporaryDirectory(prefix="pv-scale-") as tmp:
            results.append(run_variant(variant, args, Path(tmp)))
        print(results[-1].row(), flush=True)
        for turn in results[-1].turns:
            if turn.error:
                print(f"    error: conversation {turn.conversation} turn {turn.turn}: {turn.error}")
    base = results[0]
    print(f"\nvs {base.variant.label}:")
    for r in results[1:]:
        print(
            f"  {r.variant.label:<60} TTFT t2-5 p50 x{r.ttft(50) / base.ttft(50):.2f}  "
            f"captions computed x{r.captions_computed / max(base.captions_computed, 1):.2f}  "
            f"engine CPU s x{sum(r.cpu_seconds.values()) / max(sum(base.cpu_seconds.values()), 1e-9):.2f}"
        )
    print(
        "median TTFT by turn: "
        + "; ".join(
            f"{r.variant.label}: "
            + " ".join(
                f"{statistics.median([t.ttft_ms for t in r.turns if t.turn == n and not t.error] or [0]):.0f}"
                for n in range(1, args.turns + 1)
            )
            for r in results
        )
    )


if __name__ == "__main__":
    main()
