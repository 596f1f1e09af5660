"""Anthropic Messages end to end: the official `anthropic` SDK -> real gateway -> real gRPC engines, one stack:

- ministral-3-tiny (TEXT_MODEL, random weights): answers, streams, counts;
- the scripted reasoning stand-in, whose greedy output is `[THINK]<reasoning>[/THINK]<answer></s>`: thinking
  blocks, stop sequences on a known answer, and tool calls (it thinks, then a named tool_choice constrains the
  answer to a valid call; random weights, once thinking, rarely stop, so TEXT_MODEL is not asked);
- the proxy vision model (qwen2-vl-tiny) captions base64 images, in a user turn and in a tool result.

Sampling parameters the SDK does not name (temperature) go in `extra_body`, as the SDK documents.
"""

from __future__ import annotations

import base64
import json

import anthropic
import httpx
import jsonschema
import pytest

from services.model_builder.scripted import SCRIPTED_ANSWER, SCRIPTED_COMPLETION_IDS, SCRIPTED_REASONING
from tests.support.images import png
from tests.support.models_yaml import TEXT_MODEL

from .conftest import SCRIPTED

pytestmark = pytest.mark.e2e
GREEDY = {"temperature": 0}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER_INPUT = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 4}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
WEATHER = {"name": "get_weather", "description": "Current weather in a city.", "input_schema": WEATHER_INPUT}
RED_PNG = {
    "type": "image",
    "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(png((200, 30, 30))).decode()},
}


@pytest.fixture(scope="module")
def client(stack):
    return anthropic.Anthropic(base_url=stack.base_url, api_key="not-needed", max_retries=0, timeout=120)


def text_of(message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def test_create_and_stream_give_the_same_greedy_answer(client):
    created = client.messages.create(
        model=TEXT_MODEL, max_tokens=6, messages=ASK, system="Be brief.", extra_body=GREEDY
    )
    assert created.type == "message" and created.role == "assistant" and created.model == TEXT_MODEL
    assert created.id.startswith("msg_") and created.stop_reason in ("end_turn", "max_tokens")
    assert 0 < created.usage.output_tokens <= 6 and created.usage.input_tokens > 0
    with client.messages.stream(
        model=TEXT_MODEL, max_tokens=6, messages=ASK, system="Be brief.", extra_body=GREEDY
    ) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == text_of(final) == text_of(created)
    assert (final.stop_reason, final.usage.input_tokens, final.usage.output_tokens) == (
        created.stop_reason,
        created.usage.input_tokens,
        created.usage.output_tokens,
    )


def test_max_tokens_ends_the_answer_with_stop_reason_max_tokens(client):
    message = client.messages.create(model=SCRIPTED, max_tokens=3, messages=ASK, extra_body=GREEDY)
    assert (message.stop_reason, message.stop_sequence, message.usage.output_tokens) == ("max_tokens", None, 3)


def test_count_tokens_equals_the_requests_input_tokens(client):
    fields = {"messages": ASK, "system": "You are terse.", "tools": [WEATHER]}
    counted = client.messages.count_tokens(model=TEXT_MODEL, **fields)
    answered = client.messages.create(model=TEXT_MODEL, max_tokens=1, extra_body=GREEDY, **fields)
    assert counted.input_tokens == answered.usage.input_tokens > 0
    without_tools = client.messages.count_tokens(model=TEXT_MODEL, messages=ASK, system="You are terse.")
    assert without_tools.input_tokens < counted.input_tokens  # the tool is rendered into the prompt


def test_a_tool_use_and_its_result_make_a_loop(client):
    first = client.messages.create(
        model=SCRIPTED,
        max_tokens=300,
        messages=ASK,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
        thinking={"type": "adaptive"},
        extra_body=GREEDY,
    )
    assert first.stop_reason == "tool_use", first
    assert [block.type for block in first.content] == ["thinking", "tool_use"]  # it thinks, then must call
    call = first.content[1]
    assert call.name == "get_weather" and call.id
    jsonschema.validate(call.input, WEATHER_INPUT)
    history = [
        *ASK,
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": call.id, "content": '{"temperature": 21, "sky": "clear"}'}
            ],
        },
    ]
    second = client.messages.create(
        model=TEXT_MODEL, max_tokens=8, messages=history, tools=[WEATHER], extra_body=GREEDY
    )
    assert second.stop_reason in ("end_turn", "max_tokens", "tool_use")
    # The thinking, the call and its result are part of the prompt now.
    assert second.usage.input_tokens > first.usage.input_tokens + 10
    assert client.messages.count_tokens(model=SCRIPTED, messages=history, tools=[WEATHER]).input_tokens == (
        second.usage.input_tokens
    )


def test_a_streamed_tool_call_assembles_into_its_input(client):
    kwargs = {
        "model": SCRIPTED,
        "max_tokens": 300,
        "messages": ASK,
        "tools": [WEATHER],
        "tool_choice": {"type": "tool", "name": "get_weather"},
        "extra_body": GREEDY,
    }
    whole = client.messages.create(**kwargs)
    with client.messages.stream(**kwargs) as stream:
        final = stream.get_final_message()
    calls = [(b.name, b.input) for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use" and calls == [
        (b.name, b.input) for b in whole.content if b.type == "tool_use"
    ]


