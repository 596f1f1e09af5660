"""The real gateway (uvicorn on a free port) over a real grpc.aio fake text engine, driven by the
official `openai` SDK: completions, streams, every error class, request ids, disconnect -> cancel,
models, health and readiness; tool calls (streamed ones assembled by the SDK's stream helper), the
tool history sent back, logprobs and n choices.

Engine, gateway and async clients share the test's event loop; the synchronous SDK runs in a thread.
"""

from __future__ import annotations

import asyncio
import socket

import httpx
import openai
import pytest
from grpc_health.v1 import health_pb2

from services.common.pb.proxyvision.v1 import text_engine_pb2 as pb
from tests.support.fake_text_engine import STAND_IN, TEXT, TOOL_CALL, call_id, start_fake_text_engine
from tests.support.models_yaml import ModelsYaml
from tests.support.stack import gateway_in_process

GHOST = "ghost-model"  # configured, but nothing listens at its endpoint


@pytest.fixture(scope="module")
async def engine():
    """The fake engine on 127.0.0.1:<free port>, with the standard health service SERVING."""
    server, servicer = await start_fake_text_engine()
    yield servicer
    await server.stop(0)


def serve_gateway(endpoints: dict[str, str], timeout: float):
    """The real app under real uvicorn, on a socket bound to a free loopback port: a model per endpoint."""
    config = ModelsYaml().gateway(request_timeout_secs=timeout)
    for name, target in endpoints.items():
        config.model(name, hf_id=STAND_IN, endpoint=target)
    return gateway_in_process(config)


@pytest.fixture(scope="module")
async def gateway(engine):
    async with serve_gateway({TEXT: engine.address}, timeout=10.0) as url:
        yield url


@pytest.fixture(scope="module")
async def edge_gateway(engine):
    """A 0.5 s engine deadline."""
    async with serve_gateway({TEXT: engine.address}, 0.5) as url:
        yield url


@pytest.fixture(scope="module")
async def down_gateway(engine):
    """A model whose engine is down (a bound port nobody listens on), under the usual 10 s deadline: the refused
    connection must be what the client hears, however long a loaded machine takes to see it (under the edge
    gateway's 0.5 s it was once a 504 on two xdist workers)."""
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    async with serve_gateway({TEXT: engine.address, GHOST: f"127.0.0.1:{dead.getsockname()[1]}"}, 10.0) as url:
        yield url
    dead.close()


def sync_client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=10)


def async_client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=10)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


async def test_non_streamed_completion(gateway, engine):
    client = sync_client(gateway)
    reply = await asyncio.to_thread(client.chat.completions.create, model=TEXT, messages=user("the quick brown fox"))
    assert reply.id.startswith("chatcmpl-") and reply.object == "chat.completion" and reply.model == TEXT
    assert reply.choices[0].message.role == "assistant" and reply.choices[0].message.content == "the quick brown fox"
    assert reply.choices[0].finish_reason == "stop"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (4, 4, 8)


async def test_max_tokens_gives_length_and_parameters_pass_through(gateway, engine):
    reply = await async_client(gateway).chat.completions.create(
        model="default",
        messages=user("one two three four"),
        max_completion_tokens=2,
        temperature=0.3,
        top_p=0.9,
        seed=7,
        stop=["zz"],
        presence_penalty=0.5,
        extra_body={"top_k": 5},
    )
    assert reply.choices[0].message.content == "one two" and reply.choices[0].finish_reason == "length"
    sampling = engine.calls[-1][0].sampling
    assert (sampling.max_tokens, sampling.top_k, sampling.seed, list(sampling.stop)) == (2, 5, 7, ["zz"])
    assert sampling.temperature == pytest.approx(0.3) and sampling.presence_penalty == pytest.approx(0.5)
    assert not sampling.HasField("frequency_penalty")  # unset: the engine applies the model's default


