"""Stored responses in a real redis-server: what one gateway replica stores another reads and continues, the TTL
and size bound hold, and a Redis that is down is a 503 the client sees (a response it asked to store must not
vanish silently)."""

from __future__ import annotations

import httpx
import pytest
import redis

from services.api_gateway.app import build_app
from services.api_gateway.dependencies import get_state
from services.api_gateway.serving.response_store import RedisResponseStore, open_response_store
from services.common.config import ModelsConfig, ResponseStoreSettings
from services.common.errors import EngineUnavailableError
from tests.support.redis_server import RedisServer
from tests.unit.gateway.fakes import TEXT, FakeTextEngine, hello_script, make_config, make_state

SETTINGS = ResponseStoreSettings(ttl_secs=60, max_bytes=10_000, key_prefix="test:response:")


@pytest.fixture
def server(tmp_path):
    s = RedisServer.start(tmp_path / "redis")
    yield s
    s.stop()


@pytest.fixture
async def store(server):
    s = RedisResponseStore(server.url, SETTINGS)
    yield s
    await s.aclose()


async def test_round_trip_ttl_and_delete(server, store):
    record = {
        "response": {"id": "resp_1", "output": []},
        "items": [{"type": "message", "role": "user", "content": "héllo"}],
    }
    assert await store.put("resp_1", record)
    assert await store.get("resp_1") == record
    ttl = redis.Redis(port=server.port).ttl("test:response:resp_1")
    assert 0 < ttl <= 60
    assert await store.delete("resp_1") and await store.get("resp_1") is None and not await store.delete("resp_1")
    assert not await store.put("big", {"x": "y" * 20_000}) and await store.get("big") is None


async def test_a_redis_that_is_down_is_an_unavailable_error(server, store):
    server.stop()
    with pytest.raises(EngineUnavailableError, match="response store"):
        await store.get("resp_1")


async def test_a_follow_up_is_continued_by_another_gateway_replica(server):
    config = ModelsConfig.model_validate({**make_config().model_dump(exclude_none=True)})
    engines = [FakeTextEngine(TEXT, hello_script()), FakeTextEngine(TEXT, hello_script())]
    clients, stores = [], []
    for engine in engines:  # two gateways, one Redis
        app = build_app(config)
        store = RedisResponseStore(server.url, SETTINGS)
        state = make_state({TEXT: engine})
        state.responses.store = store
        app.dependency_overrides[get_state] = _returning(state)
        clients.append(httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw"))
        stores.append(store)
    try:
        first = (await clients[0].post("/v1/responses", json={"model": TEXT, "input": "Hi"})).json()
        follow = await clients[1].post(
            "/v1/responses", json={"model": TEXT, "input": "And?", "previous_response_id": first["id"]}
        )
        assert follow.status_code == 200, follow.text
        assert [(t.role, t.content) for t in engines[1].calls[0].messages] == [
            ("user", "Hi"),
            ("assistant", "Hello wörld"),
            ("user", "And?"),
        ]
        assert (await clients[1].get(f"/v1/responses/{first['id']}")).json() == first
    finally:
        for client, store in zip(clients, stores):
            await client.aclose()
            await store.aclose()


def _returning(state):
    """A dependency override without parameters (FastAPI would read a parameter as a query field)."""
    return lambda: state


def test_the_shared_cache_setting_chooses_redis(server):
    base = make_config().model_dump(exclude_none=True)
    assert type(open_response_store(ModelsConfig.model_validate(base))).__name__ == "MemoryResponseStore"
    vision = {
        "name": "captioner",
        "local_path": "/models/vl",
        "endpoint": "127.0.0.1:1",
        "capabilities": {"vision_mode": "proxy", "vision_proxy": {"shared_cache": {"url": server.url}}},
    }
    shared = ModelsConfig.model_validate({**base, "models": [*base["models"], vision]})
    assert isinstance(open_response_store(shared), RedisResponseStore)
