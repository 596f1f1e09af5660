"""Engines at scale, as the gateway sees them in Kubernetes: two text-engine processes of one model behind
one gRPC target that resolves to both (here `ipv4:A,B`; in a cluster `dns:///<headless service>`).
Requests spread over both, as each engine's own metrics show; after one is SIGKILLed, every later
request is served by the other; while one drains (SIGTERM, a request still running on it), it is out of
rotation at once (its transport sends GOAWAY) and every new call goes to the other."""

from __future__ import annotations

import asyncio
import signal

import grpc
import openai
import pytest

from services.common.pb.proxyvision.v1 import text_engine_pb2 as pb, text_engine_pb2_grpc
from tests.support.models_yaml import TEXT_MODEL, tiny
from tests.support.processes import ServiceProcess, free_port, start_service, wait_grpc_serving, wait_http, wait_until

from .local_cluster import sample, scrape

pytestmark = pytest.mark.e2e

HI = [{"role": "user", "content": "Hello"}]


class Replica:
    """One text-engine process with its metrics exporter."""

    def __init__(self, tmp, config, name: str, drain_grace_secs: int = 5) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        self.process: ServiceProcess = start_service(
            "services.text_engine",
            ["--models-config", str(config), "--model", TEXT_MODEL, "--port", str(self.port), "--device", "cpu"],
            self.port,
            tmp,
            env={
                "PROXYVISION_METRICS_PORT": str(self.metrics_port),
                "PROXYVISION_DRAIN_GRACE_SECS": str(drain_grace_secs),
            },
        )
        self.name = name

    def served(self, status: str = "ok") -> float:
        """Requests this engine ended with `status` (its own Prometheus counter)."""
        return sample(
            scrape(f"127.0.0.1:{self.metrics_port}"), "proxyvision_requests_total", model=TEXT_MODEL, status=status
        )


@pytest.fixture
def replicas_and_gateway(tiny_models, tmp_path):
    """Replicas a and b (a drains for up to a minute on SIGTERM) behind one gateway address."""
    engine_config = tiny(tiny_models).write(tmp_path / "engine.models.yaml")
    replicas = [Replica(tmp_path, engine_config, "a", drain_grace_secs=60), Replica(tmp_path, engine_config, "b")]
    gateway = None
    try:
        for replica in replicas:
            wait_grpc_serving(replica.process)
        # One endpoint naming both replicas, as a headless Service's DNS name does in a cluster.
        # (In models.yaml: PROXYVISION_ENDPOINTS splits on commas, so it cannot carry this target.)
        target = "ipv4:" + ",".join(f"127.0.0.1:{r.port}" for r in replicas)
        gateway_config = tiny(tiny_models, endpoints={TEXT_MODEL: target}).write(tmp_path / "gateway.models.yaml")
        gateway_port = free_port()
        gateway = start_service(
            "services.api_gateway",
            ["--models-config", str(gateway_config), "--port", str(gateway_port)],
            gateway_port,
            tmp_path,
            env={"PROXYVISION_DRAIN_GRACE_SECS": "5"},
        )
        wait_http(f"http://127.0.0.1:{gateway_port}/ready", gateway)
        yield replicas, gateway
    finally:
        for service in [gateway, *(r.process for r in replicas)]:
            if service is not None:
                service.stop()


def client_for(gateway: ServiceProcess) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{gateway.port}/v1", api_key="not-needed", max_retries=0, timeout=60
    )


async def chat(client: openai.AsyncOpenAI) -> str:
    response = await client.chat.completions.create(model=TEXT_MODEL, messages=HI, max_tokens=2, temperature=0)
    return response.choices[0].finish_reason


async def assert_spread_over(client: openai.AsyncOpenAI, replicas: list[Replica], requests: int = 12) -> None:
    """Sequential requests: round_robin alternates over the connected replicas."""
    before = {r.name: r.served() for r in replicas}
    assert set([await chat(client) for _ in range(requests)]) <= {"length", "stop"}
    spread = {r.name: r.served() - before[r.name] for r in replicas}
    assert sum(spread.values()) == requests
    assert min(spread.values()) >= requests // 3, f"not balanced over the replicas: {spread}"


async def test_requests_spread_over_both_replicas_and_survive_one_being_killed(replicas_and_gateway):
    (a, b), gateway = replicas_and_gateway
    client = client_for(gateway)
    await assert_spread_over(client, [a, b])

    # SIGKILL one replica (no drain, no goodbye) and send more at once, with no pause: calls the gateway
    # routes to the dead connection before it notices fail with UNAVAILABLE and are retried on b.
    a.process.proc.kill()
    a.process.proc.wait(10)
    served_by_b = b.served()
    burst = await asyncio.gather(*(chat(client) for _ in range(8)))
    after = [await chat(client) for _ in range(12)]
    assert set(burst + after) <= {"length", "stop"}  # every one answered (an error would have raised)
    assert b.served() - served_by_b == 20
    assert gateway.proc.poll() is None


async def start_draining(replica: Replica) -> grpc.aio.Call:
    """SIGTERM `replica` while a long generation (called on it directly) keeps it draining: a rolling
    update's old pod, whose connection the gateway still holds. Cancel the returned call to let it exit."""
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{replica.port}")
    call = text_engine_pb2_grpc.TextEngineStub(channel).Generate(
        pb.GenerateRequest(
            messages=[pb.ChatMessage(role="user", content="Hello")],
            sampling=pb.SamplingParams(max_tokens=3000, temperature=0),
        )
    )
    call.add_done_callback(lambda _: asyncio.get_running_loop().create_task(channel.close()))
    assert (await call.read()).HasField("accepted")
    assert (await call.read()).HasField("delta")  # generating: the replica has a request in flight
    replica.process.proc.send_signal(signal.SIGTERM)
    replica.process.wait_for_log("Draining: 1 request(s) in flight")
    return call


async def test_a_draining_replica_is_out_of_rotation_at_once(replicas_and_gateway):
    (a, b), gateway = replicas_and_gateway
    client = client_for(gateway)
    await assert_spread_over(client, [a, b])
    long_call = await start_draining(a)
    try:
        refused_by_a, served_by_b = a.served("unavailable"), b.served()
        # A draining engine stops its transport at once (GOAWAY): round_robin drops its connection, so new
        # calls go to b without even being refused by a (the retry policy is the net for the race between
        # the GOAWAY and a call already on its way; the SIGKILL test above covers dead replicas).
        answers = await asyncio.gather(*(chat(client) for _ in range(12)))
        assert set(answers) <= {"length", "stop"}  # every one answered
        assert a.process.proc.poll() is None, "a stopped draining before the requests: nothing was tested"
        assert b.served() - served_by_b == 12
        assert a.served("unavailable") - refused_by_a == 0, "the gateway still sends new calls to a draining engine"
    finally:
        long_call.cancel()
    wait_until(lambda: a.process.proc.poll() is not None, timeout=30, message="a exits once its last request is gone")
    assert a.process.proc.returncode == 0
