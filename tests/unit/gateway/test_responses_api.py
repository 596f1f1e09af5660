"""`/v1/responses` over fake engines: translation into the engine's turns, output items, the typed stream's order
and sequence numbers, stored responses (`previous_response_id`, GET, DELETE, TTL and count bounds), and errors."""

from __future__ import annotations

import json

import httpx
import pytest

from services.api_gateway.app import build_app
from services.api_gateway.dependencies import get_state
from services.api_gateway.serving.response_store import MemoryResponseStore
from services.common.config import ResponseStoreSettings
from services.common.generation import Accepted, ReasoningDelta, TextDelta, ToolCall, ToolCallDelta

from .fakes import TEXT, FakeTextEngine, finished, hello_script, make_config, make_state, reasoning_script

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def call_script() -> list:
    return [
        Accepted(9),
        TextDelta("Let me check."),
        ToolCallDelta(0, "call_1", "get_weather"),
        ToolCallDelta(0, arguments='{"city": '),
        ToolCallDelta(0, arguments='"Paris"}'),
        finished("tool_calls", prompt=9, completion=6),
    ]


@pytest.fixture
def engine():
    return FakeTextEngine(TEXT, hello_script())


@pytest.fixture
async def client(engine):
    app = build_app(make_config())
    state = make_state({TEXT: engine})
    app.dependency_overrides[get_state] = lambda: state
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        yield c


def events_of(text: str) -> list[dict]:
    """The typed events of a stream, checking each frame's `event:` line names its data's type."""
    events = []
    for frame in text.strip().split("\n\n"):
        if frame.startswith(":"):
            continue
        kind, data = frame.split("\n", 1)
        event = json.loads(data.removeprefix("data: "))
        assert kind == f"event: {event['type']}"
        events.append(event)
    return events


async def test_a_string_input_is_one_user_message_after_the_instructions(client, engine):
    response = await client.post(
        "/v1/responses",
        json={"model": TEXT, "input": "Hi", "instructions": "Be terse.", "max_output_tokens": 5, "temperature": 0.2},
    )
    body = response.json()
    assert response.status_code == 200, body
    assert [(t.role, t.content) for t in engine.calls[0].messages] == [("system", "Be terse."), ("user", "Hi")]
    assert engine.calls[0].params.max_tokens == 5 and engine.calls[0].params.temperature == 0.2
    assert body["object"] == "response" and body["status"] == "completed" and body["id"].startswith("resp_")
    (message,) = body["output"]
    assert message["type"] == "message" and message["content"][0] == {
        "type": "output_text",
        "text": "Hello wörld",
        "annotations": [],
        "logprobs": [],
    }
    assert body["usage"] == {
        "input_tokens": 7,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 2,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 9,
    }


async def test_items_fold_into_chat_turns_with_calls_results_and_reasoning(client, engine):
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "Look."}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "18C, sunny"},
    ]
    response = await client.post("/v1/responses", json={"model": TEXT, "input": items, "tools": [WEATHER]})
    assert response.status_code == 200, response.text
    user, assistant, tool = engine.calls[0].messages
    assert (user.role, user.content) == ("user", "Weather in Paris?")
    assert (assistant.content, assistant.reasoning) == ("Checking.", "Look.")
    assert assistant.tool_calls == (ToolCall("call_1", "get_weather", '{"city":"Paris"}'),)
    assert (tool.role, tool.content, tool.tool_call_id, tool.name) == ("tool", "18C, sunny", "call_1", "get_weather")
    options = engine.calls[0].options
    assert [t.name for t in options.tools] == ["get_weather"] and options.tool_choice.mode == "auto"


async def test_tool_choice_and_text_format_reach_the_engine(client, engine):
    fmt = {"type": "json_schema", "name": "city", "schema": {"type": "object"}, "strict": True}
    await client.post(
        "/v1/responses",
        json={
            "model": TEXT,
            "input": "x",
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "parallel_tool_calls": False,
            "text": {"format": fmt},
        },
    )
    options = engine.calls[0].options
    assert (options.tool_choice.mode, options.tool_choice.name, options.parallel_tool_calls) == (
        "named",
        "get_weather",
        False,
    )
    assert (options.response_format.type, options.response_format.name, json.loads(options.response_format.schema)) == (
        "json_schema",
        "city",
        {"type": "object"},
    )