def test_a_base64_image_is_captioned_by_the_proxy_vision_model(client):
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is in this image?"}, RED_PNG]}]
    message = client.messages.create(model=TEXT_MODEL, max_tokens=4, messages=messages, extra_body=GREEDY)
    (told,) = message.model_extra["proxy_vision"]["images"]
    assert told["caption"] and told["index"] == 0
    # The caption is cached: counting describes the image again and gets the same prompt.
    assert client.messages.count_tokens(model=TEXT_MODEL, messages=messages).input_tokens == message.usage.input_tokens
    text_only = client.messages.count_tokens(
        model=TEXT_MODEL, messages=[{"role": "user", "content": "What is in this image?"}]
    )
    assert message.usage.input_tokens > text_only.input_tokens


def test_an_image_in_a_tool_result_is_captioned(client):
    messages = [
        *ASK,
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris", "unit": "celsius"},
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "A webcam shot:"}, RED_PNG],
                }
            ],
        },
    ]
    message = client.messages.create(
        model=TEXT_MODEL, max_tokens=4, messages=messages, tools=[WEATHER], extra_body=GREEDY
    )
    (told,) = message.model_extra["proxy_vision"]["images"]
    assert told["caption"]


def test_thinking_blocks_come_from_the_reasoning_model(client):
    thinking = {"type": "enabled", "budget_tokens": 1024}
    message = client.messages.create(
        model=SCRIPTED, max_tokens=1100, messages=ASK, thinking=thinking, extra_body=GREEDY
    )
    assert [(b.type, getattr(b, "thinking", None) or getattr(b, "text", None)) for b in message.content] == [
        ("thinking", SCRIPTED_REASONING),
        ("text", SCRIPTED_ANSWER),
    ]
    assert message.stop_reason == "end_turn" and message.usage.output_tokens == len(SCRIPTED_COMPLETION_IDS)
    with client.messages.stream(
        model=SCRIPTED, max_tokens=64, messages=ASK, thinking={"type": "adaptive"}, extra_body=GREEDY
    ) as stream:
        kinds = [event.delta.type for event in stream if event.type == "content_block_delta"]
        final = stream.get_final_message()
    assert [(b.type, getattr(b, "thinking", None) or getattr(b, "text", None)) for b in final.content] == [
        ("thinking", SCRIPTED_REASONING),
        ("text", SCRIPTED_ANSWER),
    ]
    assert kinds.index("signature_delta") < kinds.index("text_delta")  # the thinking block is signed and closed first
    hidden = client.messages.create(model=SCRIPTED, max_tokens=64, messages=ASK, extra_body=GREEDY)
    assert [b.type for b in hidden.content] == ["text"] and text_of(hidden) == SCRIPTED_ANSWER


def test_a_stop_sequence_ends_the_answer_and_is_named(client):
    # "think" is only in the reasoning, which stop sequences never cut; "four" is in the answer.
    kwargs = {
        "model": SCRIPTED,
        "max_tokens": 64,
        "messages": ASK,
        "stop_sequences": ["think", "four"],
        "extra_body": GREEDY,
    }
    message = client.messages.create(**kwargs)
    assert (message.stop_reason, message.stop_sequence, text_of(message)) == ("stop_sequence", "four", "It is ")
    with client.messages.stream(**kwargs) as stream:
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence, text_of(final)) == ("stop_sequence", "four", "It is ")
    assert SCRIPTED_ANSWER.startswith("It is four")


def test_bad_requests_raise_the_sdks_errors(client):
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model=TEXT_MODEL, max_tokens=4, messages=ASK, extra_body={"temperature": 1.5})
    assert bad.value.status_code == 400 and bad.value.body["error"]["type"] == "invalid_request_error"
    assert "temperature" in bad.value.body["error"]["message"]
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="claude-opus-4-1", max_tokens=4, messages=ASK)
    assert missing.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "The model 'claude-opus-4-1' does not exist"},
    }
    with pytest.raises(anthropic.BadRequestError) as prefill:
        client.messages.create(model=TEXT_MODEL, max_tokens=4, messages=[*ASK, {"role": "assistant", "content": "It"}])
    assert "prefill" in prefill.value.body["error"]["message"]


def test_raw_http_sends_anthropics_named_events(stack):
    body = {"model": SCRIPTED, "max_tokens": 64, "messages": ASK, "stream": True, "temperature": 0}
    reply = httpx.post(
        f"{stack.base_url}/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"}, timeout=120
    )
    names = [line.removeprefix("event: ") for line in reply.text.splitlines() if line.startswith("event: ")]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    data = [json.loads(line[6:]) for line in reply.text.splitlines() if line.startswith("data: ")]
    assert [d["type"] for d in data] == names