async def test_stream_with_usage(gateway):
    stream = await async_client(gateway).chat.completions.create(
        model=TEXT, messages=user("hello streaming world"), stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "hello streaming world"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 6
    assert len({c.id for c in chunks}) == 1


async def test_stream_without_usage(gateway):
    def consume():
        return list(sync_client(gateway).chat.completions.create(model=TEXT, messages=user("a b"), stream=True))

    chunks = await asyncio.to_thread(consume)
    assert all(c.usage is None for c in chunks) and chunks[-1].choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "a b"


async def test_bad_requests_are_bad_request_errors(gateway):
    client = async_client(gateway)
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model=TEXT, messages=user("hi"), temperature=3)
    assert info.value.status_code == 400 and info.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model=TEXT, messages=user("hi"), n=9)  # gateway.max_n is 8
    assert info.value.body["param"] == "n"
    async with httpx.AsyncClient() as raw:
        response = await raw.post(
            f"{gateway}/v1/chat/completions", content=b'{"model": ', headers={"content-type": "application/json"}
        )
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("stream", [False, True])
async def test_context_too_long_is_bad_request(gateway, stream):
    with pytest.raises(openai.BadRequestError) as info:
        await async_client(gateway).chat.completions.create(model=TEXT, messages=user("TOO_LONG"), stream=stream)
    assert info.value.code == "context_length_exceeded" and info.value.param == "messages"


async def test_unknown_model_is_not_found(gateway):
    with pytest.raises(openai.NotFoundError) as info:
        await async_client(gateway).chat.completions.create(model="gpt-9", messages=user("hi"))
    assert info.value.code == "model_not_found"


@pytest.mark.parametrize("stream", [False, True])
async def test_engine_down_is_503(down_gateway, stream):
    with pytest.raises(openai.InternalServerError) as info:
        await async_client(down_gateway).chat.completions.create(model=GHOST, messages=user("hi"), stream=stream)
    assert info.value.status_code == 503 and info.value.code == "engine_unavailable"


async def test_deadline_is_504_and_cancels_the_engine_call(edge_gateway, engine):
    client = sync_client(edge_gateway)
    with pytest.raises(openai.InternalServerError) as info:
        await asyncio.to_thread(
            client.chat.completions.create,
            model=TEXT,
            messages=user("SLEEP"),
            extra_headers={"x-request-id": "deadline-1"},
        )
    assert info.value.status_code == 504 and info.value.body["type"] == "timeout_error"
    await asyncio.wait_for(engine.cancelled["deadline-1"].wait(), 5)


async def test_error_after_first_byte_is_api_error(gateway):
    stream = await async_client(gateway).chat.completions.create(model=TEXT, messages=user("FAIL_MIDWAY"), stream=True)
    received = []
    with pytest.raises(openai.APIError, match="device fell over"):
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert "partial" in received
    with pytest.raises(openai.InternalServerError) as info:
        await async_client(gateway).chat.completions.create(model=TEXT, messages=user("FAIL_MIDWAY"))
    assert info.value.status_code == 500


async def test_request_id_reaches_the_engine(gateway, engine):
    raw = await async_client(gateway).chat.completions.with_raw_response.create(
        model=TEXT, messages=user("hi"), extra_headers={"x-request-id": "trace-me-7"}
    )
    assert raw.headers["x-request-id"] == "trace-me-7"
    request, metadata = engine.calls[-1]
    assert metadata["x-request-id"] == "trace-me-7" and request.request_id == "trace-me-7"
    anonymous = await async_client(gateway).chat.completions.with_raw_response.create(model=TEXT, messages=user("hi"))
    assert anonymous.headers["x-request-id"] == engine.calls[-1][1]["x-request-id"] != "trace-me-7"