async def test_a_call_is_a_function_call_item_after_the_text():
    state = make_state({TEXT: FakeTextEngine(TEXT, call_script())})
    plan = await state.responses.plan(_request({"model": TEXT, "input": "Paris?", "tools": [WEATHER]}))
    body = await state.responses.complete(plan, "r")
    message, call = body["output"]
    assert message["content"][0]["text"] == "Let me check."
    assert {k: call[k] for k in ("type", "call_id", "name", "arguments", "status")} == {
        "type": "function_call",
        "call_id": "call_1",
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
        "status": "completed",
    }


async def test_reasoning_is_a_reasoning_item_first():
    state = make_state({TEXT: FakeTextEngine(TEXT, reasoning_script())})
    body = await state.responses.complete(await state.responses.plan(_request({"model": TEXT, "input": "Hi"})), "r")
    reasoning, message = body["output"]
    assert reasoning["type"] == "reasoning" and reasoning["content"] == [
        {"type": "reasoning_text", "text": "Let me think."}
    ]
    assert message["content"][0]["text"] == "Hello!"


async def test_a_cut_answer_is_incomplete_with_its_reason():
    script = [Accepted(3), TextDelta("Hel"), finished("length", prompt=3, completion=1)]
    state = make_state({TEXT: FakeTextEngine(TEXT, script)})
    body = await state.responses.complete(await state.responses.plan(_request({"model": TEXT, "input": "Hi"})), "r")
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}


async def test_the_stream_is_typed_events_in_order_with_sequence_numbers():
    script = [
        Accepted(9),
        ReasoningDelta("Hm."),
        TextDelta("Let me check."),
        ToolCallDelta(0, "call_1", "get_weather"),
        ToolCallDelta(0, arguments='{"city":"Paris"}'),
        finished("tool_calls", prompt=9, completion=6),
    ]
    state = make_state({TEXT: FakeTextEngine(TEXT, script)})
    plan = await state.responses.plan(_request({"model": TEXT, "input": "x", "tools": [WEATHER], "stream": True}))
    events = events_of("".join([frame async for frame in await state.responses.stream(plan, "r")]))
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["reasoning", "message", "function_call"]
    assert [e["output_index"] for e in events if e["type"] == "response.output_item.added"] == [0, 1, 2]
    assert final["output"][2]["arguments"] == '{"city":"Paris"}' and final["usage"]["output_tokens"] == 6


async def test_an_error_after_the_first_byte_is_response_failed():
    from services.common.errors import InternalError

    script = [Accepted(3), TextDelta("Hel"), InternalError("engine crashed")]
    state = make_state({TEXT: FakeTextEngine(TEXT, script)})
    plan = await state.responses.plan(_request({"model": TEXT, "input": "x", "stream": True}))
    events = events_of("".join([frame async for frame in await state.responses.stream(plan, "r")]))
    assert events[-1]["type"] == "response.failed"
    assert (
        events[-1]["response"]["status"] == "failed" and "engine crashed" in events[-1]["response"]["error"]["message"]
    )


async def test_previous_response_id_continues_the_stored_conversation(client, engine):
    engine.scripts = [call_script(), hello_script()]
    first = (
        await client.post(
            "/v1/responses", json={"model": TEXT, "input": "Paris?", "tools": [WEATHER], "instructions": "Only first."}
        )
    ).json()
    call = first["output"][1]
    follow = await client.post(
        "/v1/responses",
        json={
            "model": TEXT,
            "previous_response_id": first["id"],
            "tools": [WEATHER],
            "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "18C"}],
        },
    )
    assert follow.status_code == 200, follow.text
    turns = engine.calls[1].messages
    assert [t.role for t in turns] == ["user", "assistant", "tool"]  # instructions are not carried over
    assert turns[1].content == "Let me check." and turns[1].tool_calls[0].name == "get_weather"
    assert (turns[2].tool_call_id, turns[2].name, turns[2].content) == ("call_1", "get_weather", "18C")
    assert follow.json()["previous_response_id"] == first["id"]


async def test_stored_responses_can_be_read_and_deleted_and_unstored_ones_cannot(client):
    stored = (await client.post("/v1/responses", json={"model": TEXT, "input": "Hi"})).json()
    assert (await client.get(f"/v1/responses/{stored['id']}")).json() == stored
    deleted = await client.delete(f"/v1/responses/{stored['id']}")
    assert deleted.json() == {"id": stored["id"], "object": "response", "deleted": True}
    missing = await client.get(f"/v1/responses/{stored['id']}")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "response_not_found"
    unstored = (await client.post("/v1/responses", json={"model": TEXT, "input": "Hi", "store": False})).json()
    assert (await client.get(f"/v1/responses/{unstored['id']}")).status_code == 404
    follow = await client.post(
        "/v1/responses", json={"model": TEXT, "input": "Hi", "previous_response_id": unstored["id"]}
    )
    assert follow.status_code == 400 and follow.json()["error"]["param"] == "previous_response_id"


