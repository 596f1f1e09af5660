"""The shared caption cache against a real redis-server: round trip and TTL, keys, values it cannot trust, and
Redis going away, hanging, refusing the password and coming back (a miss each time, never an error; one
warning per outage, the circuit breaker skipping calls until retry_secs have passed)."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis

from services.common.config import SharedCaptionCache
from services.common.metrics import VisionMetrics
from services.vision_engine.captioner.batcher import CaptionResult
from services.vision_engine.captioner.cache import CachedCaption, CacheKey, CaptionCache
from services.vision_engine.captioner.flights import FlightBoard
from services.vision_engine.captioner.shared_cache import (
    FORMAT_VERSION,
    SharedCaptionStore,
    decode_caption,
    display_url,
    encode_caption,
    redis_key,
)
from tests.support.redis_server import RedisServer

MODEL = "vlm"
PREFIX = "test:caption:"
LOGGER = "services.vision_engine.captioner.shared_cache"
# A hang guard, not a timing assertion: a lookup that ignored its deadline would block for good on a paused server.
HANG_GUARD_SECS = 10


class Clock:
    """A monotonic clock the test moves: the breaker's retry period passes when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def key(n: int = 1, **changes) -> CacheKey:
    parts = {
        "image_sha256": f"{n:064x}",
        "detail": "auto",
        "instruction": "Describe",
        "max_tokens": 16,
        "model": "org/vlm",
        "revision": None,
        **changes,
    }
    return CacheKey.of(parts.pop("image_sha256"), parts.pop("detail"), parts.pop("instruction"), **parts)


CAPTION = CachedCaption("A red square — on white.", "stop", 64, 7)


@pytest.fixture
def server(tmp_path):
    server = RedisServer.start(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def metrics():
    return VisionMetrics(MODEL)


def requests(metrics: VisionMetrics, result: str) -> float:
    return (
        metrics.registry.get_sample_value(
            "proxyvision_vision_shared_cache_requests_total", {"model": MODEL, "result": result}
        )
        or 0.0
    )


def up(metrics: VisionMetrics) -> float | None:
    return metrics.registry.get_sample_value("proxyvision_vision_shared_cache_up", {"model": MODEL})


def make_store(url: str, metrics: VisionMetrics, clock: Clock | None = None, **settings) -> SharedCaptionStore:
    config = SharedCaptionCache(url=url, key_prefix=PREFIX, **{"timeout_ms": 200, "retry_secs": 5.0, **settings})
    return SharedCaptionStore(config, model=MODEL, metrics=metrics, clock=clock or Clock())


def raw_client(server: RedisServer) -> redis.Redis:
    return redis.Redis(port=server.port, password=server.password, socket_timeout=5)


async def lookup(store: SharedCaptionStore, *keys: CacheKey) -> list[CachedCaption | None]:
    async with asyncio.timeout(HANG_GUARD_SECS):
        return await store.get_many(list(keys))


async def test_a_caption_written_by_one_store_is_read_by_another_with_its_ttl(server, metrics):
    writer = make_store(server.url, metrics, ttl_secs=3600)
    reader_metrics = VisionMetrics(MODEL)
    reader = make_store(server.url, reader_metrics)
    try:
        writer.put(key(1), CAPTION)
        await writer.flush()
        assert await lookup(reader, key(1), key(2), key(1)) == [CAPTION, None, CAPTION]
        with raw_client(server) as client:
            name = redis_key(PREFIX, key(1))
            assert 3590 <= client.ttl(name) <= 3600  # SET ... EX ttl_secs
            assert client.keys("*") == [name.encode()]  # written under key_prefix, nothing else
        assert (requests(reader_metrics, "hit"), requests(reader_metrics, "miss")) == (2, 1)
        assert up(metrics) == 1 and up(reader_metrics) == 1 and writer.up
    finally:
        await writer.close()
        await reader.close()


async def test_the_key_is_the_prefix_and_a_stable_digest_of_every_field():
    base = key(1)
    variants = [
        key(2),
        key(detail="high"),
        key(instruction="Transcribe"),
        key(max_tokens=17),
        key(model="org/other"),
        key(revision="abc123"),
    ]
    names = {redis_key(PREFIX, k) for k in [base, *variants]}
    assert len(names) == len(variants) + 1 and all(n.startswith(PREFIX) for n in names)
    assert redis_key("other:", base) == "other:" + redis_key(PREFIX, base).removeprefix(PREFIX)
    # The same in every process and release (no hash() salt): replicas and restarts must agree.
    golden = CacheKey.of("ab" * 32, "high", "Describe", max_tokens=16, model="org/vlm", revision="r1")
    assert redis_key("p:", golden) == "p:706165ddcd6a9440b3c43456e88cd7dd35901eefb0bec18ccf4c19d943943a14"


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"text": "old layout", "finish_reason": "stop", "image_tokens": 1, "caption_tokens": 1}',
        b'{"v": 99, "text": "t", "finish_reason": "stop", "image_tokens": 1, "caption_tokens": 1}',
        b'{"v": 1, "text": "t", "finish_reason": "stop", "image_tokens": 1}',
        b'{"v": 1, "text": 5, "finish_reason": "stop", "image_tokens": 1, "caption_tokens": 1}',
        b'{"v": 1, "text": "t", "finish_reason": "stop", "image_tokens": true, "caption_tokens": 1}',
    ],
)
async def test_a_value_that_does_not_parse_is_a_miss_not_an_error(server, metrics, raw, caplog):
    store = make_store(server.url, metrics)
    try:
        with raw_client(server) as client:
            client.set(redis_key(PREFIX, key(1)), raw)
        with caplog.at_level(logging.WARNING, LOGGER):
            assert await lookup(store, key(1)) == [None]
        assert (requests(metrics, "miss"), requests(metrics, "error"), up(metrics)) == (1, 0, 1)
        assert caplog.records == []
    finally:
        await store.close()


