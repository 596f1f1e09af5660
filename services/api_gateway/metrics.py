"""The gateway's Prometheus series (served at GET /metrics), one registry per app.

Engine-side series (`proxyvision_requests_total`, ...) come from each engine's own exporter; these are
what only the gateway sees: HTTP statuses, end-to-end latency and time to first token as the client
gets them, image fetch failures, and how engine calls were routed over replicas (clients/routing.py).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.common.metrics import LATENCY_BUCKETS


class GatewayMetrics:
    """Counters, histograms and gauges of one gateway app."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "proxyvision_gateway_requests",
            "Chat completion requests by model and HTTP status.",
            ["model", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "proxyvision_gateway_request_duration_seconds",
            "Time from request to the last byte.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "proxyvision_gateway_time_to_first_token_seconds",
            "Time from request to the first content token of a stream (images described included).",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.running = Gauge("proxyvision_gateway_requests_running", "Chat completion requests in flight.", registry=r)
        self.images = Counter(
            "proxyvision_gateway_images", "Images received in requests, by source (url, data).", ["source"], registry=r
        )
        self.fetch_failures = Counter(
            "proxyvision_image_fetch_failures",
            "Images refused before the vision engine, by reason (the OpenAI error code).",
            ["reason"],
            registry=r,
        )
        self.routes = Counter(
            "proxyvision_gateway_routes",
            "Engine calls by the route that served them: owner (the "
            "key's replica), next_owner (the owner was down, draining or refused), load_guard "
            "(spilled to the least-loaded replica), round_robin (gRPC's balancer).",
            ["model", "policy", "outcome"],
            registry=r,
        )
        self.replicas = Gauge(
            "proxyvision_gateway_replicas",
            "Replicas of an affinity-routed engine endpoint, by "
            "state (ready, unavailable: down, draining or refusing).",
            ["model", "state"],
            registry=r,
        )
