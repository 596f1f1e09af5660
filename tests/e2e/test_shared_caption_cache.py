"""Two real vision-engine processes sharing one real redis-server (vision_proxy.shared_cache): a caption made on
one replica is a cached answer on the other, a restarted replica answers from Redis at once, and with Redis
killed both replicas go on captioning. The engines are called directly over gRPC, as the gateway does."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import redis

from services.common.pb.proxyvision.v1 import common_pb2, vision_engine_pb2 as vpb, vision_engine_pb2_grpc
from tests.support.images import png
from tests.support.metrics import scrape
from tests.support.models_yaml import VISION_MODEL, tiny
from tests.support.processes import ServiceProcess, free_port, wait_grpc_serving, wait_until
from tests.support.redis_server import RedisServer
from tests.support.stack import start_vision_engine

pytestmark = pytest.mark.e2e

PREFIX = "e2e:caption:"
MAX_TOKENS = 6


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer.start(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def config(tiny_models, tmp_path_factory, redis_server):
    tmp = tmp_path_factory.mktemp("shared_caption_cache")
    models = tiny(tiny_models, vision=True)
    shared = {"url": redis_server.url, "ttl_secs": 600, "timeout_ms": 300, "retry_secs": 1, "key_prefix": PREFIX}
    models.entry(VISION_MODEL)["capabilities"]["vision_proxy"].update(
        max_caption_tokens=MAX_TOKENS, shared_cache=shared
    )
    return models.write(tmp / "models.yaml"), tmp


class Replica:
    """One vision engine process on fixed ports (a restart comes back on the same ones)."""

    def __init__(self, config, tmp, name: str) -> None:
        self.config, self.tmp, self.name = config, tmp / name, name
        self.tmp.mkdir()
        self.port, self.metrics_port = free_port(), free_port()
        self.service: ServiceProcess | None = None

    def start(self) -> Replica:
        self.service = start_vision_engine(
            self.config, self.tmp, port=self.port, metrics_port=self.metrics_port, wait=False
        )
        return self

    def wait(self) -> Replica:
        wait_grpc_serving(self.service)
        return self

    def stop(self) -> None:
        assert self.service.stop() == 0, self.service.log_text()[-3000:]

    def describe(self, data: bytes) -> vpb.CaptionDone:
        with grpc.insecure_channel(self.service.address) as channel:
            stub = vision_engine_pb2_grpc.VisionEngineStub(channel)
            responses = list(
                stub.Describe(
                    vpb.DescribeRequest(
                        images=[common_pb2.ImageInput(data=data, mime_type="image/png", detail=common_pb2.DETAIL_LOW)],
                    ),
                    timeout=60,
                )
            )
        return responses[-1].done

    def info(self) -> common_pb2.ModelInfo:
        with grpc.insecure_channel(self.service.address) as channel:
            return vision_engine_pb2_grpc.VisionEngineStub(channel).GetModelInfo(
                common_pb2.GetModelInfoRequest(), timeout=10
            )

    def counter(self, name: str, **labels: str) -> float:
        return scrape(f"http://127.0.0.1:{self.metrics_port}/metrics").value(name, model=VISION_MODEL, **labels)

    def shared(self, result: str) -> float:
        return self.counter("proxyvision_vision_shared_cache_requests_total", result=result)


@pytest.fixture(scope="module")
def replicas(config):
    path, tmp = config
    pair = [Replica(path, tmp, "one").start(), Replica(path, tmp, "two").start()]  # the two load side by side
    try:
        for replica in pair:
            replica.wait()
        yield pair
    finally:
        for replica in pair:
            if replica.service.proc.poll() is None:
                replica.stop()


def shared_keys(server: RedisServer) -> int:
    with redis.Redis(port=server.port, socket_timeout=5) as client:
        return len(client.keys(PREFIX + "*"))


def test_a_caption_made_on_one_replica_is_a_cached_answer_on_the_other(replicas, redis_server):
    one, two = replicas
    image = png((12, 130, 240), (40, 30))
    keys, one_misses = shared_keys(redis_server), one.shared("miss")
    first = one.describe(image)
    assert not first.cached and first.caption and first.caption_tokens == MAX_TOKENS
    assert one.shared("miss") == one_misses + 1
    # The write is fire-and-forget: wait for it to land (a readiness poll), then ask the other replica.
    wait_until(lambda: shared_keys(redis_server) == keys + 1, timeout=10, message="the caption shared in Redis")
    misses, hits, shared_hits, shared_misses = (
        two.counter("proxyvision_vision_cache_misses_total"),
        two.counter("proxyvision_vision_cache_hits_total"),
        two.shared("hit"),
        two.shared("miss"),
    )
    second = two.describe(image)
    assert second.cached and second.elapsed_ms == 0
    assert (second.caption, second.finish_reason, second.image_tokens, second.caption_tokens) == (
        first.caption,
        first.finish_reason,
        first.image_tokens,
        first.caption_tokens,
    )
    # An in-process miss that Redis answered: no model work on replica two, nothing new shared.
    assert (two.shared("hit"), two.shared("miss"), two.shared("error")) == (shared_hits + 1, shared_misses, 0)
    assert two.counter("proxyvision_vision_cache_misses_total") == misses + 1
    assert shared_keys(redis_server) == keys + 1
    # Replica two keeps the caption itself now: the next ask is an in-process hit, Redis is not asked.
    assert two.describe(image).cached and two.shared("hit") == shared_hits + 1
    assert two.counter("proxyvision_vision_cache_hits_total") == hits + 1


def set_calls(server: RedisServer) -> int:
    """SET commands the server has run (INFO commandstats): one per caption a replica shared."""
    with redis.Redis(port=server.port, socket_timeout=5) as client:
        return int(client.info("commandstats").get("cmdstat_set", {}).get("calls", 0))


def test_concurrent_identical_requests_on_one_replica_still_caption_once(replicas, redis_server):
    one, _ = replicas
    image = png((90, 20, 160), (36, 28))
    sets, keys = set_calls(redis_server), shared_keys(redis_server)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: one.describe(image), range(4)))
    assert len({a.caption for a in answers}) == 1 and answers[0].caption
    wait_until(lambda: shared_keys(redis_server) == keys + 1, timeout=10, message="the caption shared in Redis")
    assert set_calls(redis_server) == sets + 1  # one flight, one caption, one write


def test_the_operator_sees_the_shared_cache_in_get_model_info_the_log_and_the_up_gauge(replicas, redis_server):
    one, _ = replicas
    assert one.info().shared_cache == f"{redis_server.url} (up; ttl 600s)"
    log = one.service.log_text()
    assert f"shared_cache={redis_server.url}" in log and f"Shared caption cache {redis_server.url}: reachable" in log
    assert one.counter("proxyvision_vision_shared_cache_up") == 1


def test_a_restarted_replica_answers_a_known_image_from_redis_at_once(replicas, redis_server):
    one, two = replicas
    image = png((200, 90, 10), (30, 40))
    keys = shared_keys(redis_server)
    made = one.describe(image)
    assert not made.cached
    wait_until(lambda: shared_keys(redis_server) == keys + 1, timeout=10, message="the caption shared in Redis")
    two.stop()
    two.start().wait()  # a new process: its in-process cache is empty
    again = two.describe(image)
    assert again.cached and again.caption == made.caption
    assert two.shared("hit") == 1 and two.counter("proxyvision_vision_cache_hits_total") == 0


def test_with_redis_killed_both_replicas_still_caption(replicas, redis_server):
    one, _ = replicas
    redis_server.kill()
    images = [png((0, 250, 120), (24, 24)), png((60, 250, 120), (24, 24))]
    for replica, image in zip(replicas, images):
        errors = replica.shared("error")
        done = replica.describe(image)
        assert not done.cached and done.caption and done.caption_tokens == MAX_TOKENS
        assert replica.shared("error") == errors + 1  # its lookup: a miss that Redis did not answer
        assert replica.counter("proxyvision_vision_shared_cache_up") == 0
        assert "down, retrying every 1s" in replica.info().shared_cache
    # What a replica captioned itself is still answered from its own cache.
    assert one.describe(images[0]).cached
    warnings = [
        line for line in one.service.log_text().splitlines() if "WARNING" in line and "Shared caption cache" in line
    ]
    assert len(warnings) == 1 and "unavailable" in warnings[0], warnings
