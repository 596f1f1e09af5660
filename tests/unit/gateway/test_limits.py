"""gateway.limits: a body over max_body_bytes is a 413 before it is read (Content-Length) or at the chunk that
crosses it (chunked); messages, text characters and max_tokens are checked on the parsed JSON before the
schema validates it; all in the OpenAI error shape, configurable, with defaults a public deployment keeps."""

from __future__ import annotations

import json

import httpx
import pytest

from services.api_gateway.limits import RequestLimitsMiddleware, check_chat_limits
from services.common.config import ImageLimits, RequestLimits
from services.common.errors import InvalidRequestError
from tests.support.images import data_url

from .fakes import TEXT, FakeTextEngine, hello_script
from .test_bad_inputs import WireCheckingEngine, hostile_app, hostile_config, openai_error

LIMITS = {"max_body_bytes": 10_000, "max_messages": 8, "max_text_chars": 1_000, "max_completion_tokens": 512}
HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture
def engine():
    return WireCheckingEngine(TEXT, hello_script())


@pytest.fixture
async def client(engine):
    app = await hostile_app(hostile_config(LIMITS), engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        yield c


def chat(**fields) -> dict:
    return {"model": TEXT, "messages": HI, **fields}


async def test_a_declared_content_length_over_the_limit_is_refused_without_reading_a_byte():
    sent, app_called = [], []

    async def app(scope, receive, send):
        app_called.append(scope)

    async def receive():
        raise AssertionError("the body was read")

    async def send(message):
        sent.append(message)

    middleware = RequestLimitsMiddleware(app, RequestLimits(max_body_bytes=100))
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": [(b"content-length", b"101")]}
    await middleware(scope, receive, send)
    assert app_called == [] and sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"]["code"] == "request_too_large"


async def test_a_chunked_body_is_refused_at_the_chunk_that_crosses_the_limit(client, engine):
    chunks_sent = []

    async def chunks():
        for i in range(100):  # 100 x 1000 bytes, no Content-Length: httpx sends it chunked
            chunks_sent.append(i)
            yield b" " * 1000

    response = await client.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert (
        response.request.headers["transfer-encoding"] == "chunked" and "content-length" not in response.request.headers
    )
    assert response.status_code == 413
    error = openai_error(response)
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "request_too_large", None)
    assert "10000 bytes" in error["message"]
    assert len(chunks_sent) == 11  # the 11th chunk crossed 10000 bytes; the other 89 were never asked for
    assert response.headers["x-request-id"] and engine.calls == []


async def test_a_chunked_body_within_the_limit_is_served_unchanged(client, engine):
    payload = json.dumps(chat(messages=[{"role": "user", "content": "chunked ✓"}])).encode()

    async def chunks():
        for start in range(0, len(payload), 7):
            yield payload[start : start + 7]

    response = await client.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert engine.calls[0].messages[0].content == "chunked ✓"


async def test_the_reported_40_mb_message_is_a_413_with_the_default_limits():
    engine = FakeTextEngine(TEXT, hello_script())
    app = await hostile_app(hostile_config(), engine)  # gateway.limits left at its defaults
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        response = await client.post(
            "/v1/chat/completions", json=chat(messages=[{"role": "user", "content": "x" * 40_000_000}])
        )
    assert response.status_code == 413 and openai_error(response)["code"] == "request_too_large"
    assert engine.calls == []


async def test_too_many_messages_are_refused_before_any_message_is_validated(client, engine):
    # Nine messages that are each invalid: the count is what is reported, so no message was looked at.
    response = await client.post("/v1/chat/completions", json=chat(messages=[{"role": "robot"}] * 9))
    error = openai_error(response)
    assert response.status_code == 400 and (error["param"], error["code"]) == ("messages", "too_many_messages")
    assert "at most 8" in error["message"]
    assert (await client.post("/v1/chat/completions", json=chat(messages=HI * 8))).status_code == 200


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "x" * 1001}],
        [{"role": "user", "content": "x" * 500}, {"role": "assistant", "content": "y" * 501}],
        [{"role": "user", "content": [{"type": "text", "text": "x" * 600}, {"type": "text", "text": "y" * 401}]}],
        [*HI, {"role": "assistant", "reasoning_content": "r" * 1000, "content": "done"}],
        [
            *HI,
            {
                "role": "assistant",
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "a" * 1000}}],
            },
        ],
    ],
)
async def test_text_is_counted_across_messages_parts_reasoning_and_tool_calls(client, engine, messages):
    response = await client.post("/v1/chat/completions", json=chat(messages=messages))
    error = openai_error(response)
    assert response.status_code == 400 and (error["param"], error["code"]) == ("messages", "text_too_long"), error
    assert engine.calls == []


def test_image_data_urls_are_not_text():
    limits = RequestLimits(max_text_chars=10)
    url = data_url(b"\0" * 300, "image/png")

    def request(text: str) -> dict:
        return {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}],
                }
            ]
        }

    check_chat_limits(request("ten chars!"), limits)  # 400 characters of URL beside it: not counted
    with pytest.raises(InvalidRequestError, match="11 characters"):
        check_chat_limits(request("eleven char"), limits)


@pytest.mark.parametrize("name", ["max_tokens", "max_completion_tokens"])
async def test_a_completion_budget_over_the_cap_is_a_400_naming_it_and_the_cap_itself_is_served(client, engine, name):
    response = await client.post("/v1/chat/completions", json=chat(**{name: 513}))
    error = openai_error(response)
    assert response.status_code == 400 and error["param"] == name and "at most 512" in error["message"]
    assert (await client.post("/v1/chat/completions", json=chat(**{name: 512}))).status_code == 200
    assert engine.calls[0].params.max_tokens == 512  # not clamped, not changed: what the client asked for


def test_checks_leave_what_is_not_their_business_to_the_schema():
    limits = RequestLimits(max_messages=3, max_text_chars=1, max_completion_tokens=1)
    for data in (
        [],
        "x",
        {"messages": "x" * 10},
        {"messages": [1, None, "x" * 10]},
        {"max_tokens": "9"},
        {"max_tokens": True},
    ):
        check_chat_limits(data, limits)
    with pytest.raises(InvalidRequestError):
        check_chat_limits({"max_tokens": 1e30}, limits)


def test_the_defaults_admit_one_largest_image_inline_and_refuse_40_mb():
    limits, images = RequestLimits(), ImageLimits()
    assert images.max_image_bytes * 4 / 3 + 64 * 1024 < limits.max_body_bytes < 40_000_000
    assert (limits.max_messages, limits.max_text_chars, limits.max_completion_tokens) == (2048, 1_000_000, 32768)


def test_limits_are_configurable_in_models_yaml():
    config = hostile_config({"max_body_bytes": 1, "max_messages": 2, "max_text_chars": 3, "max_completion_tokens": 4})
    assert config.gateway.limits == RequestLimits(
        max_body_bytes=1, max_messages=2, max_text_chars=3, max_completion_tokens=4
    )