@pytest.mark.parametrize(
    "body, param",
    [
        ({"input": []}, "input"),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools"),
        ({"input": "x", "tools": 1.5}, "tools"),  # found by the OpenAPI fuzzer: was a 500
        ({"input": "x", "tool_choice": "required"}, "tool_choice"),
        ({"input": "x", "background": True}, "background"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f_1"}]}]}, "input[0].content[0]"),
        ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0]"),
        ({"input": [{"role": "assistant", "content": "only me"}]}, "input"),
    ],
)
async def test_bad_requests_are_400_naming_the_field(client, body, param):
    response = await client.post("/v1/responses", json={"model": TEXT, **body})
    error = response.json()["error"]
    assert response.status_code == 400 and error["type"] == "invalid_request_error", response.text
    assert error["param"] == param, error


async def test_an_unknown_model_is_404(client):
    response = await client.post("/v1/responses", json={"model": "gpt-9", "input": "x"})
    assert response.status_code == 404 and response.json()["error"]["param"] == "model"


async def test_the_memory_store_is_bounded_by_count_age_and_size():
    now = [0.0]
    store = MemoryResponseStore(ResponseStoreSettings(ttl_secs=10, max_entries=2, max_bytes=200), clock=lambda: now[0])
    assert await store.put("a", {"x": 1}) and await store.put("b", {"x": 2}) and await store.put("c", {"x": 3})
    assert await store.get("a") is None and await store.get("b") == {"x": 2}  # the oldest went first
    now[0] = 11.0
    assert await store.get("b") is None  # expired
    assert not await store.put("big", {"x": "y" * 500}) and await store.get("big") is None


def _request(body: dict):
    from services.api_gateway.schemas.responses import ResponsesRequest

    return ResponsesRequest.model_validate(body)


@pytest.mark.parametrize(
    "body, param, code",
    [
        ({"input": [{"role": "user", "content": "x"}] * 3000}, "input", "too_many_messages"),
        ({"input": "x" * 2_000_001}, "input", "text_too_long"),
        (
            {"input": [{"type": "function_call_output", "call_id": "c", "output": "x" * 2_000_001}]},
            "input",
            "text_too_long",
        ),
        ({"input": "x", "max_output_tokens": 10**6}, "max_output_tokens", "invalid_value"),
    ],
)
async def test_the_request_limits_apply_and_name_the_responses_fields(client, body, param, code):
    response = await client.post("/v1/responses", json={"model": TEXT, **body})
    error = response.json()["error"]
    assert (response.status_code, error["param"], error["code"]) == (400, param, code), error


async def test_a_response_too_large_to_store_says_it_was_not_stored():
    state = make_state({TEXT: FakeTextEngine(TEXT, hello_script())})
    state.responses.store = MemoryResponseStore(ResponseStoreSettings(max_bytes=100))
    body = await state.responses.complete(await state.responses.plan(_request({"model": TEXT, "input": "Hi"})), "r")
    assert body["store"] is False and await state.responses.store.get(body["id"]) is None


async def test_an_image_in_a_function_call_output_is_captioned():
    from .fakes import FakeVision, make_vision_state
    from .test_captions import RED, config
    from .test_image_policy import image_part

    engine = FakeTextEngine(TEXT, hello_script())
    state = await make_vision_state(config(), {TEXT: engine}, FakeVision())
    items = [
        {"role": "user", "content": "Take a screenshot."},
        {"type": "function_call", "call_id": "c1", "name": "screenshot", "arguments": "{}"},
        {
            "type": "function_call_output",
            "call_id": "c1",
            "output": [
                {"type": "input_text", "text": "Here it is:"},
                {"type": "input_image", "image_url": image_part(RED)["image_url"]["url"]},
            ],
        },
    ]
    plan = await state.responses.plan(_request({"model": TEXT, "input": items}))
    body = await state.responses.complete(plan, "r")
    tool = engine.calls[0].messages[2]
    assert (tool.role, tool.tool_call_id, tool.name) == ("tool", "c1", "screenshot")
    assert tool.content.startswith("Here it is:\n\nImage 1: ") and body["proxy_vision"]["images"][0]["message"] == 2
