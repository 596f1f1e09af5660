"""clients/text_engine.py: SamplingParams, OutputOptions, ChatTurns and RawPrompts to the proto by name (dicts to
maps, tuples to repeated fields), the engine's stream messages back to events, and count_tokens over real grpc.aio
servers on loopback (port 0), routed and failed over as generate is."""

from __future__ import annotations

from dataclasses import fields

import grpc
import pytest

from services.api_gateway.clients.channels import open_replica_channel
from services.api_gateway.clients.replicas import ReplicaSet
from services.api_gateway.clients.routing import AffinityRouting
from services.api_gateway.clients.text_engine import OutputOptions, TextEngineClient, to_request
from services.common.errors import InvalidRequestError, ModelNotFoundError
from services.common.generation import (
    ChatTurn,
    Finished,
    FinishReason,
    RawPrompt,
    ResponseFormat,
    ResponseFormatType,
    SamplingParams,
    TextDelta,
    TokenLogprob,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolChoiceMode,
    TopLogprob,
)
from services.common.generation_pb import event_from_pb as to_event
from services.common.pb.proxyvision.v1 import text_engine_pb2 as pb, text_engine_pb2_grpc


def test_every_generation_parameter_is_a_sampling_field_of_the_proto():
    assert {f.name for f in fields(SamplingParams)} <= set(pb.SamplingParams.DESCRIPTOR.fields_by_name)


def test_sampling_parameters_map_by_name_and_unset_ones_stay_unset():
    params = SamplingParams(
        max_tokens=8,
        seed=3,
        stop=("END",),
        repetition_penalty=1.2,
        min_p=0.1,
        min_tokens=2,
        logit_bias={5: -100.0, 7: 2.5},
        stop_token_ids=(1, 2),
        ignore_eos=True,
        top_logprobs=0,
    )
    sampling = to_request("m", [ChatTurn("user", "hi")], params, OutputOptions(), "r").sampling
    assert (sampling.max_tokens, sampling.seed, list(sampling.stop), sampling.min_tokens) == (8, 3, ["END"], 2)
    assert dict(sampling.logit_bias) == {5: -100.0, 7: 2.5} and list(sampling.stop_token_ids) == [1, 2]
    assert sampling.ignore_eos and sampling.HasField("top_logprobs") and sampling.top_logprobs == 0
    assert sampling.repetition_penalty == pytest.approx(1.2) and sampling.min_p == pytest.approx(0.1)
    empty = to_request("m", [], SamplingParams(), OutputOptions(), "r").sampling
    assert empty.ListFields() == []


def test_tools_choice_and_format_map_to_the_request():
    options = OutputOptions(
        tools=(Tool("f", "does f", '{"type": "object"}', True), Tool("g")),
        tool_choice=ToolChoice(ToolChoiceMode.NAMED, "g"),
        parallel_tool_calls=False,
        response_format=ResponseFormat(ResponseFormatType.JSON_SCHEMA, '{"type": "object"}', "out"),
    )
    request = to_request("m", [], SamplingParams(), options, "r")
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
        chosen = to_request(
            "m",
            [],
            SamplingParams(),
            OutputOptions(tools=(Tool("f"),), tool_choice=ToolChoice(ToolChoiceMode(mode))),
            "r",
        )
        assert pb.ToolChoice.Mode.Name(chosen.tool_choice.mode) == f"TOOL_CHOICE_{mode.upper()}"
    plain = to_request("m", [], SamplingParams(), OutputOptions(), "r")
    assert not plain.HasField("tool_choice") and not plain.HasField("response_format")
    assert not plain.HasField("parallel_tool_calls") and not plain.tools


def test_tool_history_maps_to_the_messages():
    turns = [
        ChatTurn("assistant", "", "thought", tool_calls=(ToolCall("call_1", "f", '{"a": 1}'),)),
        ChatTurn("tool", "42", tool_call_id="call_1", name="f"),
    ]
    assistant, tool = to_request("m", turns, SamplingParams(), OutputOptions(), "r").messages
    assert (assistant.reasoning, [(c.id, c.name, c.arguments) for c in assistant.tool_calls]) == (
        "thought",
        [("call_1", "f", '{"a": 1}')],
    )
    assert (tool.role, tool.content, tool.tool_call_id, tool.name) == ("tool", "42", "call_1", "f")


def test_stream_messages_become_events():
    delta = pb.GenerateResponse(
        delta=pb.TextDelta(
            text="Hi",
            logprobs=[
                pb.TokenLogprob(
                    token="Hi",
                    logprob=-0.5,
                    bytes=b"Hi",
                    top_logprobs=[pb.TopLogprob(token="Hey", logprob=-1.0, bytes=b"Hey")],
                )
            ],
        )
    )
    assert to_event(delta) == TextDelta("Hi", (TokenLogprob("Hi", -0.5, b"Hi", (TopLogprob("Hey", -1.0, b"Hey"),)),))
    call = pb.GenerateResponse(tool_call=pb.ToolCallDelta(index=1, id="call_x", name="f", arguments="{"))
    assert to_event(call) == ToolCallDelta(1, "call_x", "f", "{")
    done = pb.GenerateResponse(
        finished=pb.Finished(
            finish_reason=pb.FINISH_REASON_TOOL_CALLS, usage=pb.Usage(prompt_tokens=3, completion_tokens=4)
        )
    )
    assert to_event(done) == Finished(FinishReason.TOOL_CALLS, 3, 4)
    stopped = pb.GenerateResponse(
        finished=pb.Finished(
            finish_reason=pb.FINISH_REASON_STOP,
            stop_sequence="END",
            usage=pb.Usage(prompt_tokens=3, completion_tokens=4),
        )
    )
    assert to_event(stopped) == Finished(FinishReason.STOP, 3, 4, stop_sequence="END")
    assert to_event(pb.GenerateResponse()) is None


