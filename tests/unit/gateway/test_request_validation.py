"""What the request schema refuses over HTTP: a 400 in the OpenAI shape whose `param` names the field, for
the issue-12 parameters (tools, tool_choice, messages with tool data, response_format, logprobs, n,
logit_bias, vLLM's extras) and what stays unsupported; and what it accepts."""

from __future__ import annotations

import httpx
import pytest

from services.api_gateway.app import build_app
from services.api_gateway.dependencies import get_state

from .fakes import TEXT, FakeTextEngine, hello_script, make_config, make_state

HI = [{"role": "user", "content": "Hi"}]
F = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}


@pytest.fixture
def engine():
    return FakeTextEngine(TEXT, hello_script())


@pytest.fixture
async def client(engine):
    app = build_app(make_config())
    state = make_state({TEXT: engine}, max_n=4)
    app.dependency_overrides[get_state] = lambda: state
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        yield c


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools[0].function.name"),
        ({"tools": [{"type": "function", "function": {"name": "x" * 65}}]}, "tools[0].function.name"),
        ({"tools": [{"type": "custom", "function": {"name": "f"}}]}, "tools[0].type"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": "{}"}}]},
            "tools[0].function.parameters",
        ),
        ({"tools": [{"type": "function"}]}, "tools[0].function"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": "sometimes", "tools": [F]}, "tool_choice"),
        ({"tool_choice": {"type": "function", "function": {"name": "other"}}, "tools": [F]}, "tool_choice"),
        ({"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}, "tool_choice"),
        ({"parallel_tool_calls": "sometimes"}, "parallel_tool_calls"),
        ({"messages": [{"role": "user", "content": None}]}, "messages[0].content"),
        ({"messages": [{"role": "system"}, *HI]}, "messages[0].content"),
        ({"messages": [*HI, {"role": "assistant", "content": None}]}, "messages[1].content"),
        ({"messages": [*HI, {"role": "tool", "content": "42"}]}, "messages[1].tool_call_id"),
        ({"messages": [*HI, {"role": "tool", "tool_call_id": "call_1"}]}, "messages[1].content"),
        ({"messages": [{"role": "user", "content": "x", "tool_calls": [CALL]}]}, "messages[0].tool_calls"),
        (
            {"messages": [*HI, {"role": "assistant", "tool_calls": [{"id": "c", "type": "function"}]}]},
            "messages[1].tool_calls[0].function",
        ),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "a b"}}},
            "response_format.json_schema.name",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": []}}},
            "response_format.json_schema.schema",
        ),
        ({"logprobs": "sometimes"}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
        ({"n": 0}, "n"),
        ({"n": 5}, "n"),  # gateway.max_n is 4 here
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
        ({"logit_bias": {"5": 101}}, "logit_bias"),
        ({"logit_bias": {str(i): 1 for i in range(301)}}, "logit_bias"),
        ({"min_tokens": -1}, "min_tokens"),
        ({"min_tokens": 10, "max_tokens": 5}, "min_tokens"),
        ({"min_tokens": 10, "max_completion_tokens": 5}, "min_tokens"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"repetition_penalty": 10.5}, "repetition_penalty"),
        ({"min_p": 1.5}, "min_p"),
        ({"stop_token_ids": ["a"]}, "stop_token_ids[0]"),
        ({"stop_token_ids": [-1]}, "stop_token_ids[0]"),
        ({"ignore_eos": "never"}, "ignore_eos"),
        # Still unsupported, refused rather than silently ignored:
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"function_call": "auto"}, "function_call"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities[1]"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
            "messages[0].content[0]",
        ),
    ],
)
async def test_invalid_issue_12_parameters_are_400_naming_the_field(client, fields, param):
    response = await client.post("/v1/chat/completions", json={"model": TEXT, "messages": HI, **fields})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param), error


async def test_the_issue_12_parameters_are_accepted_and_reach_the_engine(client, engine):
    body = {
        "model": TEXT,
        "messages": [
            *HI,
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        "tools": [F],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "logprobs": True,
        "top_logprobs": 20,
        "n": 4,
        "seed": 1,
        "logit_bias": {"5": -100, "17": 2.5},
        "min_tokens": 2,
        "max_tokens": 8,
        "repetition_penalty": 1.1,
        "min_p": 0.05,
        "stop_token_ids": [2, 7],
        "ignore_eos": True,
        "response_format": {"type": "json_object"},
        "modalities": ["text"],
    }
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert [c["index"] for c in response.json()["choices"]] == [0, 1, 2, 3]
    params = engine.calls[0].params
    assert (params.logit_bias, params.stop_token_ids, params.min_tokens, params.ignore_eos) == (
        {5: -100, 17: 2.5},
        (2, 7),
        2,
        True,
    )
    assert (params.repetition_penalty, params.min_p, params.top_logprobs) == (1.1, 0.05, 20)
    assert (
        engine.calls[0].messages[2].tool_call_id == "call_1"
        and engine.calls[0].options.response_format.type == "json_object"
    )


async def test_the_sampling_bounds_are_the_ones_models_yaml_validates_defaults_with():
    from services.api_gateway.schemas.chat import ChatCompletionRequest
    from services.common.config import SamplingDefaults

    request, config = (
        ChatCompletionRequest.model_json_schema()["properties"],
        SamplingDefaults.model_json_schema()["properties"],
    )
    for name in (
        "temperature",
        "top_p",
        "top_k",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
        "min_p",
    ):
        ours = next(v for v in request[name]["anyOf"] if v["type"] != "null")
        theirs = next(v for v in config[name]["anyOf"] if v["type"] != "null")
        assert {k: v for k, v in ours.items() if k != "description"} == {
            k: v for k, v in theirs.items() if k != "description"
        }
