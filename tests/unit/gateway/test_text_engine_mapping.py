"""clients/text_engine.py: GenerationParams, OutputOptions and ChatTurns to the proto by name (dicts to
maps, tuples to repeated fields), and the engine's stream messages back to events."""

from __future__ import annotations

from dataclasses import fields

import pytest

from services.api_gateway.clients.text_engine import (
    ChatTurn,
    Finished,
    GenerationParams,
    OutputOptions,
    TextDelta,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    TopLogprob,
    to_event,  # fmt: skip
    to_request,
)
from services.common.pb.proxyvision.v1 import text_engine_pb2 as pb


def test_every_generation_parameter_is_a_sampling_field_of_the_proto():
    assert {f.name for f in fields(GenerationParams)} <= set(pb.SamplingParams.DESCRIPTOR.fields_by_name)


def test_sampling_parameters_map_by_name_and_unset_ones_stay_unset():
    params = GenerationParams(max_tokens=8, seed=3, stop=("END",), repetition_penalty=1.2, min_p=0.1, min_tokens=2,
                              logit_bias={5: -100.0, 7: 2.5}, stop_token_ids=(1, 2), ignore_eos=True, top_logprobs=0)  # fmt: skip
    sampling = to_request("m", [ChatTurn("user", "hi")], params, OutputOptions(), "r").sampling
    assert (sampling.max_tokens, sampling.seed, list(sampling.stop), sampling.min_tokens) == (8, 3, ["END"], 2)
    assert dict(sampling.logit_bias) == {5: -100.0, 7: 2.5} and list(sampling.stop_token_ids) == [1, 2]
    assert sampling.ignore_eos and sampling.HasField("top_logprobs") and sampling.top_logprobs == 0
    assert sampling.repetition_penalty == pytest.approx(1.2) and sampling.min_p == pytest.approx(0.1)
    empty = to_request("m", [], GenerationParams(), OutputOptions(), "r").sampling
    assert empty.ListFields() == []


def test_tools_choice_and_format_map_to_the_request():
    options = OutputOptions(tools=(ToolSpec("f", "does f", '{"type": "object"}', True), ToolSpec("g")),
                            tool_choice="named", tool_name="g", parallel_tool_calls=False,
                            response_format="json_schema", schema='{"type": "object"}', schema_name="out")  # fmt: skip
    request = to_request("m", [], GenerationParams(), options, "r")
    assert [(t.name, t.description, t.parameters, t.strict) for t in request.tools] == [
        ("f", "does f", '{"type": "object"}', True),
        ("g", "", "", False),
    ]
    assert (request.tool_choice.mode, request.tool_choice.name) == (pb.ToolChoice.TOOL_CHOICE_NAMED, "g")
    assert request.HasField("parallel_tool_calls") and not request.parallel_tool_calls
    assert (request.response_format.type, request.response_format.name) == (
        pb.ResponseFormat.RESPONSE_FORMAT_JSON_SCHEMA,
        "out",
    )
    for mode in ("auto", "none", "required"):
        chosen = to_request("m", [], GenerationParams(), OutputOptions(tools=(ToolSpec("f"),), tool_choice=mode), "r")
        assert pb.ToolChoice.Mode.Name(chosen.tool_choice.mode) == f"TOOL_CHOICE_{mode.upper()}"
    plain = to_request("m", [], GenerationParams(), OutputOptions(), "r")
    assert not plain.HasField("tool_choice") and not plain.HasField("response_format")
    assert not plain.HasField("parallel_tool_calls") and not plain.tools


def test_tool_history_maps_to_the_messages():
    turns = [ChatTurn("assistant", "", "thought", tool_calls=(ToolCall("call_1", "f", '{"a": 1}'),)),
             ChatTurn("tool", "42", tool_call_id="call_1", name="f")]  # fmt: skip
    assistant, tool = to_request("m", turns, GenerationParams(), OutputOptions(), "r").messages
    assert (assistant.reasoning, [(c.id, c.name, c.arguments) for c in assistant.tool_calls]) == (
        "thought",
        [("call_1", "f", '{"a": 1}')],
    )
    assert (tool.role, tool.content, tool.tool_call_id, tool.name) == ("tool", "42", "call_1", "f")


def test_stream_messages_become_events():
    delta = pb.GenerateResponse(delta=pb.TextDelta(text="Hi", logprobs=[pb.TokenLogprob(
        token="Hi", logprob=-0.5, bytes=b"Hi", top_logprobs=[pb.TopLogprob(token="Hey", logprob=-1.0, bytes=b"Hey")])]))  # fmt: skip
    assert to_event(delta) == TextDelta("Hi", (TokenLogprob("Hi", -0.5, b"Hi", (TopLogprob("Hey", -1.0, b"Hey"),)),))
    call = pb.GenerateResponse(tool_call=pb.ToolCallDelta(index=1, id="call_x", name="f", arguments="{"))
    assert to_event(call) == ToolCallDelta(1, "call_x", "f", "{")
    done = pb.GenerateResponse(finished=pb.Finished(finish_reason=pb.FINISH_REASON_TOOL_CALLS,
                                                    usage=pb.Usage(prompt_tokens=3, completion_tokens=4)))  # fmt: skip
    assert to_event(done) == Finished("tool_calls", 3, 4)
    assert to_event(pb.GenerateResponse()) is None
