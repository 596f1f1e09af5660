"""Anthropic Messages over fake engines: the request as the engine's turns, answers and stop reasons, the named SSE
events in Anthropic's order, count_tokens, and errors in Anthropic's shape and statuses under /v1/messages."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json

import httpx
import pytest

from services.api_gateway.app import build_app
from services.api_gateway.dependencies import get_state
from services.api_gateway.schemas.anthropic import MessagesRequest
from services.api_gateway.serving.protocols.anthropic import messages_conversation
from services.api_gateway.serving.protocols.anthropic_output import PING
from services.common.config import parse_models_config
from services.common.errors import (
    ContextLengthExceededError,
    DeadlineExceededError,
    EngineUnavailableError,
    OverloadedError,
)
from services.common.generation import (
    Accepted,
    ChatTurn,
    Finished,
    FinishReason,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    ToolCallDelta,
)
from tests.support.images import data_url, png

from .fakes import (
    TEXT,
    VISION,
    FakeTextEngine,
    FakeVision,
    finished,
    hello_script,
    make_config,
    make_state,
    make_vision_state,
    reasoning_script,
)

HI = [{"role": "user", "content": "Hi"}]
RED = png((200, 30, 30))
RED_HASH = hashlib.sha256(RED).hexdigest()
WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def body(**fields) -> dict:
    return {"model": TEXT, "max_tokens": 64, "messages": HI, **fields}


def image_block(payload: bytes = RED) -> dict:
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(payload).decode()},
    }


def tool_script() -> list:
    """A named call streamed as the engine streams it: the opening piece, then fragments of its arguments."""
    return [
        Accepted(9),
        ToolCallDelta(0, "call_1", "get_weather"),
        ToolCallDelta(0, arguments='{"city": '),
        ToolCallDelta(0, arguments='"Paris"}'),
        finished("tool_calls", prompt=9, completion=5),
    ]


def client_of(state, config=None) -> httpx.AsyncClient:
    app = build_app(config or make_config())
    app.dependency_overrides[get_state] = lambda: state
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")


async def post(engine: FakeTextEngine, payload: dict, path: str = "/v1/messages", **headers) -> httpx.Response:
    async with client_of(make_state({TEXT: engine})) as client:
        return await client.post(path, json=payload, headers=headers)


def events(transcript: str) -> list[tuple[str, dict]]:
    """The (event, data) pairs of an SSE transcript; SSE comments (timings) are skipped."""
    pairs = []
    for block in transcript.strip().split("\n\n"):
        lines = [line for line in block.split("\n") if not line.startswith(":")]
        if lines:
            kind, data = lines
            assert kind.startswith("event: ") and data.startswith("data: "), block
            payload = json.loads(data.removeprefix("data: "))
            assert payload["type"] == kind.removeprefix("event: ")  # each event's data names its type
            pairs.append((payload["type"], payload))
    return pairs


def anthropic_error(response: httpx.Response) -> dict:
    payload = response.json()
    assert (
        set(payload) == {"type", "error"}
        and payload["type"] == "error"
        and set(payload["error"]) == {"type", "message"}
    )
    return payload["error"]


# --- translation ----------------------------------------------------------------------------------------------
def test_a_conversation_with_tools_thinking_and_images_becomes_the_cores_messages():
    request = MessagesRequest.model_validate(
        body(
            system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "Weather?"}, image_block()]},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "Call the tool.", "signature": "sig"},
                        {"type": "redacted_thinking", "data": "opaque"},
                        {"type": "text", "text": "Let me look."},
                        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "content": [
                                {"type": "text", "text": "Sunny"},
                                {"type": "image", "source": {"type": "url", "url": "https://example.com/sky.png"}},
                            ],
                        },
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "timeout", "is_error": True},
                        {"type": "text", "text": "And tomorrow?"},
                    ],
                },
            ],
            tools=[WEATHER],
            tool_choice={"type": "any", "disable_parallel_tool_use": True},
            stop_sequences=["END", ""],
            temperature=0.5,
            top_k=40,
            metadata={"user_id": "u-42"},
        )
    )
    conversation = messages_conversation(request)
    system, user, assistant, result, error, follow_up = conversation.messages
    assert (system.role, system.parts) == ("system", ("Be brief.\nBe kind.",))
    assert user.role == "user" and user.parts[0] == "Weather?"
    assert user.parts[1].url == data_url(RED)
    assert user.parts[1].param == "messages[0].content[1].source"
    assert (assistant.parts, assistant.reasoning) == (("Let me look.",), "Call the tool.")
    assert assistant.tool_calls == (ToolCall("toolu_1", "get_weather", '{"city": "Paris"}'),)
    assert (result.role, result.tool_call_id, result.name, result.parts[0]) == (
        "tool",
        "toolu_1",
        "get_weather",
        "Sunny",
    )
    assert result.parts[1].url == "https://example.com/sky.png"
    assert result.parts[1].param == "messages[2].content[0].content[1].source"
    assert (error.role, error.parts) == ("tool", ("Error:", "timeout"))
    assert (follow_up.role, follow_up.parts) == ("user", ("And tomorrow?",))
    options, params = conversation.options, conversation.params
    assert (options.tool_choice.mode, options.tool_choice.name, options.parallel_tool_calls) == ("required", "", False)
    assert [t.name for t in options.tools] == ["get_weather"] and json.loads(options.tools[0].parameters)[
        "type"
    ] == "object"
    assert (params.max_tokens, params.temperature, params.top_k, params.stop) == (64, 0.5, 40, ("END",))
    assert conversation.user == "u-42"


@pytest.mark.parametrize(
    "choice, mode, name",
    [
        ({"type": "auto"}, "auto", ""),
        ({"type": "none"}, "none", ""),
        ({"type": "any"}, "required", ""),
        ({"type": "tool", "name": "get_weather"}, "named", "get_weather"),
    ],
)
def test_tool_choice_maps_to_the_engines(choice, mode, name):
    options = messages_conversation(MessagesRequest.model_validate(body(tools=[WEATHER], tool_choice=choice))).options
    assert (options.tool_choice.mode, options.tool_choice.name, options.parallel_tool_calls) == (mode, name, None)


def test_output_config_format_is_a_json_schema_answer():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    request = MessagesRequest.model_validate(
        body(output_config={"format": {"type": "json_schema", "schema": schema}, "effort": "low"})
    )
    options = messages_conversation(request).options
    assert (options.response_format.type, json.loads(options.response_format.schema)) == ("json_schema", schema)


async def test_the_engine_gets_the_turns_and_the_answer_names_the_model_as_requested():
    engine = FakeTextEngine(TEXT, hello_script())
    response = await post(engine, body(model="default", system="Be brief."))
    assert response.status_code == 200
    answer = response.json()
    assert answer["id"].startswith("msg_") and answer["model"] == "default"
    assert {k: answer[k] for k in ("type", "role", "content", "stop_reason", "stop_sequence", "usage")} == {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": "Hello wörld"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 7, "output_tokens": 2},
    }
    assert engine.calls[0].messages == [ChatTurn("system", "Be brief."), ChatTurn("user", "Hi")]


# --- answers and stop reasons ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "thinking, shown",
    [
        (None, False),
        ({"type": "disabled"}, False),
        ({"type": "adaptive"}, True),
        ({"type": "enabled", "budget_tokens": 1024}, True),
        ({"type": "adaptive", "display": "omitted"}, False),
    ],
)
async def test_thinking_blocks_only_when_thinking_is_enabled_or_adaptive(thinking, shown):
    response = await post(FakeTextEngine(TEXT, reasoning_script()), body(max_tokens=2048, thinking=thinking))
    content = response.json()["content"]
    text = {"type": "text", "text": "Hello!"}
    assert content == ([{"type": "thinking", "thinking": "Let me think.", "signature": ""}, text] if shown else [text])
    assert response.json()["usage"]["output_tokens"] == 6  # the thinking is generated and counted either way


async def test_a_tool_call_is_a_tool_use_block_with_parsed_input():
    response = await post(FakeTextEngine(TEXT, tool_script()), body(tools=[WEATHER], tool_choice={"type": "any"}))
    answer = response.json()
    assert answer["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}
    ]
    assert (answer["stop_reason"], answer["usage"]) == ("tool_use", {"input_tokens": 9, "output_tokens": 5})


async def test_max_tokens_reached_is_stop_reason_max_tokens():
    script = [Accepted(7), TextDelta("Hel"), finished("length", completion=1)]
    answer = (await post(FakeTextEngine(TEXT, script), body(max_tokens=1))).json()
    assert (answer["stop_reason"], answer["stop_sequence"], answer["content"]) == (
        "max_tokens",
        None,
        [{"type": "text", "text": "Hel"}],
    )


async def test_a_matched_stop_sequence_is_stop_reason_stop_sequence_streamed_or_not():
    script = [Accepted(7), TextDelta("It is "), Finished(FinishReason.STOP, 7, 3, stop_sequence="four")]
    answer = (await post(FakeTextEngine(TEXT, script), body(stop_sequences=["four"]))).json()
    assert (answer["stop_reason"], answer["stop_sequence"]) == ("stop_sequence", "four")
    streamed = events((await post(FakeTextEngine(TEXT, script), body(stop_sequences=["four"], stream=True))).text)
    assert streamed[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "four"}


# --- streams ---------------------------------------------------------------------------------------------------
async def test_a_stream_is_anthropics_events_in_order():
    script = [Accepted(9), ReasoningDelta("Hmm."), TextDelta("Let me"), TextDelta(" look."), *tool_script()[1:]]
    response = await post(
        FakeTextEngine(TEXT, script), body(stream=True, tools=[WEATHER], thinking={"type": "adaptive"})
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    got = events(response.text)
    assert [kind for kind, _ in got] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",  # thinking, signed
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",  # text
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",  # tool_use
        "message_delta",
        "message_stop",
    ]
    start = got[0][1]["message"]
    assert (start["role"], start["content"], start["stop_reason"], start["model"]) == ("assistant", [], None, TEXT)
    assert start["usage"]["input_tokens"] == 9  # a text-only request was accepted (and counted) before the stream
    blocks = [data for kind, data in got if kind == "content_block_start"]
    assert [b["index"] for b in blocks] == [0, 1, 2]
    assert [b["content_block"] for b in blocks] == [
        {"type": "thinking", "thinking": "", "signature": ""},
        {"type": "text", "text": ""},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}},
    ]
    deltas = [(data["index"], data["delta"]) for kind, data in got if kind == "content_block_delta"]
    assert deltas == [
        (0, {"type": "thinking_delta", "thinking": "Hmm."}),
        (0, {"type": "signature_delta", "signature": ""}),
        (1, {"type": "text_delta", "text": "Let me"}),
        (1, {"type": "text_delta", "text": " look."}),
        (2, {"type": "input_json_delta", "partial_json": '{"city": '}),
        (2, {"type": "input_json_delta", "partial_json": '"Paris"}'}),
    ]
    assert [data["index"] for kind, data in got if kind == "content_block_stop"] == [0, 1, 2]
    assert got[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"input_tokens": 9, "output_tokens": 5},
    }


async def test_a_stream_without_thinking_shown_has_only_the_answer():
    response = await post(FakeTextEngine(TEXT, reasoning_script()), body(stream=True))
    got = events(response.text)
    assert [data["content_block"]["type"] for kind, data in got if kind == "content_block_start"] == ["text"]
    assert "".join(d["delta"]["text"] for k, d in got if k == "content_block_delta") == "Hello!"


async def test_a_queued_stream_pings_until_the_first_token():
    gate = asyncio.Event()
    state = make_state({TEXT: FakeTextEngine(TEXT, [Accepted(7), gate, *hello_script()[1:]])}, keepalive_secs=0.01)
    request = MessagesRequest.model_validate(body(stream=True))
    frames = aiter(await state.messages.stream(await state.messages.plan(request), "r"))
    assert (await anext(frames)).startswith("event: message_start\n")
    assert await anext(frames) == PING == 'event: ping\ndata: {"type":"ping"}\n\n'
    gate.set()
    rest = [frame async for frame in frames if frame != PING]
    assert [kind for kind, _ in events("".join(rest))][-2:] == ["message_delta", "message_stop"]


@pytest.mark.parametrize(
    "failure, kind",
    [
        (EngineUnavailableError("the engine went away"), "api_error"),
        (OverloadedError("queue full"), "overloaded_error"),
        (ContextLengthExceededError("too long"), "invalid_request_error"),
    ],
)
async def test_an_error_after_the_first_byte_is_an_error_event_and_the_end(failure, kind):
    response = await post(FakeTextEngine(TEXT, [Accepted(7), TextDelta("Hel"), failure]), body(stream=True))
    got = events(response.text)
    assert response.status_code == 200 and got[-1] == (
        "error",
        {"type": "error", "error": {"type": kind, "message": failure.message}},
    )
    assert "message_stop" not in [k for k, _ in got]


# --- images ----------------------------------------------------------------------------------------------------
async def test_images_in_a_user_turn_and_a_tool_result_are_captioned():
    engine = FakeTextEngine(TEXT, hello_script())
    state = await make_vision_state(make_config(vision=True), {TEXT: engine}, FakeVision({RED_HASH: "a red square"}))
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}, image_block()]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [image_block()]}]},
    ]
    async with client_of(state, make_config(vision=True)) as client:
        response = await client.post("/v1/messages", json=body(messages=messages, tools=[WEATHER]))
    assert response.status_code == 200
    user, _, tool = engine.calls[0].messages
    assert user.content == "What is this?\n\nImage 1: a red square"
    assert (tool.role, tool.tool_call_id, tool.content) == ("tool", "t1", "Image 1: a red square")
    assert [image["caption"] for image in response.json()["proxy_vision"]["images"]] == ["a red square"] * 2


# --- count_tokens ----------------------------------------------------------------------------------------------
async def test_count_tokens_counts_what_the_request_would_send():
    engine = FakeTextEngine(TEXT, tool_script(), prompt_tokens=9)
    state = make_state({TEXT: engine})
    fields = {"system": "Be brief.", "tools": [WEATHER], "tool_choice": {"type": "tool", "name": "get_weather"}}
    async with client_of(state) as client:
        counted = await client.post("/v1/messages/count_tokens", json={"model": TEXT, "messages": HI, **fields})
        answered = await client.post("/v1/messages", json=body(**fields))
    assert counted.status_code == 200 and counted.json() == {"input_tokens": 9}
    assert answered.json()["usage"]["input_tokens"] == 9
    count, call = engine.counts[0], engine.calls[0]
    assert (count.messages, count.options, count.affinity_key) == (call.messages, call.options, call.affinity_key)


async def test_count_tokens_describes_images_first():
    engine = FakeTextEngine(TEXT, hello_script(), prompt_tokens=31)
    vision = FakeVision({RED_HASH: "a red square"})
    state = await make_vision_state(make_config(vision=True), {TEXT: engine}, vision)
    messages = [{"role": "user", "content": [image_block()]}]
    async with client_of(state, make_config(vision=True)) as client:
        response = await client.post("/v1/messages/count_tokens", json={"model": TEXT, "messages": messages})
    assert response.json() == {"input_tokens": 31}
    assert len(vision.calls) == 1 and engine.counts[0].messages[0].content == "Image 1: a red square"
    assert engine.calls == []  # nothing generated


async def test_count_tokens_needs_no_max_tokens_but_refuses_what_messages_refuses():
    engine = FakeTextEngine(TEXT, hello_script())
    ok = await post(engine, {"model": TEXT, "messages": HI}, "/v1/messages/count_tokens")
    unknown = await post(engine, {"model": "nope", "messages": HI}, "/v1/messages/count_tokens")
    assert ok.status_code == 200 and (unknown.status_code, anthropic_error(unknown)["type"]) == (404, "not_found_error")


# --- errors ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "payload, says",
    [
        ({"model": TEXT, "messages": HI}, "max_tokens"),
        (body(temperature=1.5), "temperature"),
        (body(messages=[]), "messages"),
        (body(messages=[*HI, {"role": "assistant", "content": "Sure"}]), "prefill"),
        (
            body(messages=[{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]),
            "tool_use block, which a user message cannot have",
        ),
        (body(messages=[{"role": "user", "content": [{"type": "document", "source": {}}]}]), "messages[0].content[0]"),
        (body(thinking={"type": "enabled", "budget_tokens": 1024}), "must be less than max_tokens"),
        (body(thinking={"type": "enabled"}), "budget_tokens is required"),
        (body(tools=[{"type": "web_search_20250305", "name": "web_search"}]), "server tools"),
        (body(tools=[WEATHER], tool_choice={"type": "tool", "name": "other"}), "not one of the tools"),
        (body(tool_choice={"type": "any"}), "requires tools"),
        (body(stop_sequences=[str(i) for i in range(17)]), "stop_sequences"),
        (
            body(
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {**image_block(), "source": {"type": "base64", "media_type": "image/bmp", "data": "AA=="}}
                        ],
                    }
                ]
            ),
            "media_type",
        ),
        (body(max_tokens=10**6), "max_tokens"),  # over gateway.limits.max_completion_tokens
    ],
)
async def test_bad_requests_are_400_invalid_request_error(payload, says):
    response = await post(FakeTextEngine(TEXT, hello_script()), payload)
    error = anthropic_error(response)
    assert (response.status_code, error["type"]) == (400, "invalid_request_error") and says in error["message"]


async def test_unknown_model_is_404_not_found_error():
    response = await post(FakeTextEngine(TEXT, hello_script()), body(model="claude-opus-4"))
    assert (response.status_code, anthropic_error(response)["type"]) == (404, "not_found_error")


@pytest.mark.parametrize("content, says", [(b"{not json", "could not parse"), (b"", "empty")])
async def test_bad_json_is_400_invalid_request_error(content, says):
    async with client_of(make_state({TEXT: FakeTextEngine(TEXT, hello_script())})) as client:
        response = await client.post("/v1/messages", content=content, headers={"content-type": "application/json"})
    error = anthropic_error(response)
    assert (response.status_code, error["type"]) == (400, "invalid_request_error") and says in error["message"]


@pytest.mark.parametrize(
    "refusal, status, kind, retry_after",
    [
        (OverloadedError("queue full"), 529, "overloaded_error", "1"),
        (EngineUnavailableError("restarting"), 503, "api_error", "1"),
        (DeadlineExceededError("too slow"), 504, "timeout_error", None),
        (ContextLengthExceededError("too long"), 400, "invalid_request_error", None),
    ],
)
async def test_engine_refusals_have_anthropics_statuses(refusal, status, kind, retry_after):
    for stream in (False, True):
        response = await post(FakeTextEngine(TEXT, [refusal]), body(stream=stream))
        assert (response.status_code, anthropic_error(response)) == (status, {"type": kind, "message": refusal.message})
        assert response.headers.get("retry-after") == retry_after


async def test_a_body_over_the_limit_is_413_request_too_large():
    config = parse_models_config(
        {
            "models": [{"name": TEXT, "hf_id": "x/text", "endpoint": "127.0.0.1:1"}],
            "gateway": {"limits": {"max_body_bytes": 1000}},
        }
    )
    engine = FakeTextEngine(TEXT, hello_script())
    async with client_of(make_state({TEXT: engine}, config), config) as client:
        response = await client.post("/v1/messages", json=body(system="x" * 2000))
    assert (response.status_code, anthropic_error(response)["type"]) == (413, "request_too_large")
    assert engine.calls == []


async def test_an_unexpected_exception_is_500_api_error_without_internals():
    response = await post(FakeTextEngine(TEXT, [RuntimeError("secret internal detail")]), body())
    assert (response.status_code, anthropic_error(response)["type"]) == (500, "api_error")
    assert "secret" not in response.text


async def test_unknown_paths_under_messages_are_anthropic_404s_and_other_paths_stay_openai():
    async with client_of(make_state({TEXT: FakeTextEngine(TEXT, hello_script())})) as client:
        unknown = await client.post("/v1/messages/batches", json={})
        wrong_method = await client.get("/v1/messages")
        chat = await client.post("/v1/chat/completions", json={"model": "nope", "messages": HI})
    assert (unknown.status_code, anthropic_error(unknown)["type"]) == (404, "not_found_error")
    assert (wrong_method.status_code, anthropic_error(wrong_method)["type"]) == (405, "invalid_request_error")
    assert chat.status_code == 404 and chat.json()["error"]["code"] == "model_not_found"  # OpenAI's shape there


async def test_api_keys_x_api_key_or_bearer_and_anthropics_401():
    config = parse_models_config(
        {
            "models": [{"name": TEXT, "hf_id": "x/text", "endpoint": "127.0.0.1:1"}],
            "gateway": {"api_keys": ["sk-right"]},
        }
    )
    async with client_of(make_state({TEXT: FakeTextEngine(TEXT, hello_script())}, config), config) as client:
        missing = await client.post("/v1/messages", json=body())
        wrong = await client.post("/v1/messages", json=body(), headers={"x-api-key": "sk-wrong"})
        by_header = await client.post(
            "/v1/messages",
            json=body(),
            headers={"x-api-key": "sk-right", "anthropic-version": "2023-06-01", "anthropic-beta": "tools-2024"},
        )
        by_bearer = await client.post(
            "/v1/messages/count_tokens",
            json={"model": TEXT, "messages": HI},
            headers={"authorization": "Bearer sk-right"},
        )
        chat = await client.post(
            "/v1/chat/completions", json={"model": TEXT, "messages": HI}, headers={"x-api-key": "sk-wrong"}
        )
    for refused in (missing, wrong):
        assert (refused.status_code, anthropic_error(refused)["type"]) == (401, "authentication_error")
    assert "x-api-key" in anthropic_error(missing)["message"]
    assert by_header.status_code == 200 and by_bearer.status_code == 200
    assert chat.status_code == 401 and chat.json()["error"]["code"] == "invalid_api_key"


async def test_the_openapi_document_lists_both_routes_with_anthropics_error_body():
    async with client_of(make_state({TEXT: FakeTextEngine(TEXT, hello_script())})) as client:
        doc = (await client.get("/openapi.json")).json()
    messages = doc["paths"]["/v1/messages"]["post"]
    count = doc["paths"]["/v1/messages/count_tokens"]["post"]
    ref = {"$ref": "#/components/schemas/AnthropicErrorResponse"}
    for operation in (messages, count):
        assert operation["responses"]["400"]["content"]["application/json"]["schema"] == ref
        assert operation["responses"]["404"]["content"]["application/json"]["schema"] == ref
    assert "529" in messages["responses"] and "text/event-stream" in messages["responses"]["200"]["content"]
    assert "max_tokens" in doc["components"]["schemas"]["MessagesRequest"]["required"]
    assert "max_tokens" not in doc["components"]["schemas"]["CountTokensRequest"]["properties"]


async def test_the_vision_model_is_not_a_messages_model():
    config = make_config(vision=True)
    async with client_of(make_state({TEXT: FakeTextEngine(TEXT, hello_script())}, config), config) as client:
        response = await client.post("/v1/messages", json=body(model=VISION))
    assert (response.status_code, anthropic_error(response)["type"]) == (400, "invalid_request_error")
    assert "vision model" in anthropic_error(response)["message"]
