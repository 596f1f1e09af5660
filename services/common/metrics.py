"""Prometheus metrics: one registry per process, engine series shared by both engines, an HTTP exporter.

Every series is named `proxyvision_*` and documented in docs/operations.md (Metrics). Counters and histograms are updated
where the event happens; gauges that describe a state (running, waiting, memory, model state) are read
from the engine's own snapshot at scrape time, so they can never drift from what the engine reports in
GetModelInfo. The exporter runs in prometheus_client's own thread: a scrape never waits on the event loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Protocol, TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .errors import InternalError, OverloadedError, ProxyVisionError, ShuttingDownError
from .lifecycle import ModelLifecycle, ModelState

log = logging.getLogger(__name__)
E = TypeVar("E")

# From a few milliseconds (a cached caption, a token) to minutes (a long completion on a busy engine).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


@dataclass(frozen=True)
class ModelSnapshot:
    """What an engine's state gauges show, taken at scrape time."""

    state: ModelState
    running: int
    waiting: int
    memory_budget_bytes: int
    memory_used_bytes: int
    last_load_seconds: float
    loads: int
    unloads: int
    kv_cache_usage_ratio: float | None = None  # text engines only

    @classmethod
    def of(
        cls,
        info: EngineLoad,
        lifecycle: ModelLifecycle,
        kv_cache_usage_ratio: float | None = None,
    ) -> ModelSnapshot:
        """An engine's gauges: its GetModelInfo snapshot (state, load, budget), its lifecycle's loads and unloads."""
        # In field order: the info's state and load, the budget, then the lifecycle's counts.
        load = (info.state, info.running, info.waiting, info.memory_budget_bytes, info.memory_used_bytes)
        return cls(*load, info.last_load_seconds, lifecycle.loads, lifecycle.unloads, kv_cache_usage_ratio)


class EngineLoad(Protocol):
    """What `ModelSnapshot.of` reads of an engine's info (model_info.ModelInfo, which the gateway does not import)."""

    state: ModelState
    running: int
    waiting: int
    memory_budget_bytes: int
    memory_used_bytes: int
    last_load_seconds: float


class _SnapshotCollector(Collector):
    """Gauges built from `snapshot()` at each scrape."""

    def __init__(self, model: str, snapshot: Callable[[], ModelSnapshot]) -> None:
        self._model = model
        self._snapshot = snapshot

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        s = self._snapshot()
        label = [self._model]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(f"proxyvision_{name}", doc, labels=["model"])
            family.add_metric(label, value)
            return family

        yield gauge("requests_running", "Requests being processed now.", s.running)
        yield gauge("requests_waiting", "Requests queued for a slot.", s.waiting)
        yield gauge(
            "memory_budget_bytes", "Working-memory budget (params.mem) on top of the weights.", s.memory_budget_bytes
        )
        yield gauge("memory_used_bytes", "Part of the budget in use now.", s.memory_used_bytes)
        yield gauge(
            "memory_free_bytes", "Part of the budget free now.", max(0, s.memory_budget_bytes - s.memory_used_bytes)
        )
        yield gauge("model_load_seconds", "Duration of the last model load (0 before the first).", s.last_load_seconds)
        if s.kv_cache_usage_ratio is not None:
            yield gauge("kv_cache_usage_ratio", "Fraction of the paged KV cache in use.", s.kv_cache_usage_ratio)
        for name, doc, value in (
            ("model_loads", "Model loads (the first and every reload after an idle unload).", s.loads),
            ("model_unloads", "Idle unloads.", s.unloads),
        ):
            counter = CounterMetricFamily(f"proxyvision_{name}", doc, labels=["model"])
            counter.add_metric(label, value)
            yield counter
        states = GaugeMetricFamily(
            "proxyvision_model_state", "1 for the model's current state, 0 for the others.", labels=["model", "state"]
        )
        for state in ModelState:
            states.add_metric([self._model, state.value], 1.0 if state is s.state else 0.0)
        yield states