def test_the_value_is_json_with_a_format_version():
    assert decode_caption(encode_caption(CAPTION)) == CAPTION
    assert b'"v": %d' % FORMAT_VERSION in encode_caption(CAPTION) and decode_caption(None) is None


async def test_redis_stopped_mid_run_is_a_miss_then_skipped_until_retry_secs_then_used_again(server, metrics, caplog):
    clock = Clock()
    store = make_store(server.url, metrics, clock, retry_secs=5.0)
    try:
        store.put(key(1), CAPTION)
        await store.flush()
        assert await lookup(store, key(1)) == [CAPTION]
        server.kill()
        with caplog.at_level(logging.INFO, LOGGER):
            assert await lookup(store, key(1)) == [None]  # the one call that fails
            assert up(metrics) == 0 and not store.up and "down" in store.describe()
            # A server is back on that port with the caption, but the breaker is open: no call is made.
            server = server.restart()
            with raw_client(server) as client:
                client.set(redis_key(PREFIX, key(1)), encode_caption(CAPTION))
            clock.now += 4.9
            assert await lookup(store, key(1), key(2)) == [None, None]
            store.put(key(3), CAPTION)  # skipped too (and never raises)
            await store.flush()
            with raw_client(server) as client:
                assert client.exists(redis_key(PREFIX, key(3))) == 0
            assert requests(metrics, "error") == 3 and up(metrics) == 0
            clock.now += 0.2  # retry_secs are over: the next call goes to Redis
            assert await lookup(store, key(1)) == [CAPTION]
            assert up(metrics) == 1 and store.up
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        back = [r for r in caplog.records if r.levelno == logging.INFO and "is back" in r.getMessage()]
        assert len(warnings) == 1 and len(back) == 1, caplog.text
        assert server.url in warnings[0].getMessage() and "retrying every 5s" in warnings[0].getMessage()
    finally:
        await store.close()
        server.stop()


async def test_while_redis_stays_down_one_probe_per_retry_period_and_one_warning(server, metrics, caplog):
    clock = Clock()
    store = make_store(server.url, metrics, clock, retry_secs=2.0)
    server.kill()
    try:
        with caplog.at_level(logging.INFO, LOGGER):
            for _ in range(4):
                assert await lookup(store, key(1)) == [None]
                clock.now += 2.5  # every period over: each lookup is a probe that fails
        assert requests(metrics, "error") == 4 and up(metrics) == 0
        assert [r.levelname for r in caplog.records] == ["WARNING"], caplog.text
    finally:
        await store.close()


async def test_a_hung_redis_is_a_miss_after_the_timeout(server, metrics):
    store = make_store(server.url, metrics, timeout_ms=150)
    try:
        server.pause()  # accepts connections, answers nothing
        assert await lookup(store, key(1)) == [None]
        assert requests(metrics, "error") == 1 and up(metrics) == 0
    finally:
        server.resume()
        await store.close()


async def test_a_wrong_password_is_a_miss_and_the_up_gauge_says_zero(tmp_path, metrics, caplog):
    server = RedisServer.start(tmp_path / "redis", password="right")
    wrong = make_store(f"redis://:s3cret-guess@127.0.0.1:{server.port}/0", metrics)
    right = make_store(server.url, VisionMetrics(MODEL))
    try:
        with caplog.at_level(logging.WARNING, LOGGER):
            assert not await wrong.check()
            assert await lookup(wrong, key(1)) == [None]
        assert up(metrics) == 0 and requests(metrics, "error") == 1
        assert "s3cret-guess" not in caplog.text and ":***@" in caplog.text  # the password never reaches a log
        right.put(key(1), CAPTION)
        await right.flush()
        assert await right.check() and await lookup(right, key(1)) == [CAPTION]
    finally:
        await wrong.close()
        await right.close()
        server.stop()


async def test_nothing_listening_at_startup_is_logged_and_not_fatal(metrics, caplog):
    from tests.support.processes import free_port

    store = make_store(f"redis://127.0.0.1:{free_port()}/0", metrics)
    try:
        with caplog.at_level(logging.WARNING, LOGGER):
            assert not await store.check()
        assert up(metrics) == 0 and "unavailable" in caplog.text
    finally:
        await store.close()


def test_the_url_shown_masks_the_password():
    assert display_url("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0"
    assert display_url("rediss://user:s3cret@[::1]:6380/2") == "rediss://user:***@[::1]:6380/2"
    assert display_url("redis://redis:6379/0") == "redis://redis:6379/0"


def test_every_landed_caption_is_published_once_and_failures_are_not():
    published = []
    board = FlightBoard(CaptionCache(10, 1000), on_caption=lambda k, v: published.append((k, v)))

    def start(flight):
        return None

    ok = board.join_or_start(key(1), start)
    assert board.flying(key(1))
    ok.on_done(CaptionResult("A cat.", "stop", 4, 2, 1.0))
    failed = board.join_or_start(key(2), start)
    failed.on_error("boom")
    assert published == [(key(1), CachedCaption("A cat.", "stop", 4, 2))] and not board.flying(key(1))
