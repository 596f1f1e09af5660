"""The HTTP edge over fake engines: 400 shapes (FastAPI's 422 overridden), 404/405/500 in OpenAI
shape, request ids, models, health and readiness."""

from __future__ import annotations

import json

import httpx
import pytest

from services.api_gateway.app import build_app
from services.api_gateway.dependencies import get_state
from services.common.errors import ContextLengthExceededError, DeadlineExceededError, EngineUnavailableError

from .fakes import OTHER, TEXT, VISION, FakeTextEngine, hello_script, make_config, make_state

HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture
def engines():
    return {TEXT: FakeTextEngine(TEXT, hello_script()), OTHER: FakeTextEngine(OTHER, hello_script())}


@pytest.fixture
async def client(engines):
    app = build_app(make_config())
    state = make_state(engines)
    app.dependency_overrides[get_state] = lambda: state
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        yield c


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"presence_penalty": -3}, "presence_penalty"),
        ({"frequency_penalty": 2.1}, "frequency_penalty"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": -1}, "max_completion_tokens"),
        ({"seed": "abc"}, "seed"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stream": "sometimes"}, "stream"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0].text"),
        ({"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "messages[0].content[0]"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content[0].image_url.url",
        ),
    ],
)
async def test_invalid_values_are_400_naming_the_field(client, fields, param):
    response = await client.post("/v1/chat/completions", json={"model": TEXT, "messages": HI, **fields})
    error = error_of(response)
    assert response.status_code == 400 and "detail" not in response.json()
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert f"'{param}'" in error["message"]


async def test_missing_field_is_400_not_422(client):
    response = await client.post("/v1/chat/completions", json={"model": TEXT})
    assert response.status_code == 400
    assert error_of(response) == {
        "message": "Missing required parameter: 'messages'.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "missing_required_parameter",
    }


@pytest.mark.parametrize(
    "content, content_type, says",
    [
        (b"{not json", "application/json", "could not parse the JSON body"),
        (b"", "application/json", "body is empty"),
        (b"[1, 2]", "application/json", "must be a JSON object"),
        (json.dumps({"model": TEXT, "messages": HI}).encode(), "application/x-www-form-urlencoded", "Content-Type"),
    ],
)
async def test_malformed_bodies_are_400(client, content, content_type, says):
    response = await client.post("/v1/chat/completions", content=content, headers={"content-type": content_type})
    assert response.status_code == 400 and says in error_of(response)["message"]


async def test_unknown_fields_are_ignored(client):
    response = await client.post(
        "/v1/chat/completions",
        json={"model": TEXT, "messages": HI, "store": True, "metadata": {"a": "b"}, "user": "me"},
    )
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "Hello wörld"


async def test_unknown_model_is_404(client):
    response = await client.post("/v1/chat/completions", json={"model": "gpt-9", "messages": HI})
    assert response.status_code == 404 and error_of(response)["code"] == "model_not_found"


@pytest.mark.parametrize(
    "error, status",
    [
        (ContextLengthExceededError("too long", param="messages"), 400),
        (EngineUnavailableError("engine down"), 503),
        (DeadlineExceededError("too slow"), 504),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_engine_errors_before_the_first_byte_keep_their_status(client, engines, error, status, stream):
    engines[TEXT].script = [error]
    response = await client.post("/v1/chat/completions", json={"model": TEXT, "messages": HI, "stream": stream})
    assert response.status_code == status and error_of(response) == error.to_openai()["error"]


async def test_unexpected_exception_is_500_without_internals(client, engines):
    engines[TEXT].script = [RuntimeError("secret internal detail")]
    response = await client.post(
        "/v1/chat/completions", json={"model": TEXT, "messages": HI}, headers={"x-request-id": "crash-1"}
    )
    assert response.status_code == 500 and response.headers["x-request-id"] == "crash-1"
    error = error_of(response)
    assert error["type"] == "server_error" and "secret" not in response.text and "Traceback" not in response.text


async def test_unknown_route_and_method_in_openai_shape(client):
    missing = await client.get("/v1/nothing")
    assert missing.status_code == 404 and error_of(missing)["code"] == "not_found"
    wrong = await client.get("/v1/chat/completions")
    assert wrong.status_code == 405 and error_of(wrong)["code"] == "method_not_allowed"
    assert missing.headers["x-request-id"] and wrong.headers["x-request-id"]


async def test_request_id_is_echoed_and_sent_to_the_engine(client, engines):
    response = await client.post(
        "/v1/chat/completions", json={"model": TEXT, "messages": HI}, headers={"x-request-id": "client-id-42"}
    )
    assert response.headers["x-request-id"] == "client-id-42" and engines[TEXT].calls[0].request_id == "client-id-42"
    generated = await client.post(
        "/v1/chat/completions", json={"model": TEXT, "messages": HI}, headers={"x-request-id": "bad id\twith spaces"}
    )
    rid = generated.headers["x-request-id"]
    assert rid.startswith("req-") and engines[TEXT].calls[1].request_id == rid


async def test_streamed_response_is_an_event_stream(client):
    async with client.stream("POST", "/v1/chat/completions", json={"model": TEXT, "messages": HI, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        body = (await r.aread()).decode()
    assert body.startswith('data: {"id":"chatcmpl-') and body.endswith("data: [DONE]\n\n")


async def test_models_list_default_first_with_metadata(client):
    body = (await client.get("/v1/models")).json()
    assert body["object"] == "list" and body["default"] == TEXT
    first, second = body["data"]
    assert (first["id"], first["default"], second["id"], second["default"]) == (TEXT, True, OTHER, False)
    assert first["object"] == "model" and first["owned_by"] == "proxyvision" and isinstance(first["created"], int)
    assert first["stand_in_for"] == "mistralai/Big" and "capabilities" in first
    one = await client.get(f"/v1/models/{OTHER}")
    assert one.status_code == 200 and one.json()["id"] == OTHER
    assert (await client.get(f"/v1/models/{VISION}")).status_code == 404


async def test_health_and_readiness(client, engines):
    assert (await client.get("/health")).json() == {"status": "ok"}
    ready = await client.get("/ready")
    assert ready.status_code == 200 and ready.json()["engines"] == {TEXT: "SERVING", OTHER: "SERVING"}
    engines[OTHER].status = "NOT_SERVING"
    not_ready = await client.get("/ready")
    assert not_ready.status_code == 503 and not_ready.json()["engines"][OTHER] == "NOT_SERVING"
    assert not_ready.json()["status"] == "not ready"


async def test_openapi_document_is_served(client):
    doc = (await client.get("/openapi.json")).json()
    assert "/v1/chat/completions" in doc["paths"] and "/v1/models" in doc["paths"]


async def test_engine_calls_get_the_clients_timeout_when_it_is_shorter(client, engines):
    body = {"model": TEXT, "messages": [{"role": "user", "content": "hi"}]}
    assert (
        await client.post("/v1/chat/completions", json=body, headers={"X-Stainless-Timeout": "2.5"})
    ).status_code == 200
    assert (
        await client.post("/v1/chat/completions", json=body, headers={"X-Stainless-Timeout": "1e9"})
    ).status_code == 200
    assert (
        await client.post("/v1/chat/completions", json=body, headers={"X-Stainless-Timeout": "soon"})
    ).status_code == 200
    configured = 5.0  # make_state's GenerationCore deadline
    assert [call.timeout for call in engines[TEXT].calls] == [2.5, configured, configured]
