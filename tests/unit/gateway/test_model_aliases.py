"""Model aliases (`models[].aliases`, written by the `--m` form for the hub id and the repo name): a request may
name a model by any of them, and /v1/models lists each alias pointing at the model it names."""

from __future__ import annotations

import httpx
import pytest

from services.api_gateway.app import build_app
from services.api_gateway.dependencies import get_state
from services.common.config import parse_models_config

from .fakes import FakeTextEngine, hello_script, make_state

NAME, HUB_ID = "ministral-3-3b-reasoning", "mistralai/Ministral-3-3B-Reasoning-2512"


@pytest.fixture
def engine():
    return FakeTextEngine(NAME, hello_script())


@pytest.fixture
async def client(engine):
    config = parse_models_config(
        {
            "models": [
                {
                    "name": NAME,
                    "hf_id": HUB_ID,
                    "endpoint": "127.0.0.1:1",
                    "aliases": [HUB_ID, "ministral-3-3b-reasoning-2512"],
                }
            ]
        },
        "test",
    )
    app = build_app(config)
    state = make_state({NAME: engine}, config)
    app.dependency_overrides[get_state] = lambda: state
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        yield c


@pytest.mark.parametrize("asked", [NAME, HUB_ID, "ministral-3-3b-reasoning-2512", "default"])
async def test_any_name_of_the_model_reaches_it(client, engine, asked):
    response = await client.post(
        "/v1/chat/completions", json={"model": asked, "messages": [{"role": "user", "content": "Hi"}]}
    )
    assert response.status_code == 200, response.text
    assert response.json()["model"] == NAME and len(engine.calls) == 1


async def test_models_lists_each_alias_pointing_at_its_model(client):
    listing = (await client.get("/v1/models")).json()["data"]
    assert [(m["id"], m.get("alias_of")) for m in listing] == [
        (NAME, None),
        (HUB_ID, NAME),
        ("ministral-3-3b-reasoning-2512", NAME),
    ]
    assert listing[0]["aliases"] == [HUB_ID, "ministral-3-3b-reasoning-2512"] and listing[0]["default"]
    assert not listing[1]["default"] and "aliases" not in listing[1]
    one = (await client.get(f"/v1/models/{HUB_ID}")).json()
    assert one["alias_of"] == NAME


async def test_an_unknown_name_is_still_404(client):
    response = await client.post(
        "/v1/chat/completions", json={"model": "ministral", "messages": [{"role": "user", "content": "Hi"}]}
    )
    assert response.status_code == 404
