"""The Responses API end to end: the official openai SDK (`responses.create`, `responses.stream`, `responses.parse`,
`retrieve`, `delete`) -> real uvicorn gateway -> real gRPC engines with tiny stand-ins (the package's stack: conftest.py), including an agent's tool loop through
`function_call_output`, with and without stored responses."""

from __future__ import annotations

import json
from typing import Literal

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from services.common.tokenizers import load_tokenizer
from services.model_builder.scripted import SCRIPTED_ANSWER, SCRIPTED_REASONING
from tests.support.images import data_url, png
from tests.support.models_yaml import TEXT_MODEL

from .conftest import SCRIPTED

pytestmark = pytest.mark.e2e
WEATHER_PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city.",
    "parameters": WEATHER_PARAMS,
}
NAMED = {"type": "function", "name": "get_weather"}


class Person(BaseModel):
    """Bounded, so random weights close the object."""

    name: str = Field(max_length=8)
    age: int = Field(ge=0, le=120)
    color: Literal["red", "green", "blue"]


@pytest.fixture(scope="module")
def client(stack):
    return stack.client()


@pytest.fixture(scope="module")
def no_think(models) -> dict:
    """vLLM's logit_bias extra, banning the random-weight model's reasoning start: thinking, it would rarely
    reach its constrained answer within max_output_tokens."""
    token_id = load_tokenizer(str(models["text"])).convert_tokens_to_ids("[THINK]")
    return {"logit_bias": {str(token_id): -100}}


def test_a_string_input_counts_the_prompt_as_chat_completions_does(client):
    response = client.responses.create(model=TEXT_MODEL, input="Hello there", max_output_tokens=6, temperature=0)
    chat = client.chat.completions.create(
        model=TEXT_MODEL, messages=[{"role": "user", "content": "Hello there"}], max_tokens=6, temperature=0
    )
    assert response.object == "response" and response.status in ("completed", "incomplete")
    assert response.usage.input_tokens == chat.usage.prompt_tokens
    assert response.output_text == (chat.choices[0].message.content or "")  # greedy: the same answer
    assert response.usage.output_tokens == chat.usage.completion_tokens


def test_a_stream_builds_the_same_response_its_events_describe(client):
    with client.responses.stream(
        model=TEXT_MODEL, input="Tell me a story", max_output_tokens=8, temperature=0
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert final.output_text == text and final.usage.output_tokens == 8
    assert final.status == "incomplete" and final.incomplete_details.reason == "max_output_tokens"


def test_an_agent_tool_loop_through_stored_responses(client, no_think):
    first = client.responses.create(
        model=TEXT_MODEL,
        input="What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice=NAMED,
        max_output_tokens=96,
        temperature=1.0,
        extra_body={"seed": 0, **no_think},
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather", first.output
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER_PARAMS)
    follow = client.responses.create(
        model=TEXT_MODEL,
        previous_response_id=first.id,
        tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "18C and sunny"}],
        max_output_tokens=4,
        temperature=0,
    )
    assert follow.previous_response_id == first.id and follow.status in ("completed", "incomplete")
    # The follow-up's prompt is the whole conversation: the first prompt, the call, and its result.
    assert follow.usage.input_tokens > first.usage.input_tokens + len(calls[0].arguments) // 8


def test_an_agent_tool_loop_that_sends_its_items_back_without_a_store(client, no_think):
    items = [{"role": "user", "content": "What is the weather in Rome?"}]
    first = client.responses.create(
        model=TEXT_MODEL,
        input=items,
        tools=[WEATHER],
        tool_choice=NAMED,
        store=False,
        max_output_tokens=96,
        temperature=1.0,
        extra_body={"seed": 1, **no_think},
    )
    call = next(item for item in first.output if item.type == "function_call")
    items += [item.model_dump(exclude_none=True) for item in first.output]
    items.append({"type": "function_call_output", "call_id": call.call_id, "output": "22C"})
    follow = client.responses.create(
        model=TEXT_MODEL, input=items, tools=[WEATHER], store=False, max_output_tokens=4, temperature=0
    )
    assert follow.status in ("completed", "incomplete") and follow.usage.input_tokens > first.usage.input_tokens
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)  # store=False: nothing kept


def test_reasoning_is_a_reasoning_item_before_the_answer(client):
    response = client.responses.create(model=SCRIPTED, input="What is two plus two?", temperature=0)
    reasoning, message = response.output
    assert reasoning.type == "reasoning" and reasoning.content[0].text == SCRIPTED_REASONING
    assert message.type == "message" and response.output_text == SCRIPTED_ANSWER
    assert response.usage.output_tokens_details.reasoning_tokens > 0


def test_a_streamed_reasoning_comes_as_reasoning_text_deltas_first(client):
    with client.responses.stream(model=SCRIPTED, input="What is two plus two?", temperature=0) as stream:
        events = list(stream)
    reasoning = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    answer = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert (reasoning, answer) == (SCRIPTED_REASONING, SCRIPTED_ANSWER)
    first_text = next(i for i, e in enumerate(events) if e.type == "response.output_text.delta")
    assert all(e.type != "response.reasoning_text.delta" for e in events[first_text:])


def test_structured_output_through_text_format(client, no_think):
    response = client.responses.parse(
        model=TEXT_MODEL,
        input="A person, please.",
        text_format=Person,
        max_output_tokens=96,
        temperature=1.0,
        extra_body={"seed": 3, **no_think},
    )
    assert isinstance(response.output_parsed, Person), response.output_text


def test_an_image_is_captioned_by_the_proxy_vision_model(stack):
    body = {
        "model": TEXT_MODEL,
        "max_output_tokens": 4,
        "temperature": 0,
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is in this picture?"},
                    {"type": "input_image", "image_url": data_url(png((200, 30, 30)))},
                ],
            }
        ],
    }
    response = httpx.post(f"{stack.base_url}/v1/responses", json=body, timeout=120).json()
    (caption,) = response["proxy_vision"]["images"]
    assert caption["caption"] and (caption["message"], caption["index"]) == (0, 0)
    assert response["status"] in ("completed", "incomplete")
    # The next turn re-sends the image (from the stored conversation): its caption comes from the cache.
    follow = {
        "model": TEXT_MODEL,
        "max_output_tokens": 4,
        "temperature": 0,
        "previous_response_id": response["id"],
        "input": "And what colour is it?",
    }
    again = httpx.post(f"{stack.base_url}/v1/responses", json=follow, timeout=120).json()
    (cached,) = again["proxy_vision"]["images"]
    assert cached["cached"] and cached["caption"] == caption["caption"]


def test_stored_responses_are_retrieved_and_deleted(client):
    response = client.responses.create(model=TEXT_MODEL, input="Hi", max_output_tokens=2, temperature=0)
    assert client.responses.retrieve(response.id).output_text == response.output_text
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_bad_requests_are_sdk_errors_naming_the_field(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=TEXT_MODEL, input="Hi", tools=[{"type": "web_search"}])
    assert info.value.body["param"] == "tools"
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="gpt-9", input="Hi")
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=TEXT_MODEL, input="Hi", previous_response_id="resp_missing")
    assert info.value.body["param"] == "previous_response_id"