async def test_client_disconnect_mid_stream_cancels_the_engine_call(gateway, engine):
    stream = await async_client(gateway).chat.completions.create(
        model=TEXT, messages=user("FOREVER"), stream=True, extra_headers={"x-request-id": "leaver-1"}
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    await stream.close()
    await asyncio.wait_for(engine.cancelled["leaver-1"].wait(), 5)


async def test_client_disconnect_while_waiting_for_a_completion_cancels_the_engine_call(gateway, engine):
    async with httpx.AsyncClient(timeout=0.3) as raw:
        with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
            await raw.post(
                f"{gateway}/v1/chat/completions",
                json={"model": TEXT, "messages": user("FOREVER")},
                headers={"x-request-id": "leaver-2"},
            )
    await asyncio.wait_for(engine.cancelled["leaver-2"].wait(), 5)


async def test_models(gateway):
    client = async_client(gateway)
    models = await client.models.list()
    assert [m.id for m in models.data] == [TEXT]
    item = models.data[0].model_dump()
    assert item["default"] is True and item["stand_in_for"] == STAND_IN and item["owned_by"] == "proxyvision"
    assert (await client.models.retrieve(TEXT)).id == TEXT
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("gpt-9")


async def test_health_and_readiness(gateway, engine):
    async with httpx.AsyncClient(base_url=gateway) as raw:
        assert (await raw.get("/health")).json() == {"status": "ok"}
        ready = await raw.get("/ready")
        assert ready.status_code == 200 and ready.json()["engines"] == {TEXT: "SERVING"}
        await engine.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        try:
            not_ready = await raw.get("/ready")
        finally:
            await engine.health.set("", health_pb2.HealthCheckResponse.SERVING)
        assert not_ready.status_code == 503 and not_ready.json()["engines"] == {TEXT: "NOT_SERVING"}
        assert (await raw.get("/ready")).status_code == 200


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
TWO_CALLS = f'{TOOL_CALL}get_weather {{"city": "Paris"}} ;; get_weather {{"city": "Rome"}}'


async def test_streamed_tool_calls_are_assembled_by_the_sdk(gateway, engine):
    client = async_client(gateway)
    async with client.chat.completions.stream(
        model=TEXT, messages=user(TWO_CALLS), tools=[WEATHER_TOOL], tool_choice="required", parallel_tool_calls=True
    ) as stream:
        pieces = [
            event.arguments_delta async for event in stream if event.type == "tool_calls.function.arguments.delta"
        ]
        final = await stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls" and len(pieces) > 2  # the arguments really came in fragments
    assert [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls] == [
        (call_id(0), "get_weather", '{"city": "Paris"}'),
        (call_id(1), "get_weather", '{"city": "Rome"}'),
    ]
    request = engine.calls[-1][0]
    assert [(t.name, t.description) for t in request.tools] == [("get_weather", "Weather in a city")]
    assert request.tool_choice.mode == pb.ToolChoice.TOOL_CHOICE_REQUIRED and request.parallel_tool_calls


async def test_non_streamed_tool_calls_and_the_tool_history_round_trip(gateway, engine):
    client = async_client(gateway)
    reply = await client.chat.completions.create(model=TEXT, messages=user(TWO_CALLS), tools=[WEATHER_TOOL])
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason == "tool_calls" and message.content is None and len(message.tool_calls) == 2
    history = [
        *user(TWO_CALLS),
        message.model_dump(exclude_none=True),
        *({"role": "tool", "tool_call_id": c.id, "content": f"sunny in call {c.id}"} for c in message.tool_calls),
        *user("thanks"),
    ]
    again = await client.chat.completions.create(model=TEXT, messages=history, tools=[WEATHER_TOOL])
    assert again.choices[0].message.content == "thanks"
    sent = engine.calls[-1][0].messages
    assert [(c.id, c.name, c.arguments) for c in sent[1].tool_calls] == [
        (c.id, c.function.name, c.function.arguments) for c in message.tool_calls
    ]
    assert [(m.role, m.tool_call_id, m.content) for m in sent[2:4]] == [
        ("tool", call_id(i), f"sunny in call {call_id(i)}") for i in range(2)
    ]


@pytest.mark.parametrize("stream", [False, True])
async def test_logprobs(gateway, engine, stream):
    client = async_client(gateway)
    asked = dict(model=TEXT, messages=user("one two three"), logprobs=True, top_logprobs=2)
    if stream:
        chunks = [c async for c in await client.chat.completions.create(**asked, stream=True)]
        entries = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    else:
        entries = (await client.chat.completions.create(**asked)).choices[0].logprobs.content
    assert [e.token for e in entries] == ["one", " two", " three"] and {e.logprob for e in entries} == {-0.5}
    assert entries[1].bytes == list(b" two") and [t.token for t in entries[1].top_logprobs] == [" two", "alt1"]
    assert engine.calls[-1][0].sampling.top_logprobs == 2


async def test_n_choices(gateway, engine):
    client = async_client(gateway)
    reply = await client.chat.completions.create(model=TEXT, messages=user("a b c"), n=3, seed=10)
    assert [(c.index, c.message.content, c.finish_reason) for c in reply.choices] == [
        (i, "a b c", "stop") for i in range(3)
    ]
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (3, 9)
    assert sorted(call[0].sampling.seed for call in engine.calls[-3:]) == [10, 11, 12]
    stream = await client.chat.completions.create(
        model=TEXT, messages=user("x y"), n=3, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    texts = {
        i: "".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == i)
        for i in range(3)
    }
    assert texts == {0: "x y", 1: "x y", 2: "x y"}
    assert sorted(c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason == "stop") == [0, 1, 2]
    assert chunks[-1].usage.completion_tokens == 6 and chunks[-1].usage.prompt_tokens == 2