def test_a_raw_prompt_maps_to_the_request_and_no_prompt_leaves_it_unset():
    request = to_request(
        "m", [], SamplingParams(max_tokens=4), OutputOptions(), "r", RawPrompt("def f(", suffix="    return 1")
    )
    assert (request.prompt.text, list(request.prompt.token_ids), request.prompt.suffix) == (
        "def f(",
        [],
        "    return 1",
    )
    assert not request.messages and request.sampling.max_tokens == 4
    by_ids = to_request("m", [], SamplingParams(), OutputOptions(), "r", RawPrompt(token_ids=(1, 2, 3)))
    assert list(by_ids.prompt.token_ids) == [1, 2, 3] and by_ids.prompt.text == ""
    assert not to_request("m", [ChatTurn("user", "hi")], SamplingParams(), OutputOptions(), "r").HasField("prompt")


class CountingEngine(text_engine_pb2_grpc.TextEngineServicer):
    """An engine that counts the characters of what it is sent, records it, and refuses as `mode` says."""

    def __init__(self) -> None:
        self.mode = "ok"  # ok | refuse (UNAVAILABLE: draining) | unknown (NOT_FOUND) | bad (INVALID_ARGUMENT)
        self.requests: list[tuple[pb.GenerateRequest, str]] = []

    async def CountTokens(self, request, context):  # noqa: N802 - the gRPC method's name
        self.requests.append((request, dict(context.invocation_metadata())["x-request-id"]))
        if self.mode == "refuse":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "draining")
        if self.mode == "unknown":
            await context.abort(grpc.StatusCode.NOT_FOUND, f"The model '{request.model}' does not exist")
        if self.mode == "bad":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "tools need messages")
        text = (
            request.prompt.text + "".join(m.content for m in request.messages) + "".join(t.name for t in request.tools)
        )
        return pb.CountTokensResponse(prompt_tokens=len(text) + len(request.prompt.token_ids))


@pytest.fixture
async def counters():
    engines, servers = {}, []
    for _ in range(2):
        engine, server = CountingEngine(), grpc.aio.server()
        text_engine_pb2_grpc.add_TextEngineServicer_to_server(engine, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        engines[f"127.0.0.1:{port}"] = engine
        servers.append(server)
    yield engines
    for server in servers:
        await server.stop(None)


async def test_count_tokens_sends_the_request_generate_would_and_returns_the_count(counters):
    address, engine = next(iter(counters.items()))
    async with grpc.aio.insecure_channel(address) as channel:
        client = TextEngineClient(channel, "m")
        options = OutputOptions(tools=(Tool("lookup"),), tool_choice=ToolChoice(ToolChoiceMode.REQUIRED))
        assert await client.count_tokens([ChatTurn("user", "hello")], options, request_id="req-1", timeout=5) == 11
        assert await client.count_tokens([], prompt=RawPrompt(token_ids=(7, 8)), request_id="req-2", timeout=5) == 2
        (chat, chat_id), (raw, raw_id) = engine.requests
        assert chat == to_request("m", [ChatTurn("user", "hello")], SamplingParams(), options, "req-1")
        assert raw == to_request("m", [], SamplingParams(), OutputOptions(), "req-2", RawPrompt(token_ids=(7, 8)))
        assert (chat_id, raw_id) == ("req-1", "req-2")
        engine.mode = "unknown"
        with pytest.raises(ModelNotFoundError):
            await client.count_tokens([], prompt=RawPrompt("hi"), request_id="r", timeout=5)
        engine.mode = "bad"
        with pytest.raises(InvalidRequestError, match="tools need messages"):
            await client.count_tokens([], prompt=RawPrompt("hi"), request_id="r", timeout=5)


async def test_count_tokens_goes_to_the_keys_owner_and_fails_over_when_it_refuses(counters):
    replica_set = ReplicaSet("m", "ipv4:" + ",".join(counters), lambda address, name: open_replica_channel(address))
    routing = AffinityRouting(replica_set)
    await routing.start()
    try:
        client = TextEngineClient(routing, "m")
        owner, next_owner = routing.replicas.ring.owners("user:alice")[:2]
        assert (
            await client.count_tokens(
                [], prompt=RawPrompt("four"), request_id="r", timeout=5, affinity_key="user:alice"
            )
            == 4
        )
        assert (len(counters[owner].requests), len(counters[next_owner].requests)) == (1, 0)
        counters[owner].mode = "refuse"
        assert (
            await client.count_tokens(
                [], prompt=RawPrompt("four"), request_id="r", timeout=5, affinity_key="user:alice"
            )
            == 4
        )
        assert (len(counters[owner].requests), len(counters[next_owner].requests)) == (2, 1)
    finally:
        await routing.close()
