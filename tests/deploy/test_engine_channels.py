"""The gateway's engine channels: round-robin over every address a target resolves to, and retries of
calls that failed with UNAVAILABLE before anything came back. Real grpc.aio servers on loopback."""

from __future__ import annotations

import json
from collections import Counter

import grpc
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from services.api_gateway.clients.channels import CHANNEL_OPTIONS, check_health, open_channel
from tests.support.processes import free_port


class CountingInterceptor(grpc.aio.ServerInterceptor):
    """Counts calls; refuses the first `refuse` of them with UNAVAILABLE, as a draining engine does."""

    def __init__(self, name: str, counts: Counter, refuse: int = 0) -> None:
        self.name, self.counts, self.refuse = name, counts, refuse

    async def intercept_service(self, continuation, handler_call_details):
        self.counts[self.name] += 1
        if self.refuse > 0:
            self.refuse -= 1

            async def unavailable(request, context):
                await context.abort(grpc.StatusCode.UNAVAILABLE, "draining")

            return grpc.unary_unary_rpc_method_handler(unavailable)
        return await continuation(handler_call_details)


@pytest.fixture
async def start_server():
    servers = []

    async def start(name: str, counts: Counter, refuse: int = 0) -> int:
        server = grpc.aio.server(interceptors=[CountingInterceptor(name, counts, refuse)])
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        return port

    yield start
    for server in servers:
        await server.stop(None)


def test_channel_options_name_round_robin_and_a_retry_policy_for_every_method():
    options = dict(CHANNEL_OPTIONS)
    config = json.loads(options["grpc.service_config"])
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    (method,) = config["methodConfig"]
    assert method["name"] == [{}]
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert options["grpc.enable_retries"] == 1
    # A request with images must stay retryable: the retry buffer holds the largest message we send.
    assert options["grpc.per_rpc_retry_buffer_size"] == options["grpc.max_send_message_length"]
    assert options["grpc.max_reconnect_backoff_ms"] <= 10_000
    assert options["grpc.dns_min_time_between_resolutions_ms"] <= 10_000


async def test_calls_are_spread_over_every_address_of_the_target(start_server):
    counts: Counter = Counter()
    a, b = await start_server("a", counts), await start_server("b", counts)
    async with open_channel(f"ipv4:127.0.0.1:{a},127.0.0.1:{b}") as channel:
        results = [await check_health(channel, timeout=5) for _ in range(20)]
    assert results == ["SERVING"] * 20
    # pick_first would send all 20 to one server; round_robin alternates once both are connected.
    assert counts["a"] >= 5 and counts["b"] >= 5, counts


async def test_an_unavailable_answer_before_any_response_is_retried(start_server):
    counts: Counter = Counter()
    port = await start_server("draining-then-ok", counts, refuse=2)
    async with open_channel(f"127.0.0.1:{port}") as channel:
        assert await check_health(channel, timeout=5) == "SERVING"
    assert counts["draining-then-ok"] == 3  # two refusals, then the attempt that succeeded


async def test_an_address_that_refuses_connections_gets_no_calls(start_server):
    counts: Counter = Counter()
    live = await start_server("live", counts)
    dead = free_port()  # nothing listens there
    async with open_channel(f"ipv4:127.0.0.1:{dead},127.0.0.1:{live}") as channel:
        results = [await check_health(channel, timeout=5) for _ in range(10)]
    assert results == ["SERVING"] * 10
    assert counts["live"] >= 10
