"""Tool calling through the chat service over a fake engine: the stream's tool-call chunks exactly as
OpenAI sends them (golden transcript), the non-streamed `message.tool_calls`, the finish reason, tools and
tool_choice reaching the engine, and tool history (calls, call ids, tool results) reaching it."""

from __future__ import annotations

import json
from pathlib import Path

from services.common.generation import Accepted, TextDelta, Tool, ToolCall, ToolCallDelta

from .fakes import TEXT, FakeTextEngine, finished, make_state
from .test_chat_service import normalized, request, run_stream

GOLDEN = Path(__file__).parent / "fixtures" / "stream_tool_calls.sse"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
TIME = {"type": "function", "function": {"name": "get_time"}}


def tool_script() -> list:
    """Two calls, as the engine streams them: an opening delta (id, name), then argument fragments."""
    return [
        Accepted(9),
        ToolCallDelta(0, "call_abc", "get_weather"),
        ToolCallDelta(0, arguments='{"city": '),
        ToolCallDelta(0, arguments='"Paris"}'),
        ToolCallDelta(1, "call_def", "get_time", "{}"),
        finished("tool_calls", prompt=9, completion=12),
    ]


def data_of(transcript: str) -> list[dict]:
    return [json.loads(line[6:]) for line in transcript.splitlines() if line.startswith("data: {")]


async def test_streamed_tool_calls_match_the_golden_transcript():
    state = make_state({TEXT: FakeTextEngine(TEXT, tool_script())})
    transcript = await run_stream(
        state, request(stream=True, tools=[WEATHER, TIME], stream_options={"include_usage": True})
    )
    assert normalized(transcript) == GOLDEN.read_text(encoding="utf-8")


async def test_streamed_tool_call_chunks_have_openais_shape():
    state = make_state({TEXT: FakeTextEngine(TEXT, tool_script())})
    deltas = [c["choices"][0] for c in data_of(await run_stream(state, request(stream=True, tools=[WEATHER, TIME])))]
    calls = [d["delta"]["tool_calls"] for d in deltas if "tool_calls" in d["delta"]]
    assert calls == [
        [{"index": 0, "id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": ""}}],
        [{"index": 0, "function": {"arguments": '{"city": '}}],
        [{"index": 0, "function": {"arguments": '"Paris"}'}}],
        [{"index": 1, "id": "call_def", "type": "function", "function": {"name": "get_time", "arguments": ""}}],
        [{"index": 1, "function": {"arguments": "{}"}}],  # an opening delta with arguments: two chunks
    ]
    assert deltas[-1] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}


async def test_non_streamed_tool_calls_have_full_arguments_and_null_content():
    state = make_state({TEXT: FakeTextEngine(TEXT, tool_script())})
    body = await state.chat.complete(await state.chat.plan(request(tools=[WEATHER, TIME])), "r")
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_abc",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            },
            {"id": "call_def", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
        ],
    }


async def test_text_before_a_tool_call_is_kept_as_content():
    script = [
        Accepted(3),
        TextDelta("Let me check."),
        ToolCallDelta(0, "call_x", "get_time", "{}"),
        finished("tool_calls"),
    ]
    state = make_state({TEXT: FakeTextEngine(TEXT, script)})
    message = (await state.chat.complete(await state.chat.plan(request(tools=[TIME])), "r"))["choices"][0]["message"]
    assert message["content"] == "Let me check." and message["tool_calls"][0]["function"]["name"] == "get_time"


async def test_tools_and_tool_choice_reach_the_engine():
    engine = FakeTextEngine(TEXT, tool_script())
    state = make_state({TEXT: engine})
    named = {"type": "function", "function": {"name": "get_time"}}
    await state.chat.complete(
        await state.chat.plan(request(tools=[WEATHER, TIME], tool_choice=named, parallel_tool_calls=False)), "r"
    )
    options = engine.calls[0].options
    assert options.tools == (
        Tool("get_weather", "Weather in a city", json.dumps(WEATHER["function"]["parameters"])),
        Tool("get_time"),
    )
    assert (options.tool_choice.mode, options.tool_choice.name, options.parallel_tool_calls) == (
        "named",
        "get_time",
        False,
    )
    await state.chat.complete(await state.chat.plan(request(tools=[TIME], tool_choice="required")), "r")
    assert (engine.calls[1].options.tool_choice.mode, engine.calls[1].options.parallel_tool_calls) == ("required", None)
    await state.chat.complete(await state.chat.plan(request()), "r")
    assert engine.calls[2].options.tools == () and engine.calls[2].options.tool_choice.mode == "auto"


async def test_response_formats_reach_the_engine():
    engine = FakeTextEngine(TEXT, [Accepted(1), TextDelta("{}"), finished()])
    state = make_state({TEXT: engine})
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    for fmt in ({"type": "json_object"}, {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}):
        await state.chat.complete(await state.chat.plan(request(response_format=fmt)), "r")
    first, second = (c.options for c in engine.calls)
    assert (first.response_format.type, first.response_format.schema) == ("json_object", "")
    assert (second.response_format.type, json.loads(second.response_format.schema), second.response_format.name) == (
        "json_schema",
        schema,
        "answer",
    )


async def test_tool_history_reaches_the_engine():
    engine = FakeTextEngine(TEXT, [Accepted(1), TextDelta("It is sunny."), finished()])
    state = make_state({TEXT: engine})
    call = {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    body = request(
        tools=[WEATHER],
        messages=[
            {"role": "user", "content": "Weather in Paris?", "name": "alice"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {
                "role": "tool",
                "tool_call_id": "call_abc",
                "name": "get_weather",
                "content": [{"type": "text", "text": "sunny"}],
            },
        ],
    )
    await state.chat.complete(await state.chat.plan(body), "r")
    user, assistant, tool = engine.calls[0].messages
    assert (user.content, user.name) == ("Weather in Paris?", "")  # a user's name is not sent
    assert (assistant.role, assistant.content) == ("assistant", "")
    assert assistant.tool_calls == (ToolCall("call_abc", "get_weather", '{"city": "Paris"}'),)
    assert (tool.role, tool.content, tool.tool_call_id, tool.name) == ("tool", "sunny", "call_abc", "get_weather")