class EngineMetrics:
    """The series an engine process exports for its one model."""

    def __init__(self, model: str, registry: CollectorRegistry | None = None) -> None:
        self.model = model
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "proxyvision_requests",
            "Requests handled, by final status (ok, cancelled, error, rejected, overloaded).",
            ["model", "status"],
            registry=r,
        )
        self.ttft = Histogram(
            "proxyvision_time_to_first_token_seconds",
            "Time from arrival to the first output.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "proxyvision_request_duration_seconds",
            "Time from arrival to the last output.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter("proxyvision_prompt_tokens", "Prompt tokens processed.", ["model"], registry=r)
        self.generation_tokens = Counter("proxyvision_generation_tokens", "Tokens generated.", ["model"], registry=r)
        self.kv_preemptions = Counter(
            "proxyvision_kv_preemptions",
            "Requests preempted because the KV cache was full (they resume, recomputed, when blocks free up).",
            ["model"],
            registry=r,
        )
        # In tokens, as vLLM's prefix_cache_queries/hits: hits / queries is the share of prompt tokens not prefilled.
        self.prefix_cache_queries = Counter(
            "proxyvision_prefix_cache_queries",
            "Prompt tokens looked up in the prefix cache (text engines).",
            ["model"],
            registry=r,
        )
        self.backend = Gauge(
            "proxyvision_model_backend",
            "1 for what runs the model's forward passes (models.yaml backend: transformers or vllm).",
            ["model", "backend"],
            registry=r,
        )
        self.prefix_cache_hits = Counter(
            "proxyvision_prefix_cache_hits",
            "Prompt tokens whose KV blocks came from the prefix cache instead of a prefill (text engines).",
            ["model"],
            registry=r,
        )

    def watch(self, snapshot: Callable[[], ModelSnapshot]) -> None:
        """Export the state gauges of `snapshot()` (called by the exporter thread at each scrape)."""
        self.registry.register(_SnapshotCollector(self.model, snapshot))

    def count(self, status: str) -> None:
        """One finished request."""
        self.requests.labels(self.model, status).inc()

    async def observe(
        self,
        events: AsyncIterator[E],
        *,
        is_output: Callable[[E], bool] = lambda event: True,
        outcome: Callable[[E], str | None] = lambda event: None,
    ) -> AsyncIterator[E]:
        """Pass one request's events through, counting it: time to the first event that `is_output`, its
        status (`outcome(event)` of a final event, else "ok" when the events run out, the error's status
        when one is raised, "cancelled" when the caller leaves) and, for finished requests, its duration.
        Closing this generator closes `events` at once (the engine frees the request's slot)."""
        started = time.monotonic()
        status, waiting_first = None, True
        try:
            async with aclosing(events) as inner:
                async for event in inner:
                    if waiting_first and is_output(event):
                        self.ttft.labels(self.model).observe(time.monotonic() - started)
                        waiting_first = False
                    status = outcome(event) or status
                    yield event
            status = status or "ok"
        except ProxyVisionError as error:
            status = error_status(error)
            raise
        finally:
            self.count(status or "cancelled")
            if status in ("ok", "error"):
                self.latency.labels(self.model).observe(time.monotonic() - started)


def error_status(error: ProxyVisionError) -> str:
    """The `status` label of a request that ended with `error`."""
    if isinstance(error, OverloadedError):
        return "overloaded"
    if isinstance(error, ShuttingDownError):
        return "unavailable"
    if isinstance(error, InternalError):
        return "error"
    return "rejected"


def start_metrics_server(registry: CollectorRegistry, host: str, port: int) -> tuple[WSGIServer, int]:
    """Serve `registry` at http://host:port/metrics in a daemon thread; port 0 picks a free one."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    bound = server.server_port
    log.info("Metrics on http://%s:%d/metrics", host, bound)
    return server, bound


class VisionMetrics(EngineMetrics):
    """Engine series plus what only the vision engine knows: images and its caption caches."""

    def __init__(self, model: str, registry: CollectorRegistry | None = None) -> None:
        super().__init__(model, registry)
        r = self.registry
        self.images = Counter("proxyvision_vision_images", "Images described (cached or not).", ["model"], registry=r)
        self.cache_hits = Counter(
            "proxyvision_vision_cache_hits", "Images answered from the caption cache.", ["model"], registry=r
        )
        self.cache_misses = Counter(
            "proxyvision_vision_cache_misses",
            "Images that needed the model (or joined a caption already being computed).",
            ["model"],
            registry=r,
        )
        # The shared cache (vision_proxy.shared_cache) behind the in-process one: an in-process miss that Redis
        # answers is counted above as a miss and here as a hit. Counted per image looked up; "error" when Redis
        # did not answer (failed, timed out, or skipped for retry_secs after a failure).
        self.shared_cache_requests = Counter(
            "proxyvision_vision_shared_cache_requests",
            "Images looked up in the shared caption cache (Redis), by result (hit, miss, error).",
            ["model", "result"],
            registry=r,
        )
        self.shared_cache_up = Gauge(
            "proxyvision_vision_shared_cache_up",
            "1 when the last call to the shared caption cache succeeded, 0 when it failed.",
            ["model"],
            registry=r,
        )
