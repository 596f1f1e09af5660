"""The serving layer over a fake engine: SSE transcript, completions, params, model resolution, errors."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from services.api_gateway.schemas.chat import ChatCompletionRequest
from services.api_gateway.serving import sse
from services.common.errors import (
    ContextLengthExceededError,
    EngineUnavailableError,
    InternalError,
    InvalidRequestError,
    ModelNotFoundError,
)
from services.common.generation import Accepted, TextDelta

from .fakes import (
    OTHER,
    TEXT,
    VISION,
    FakeTextEngine,
    finished,
    hello_script,
    make_config,
    make_state,
    reasoning_script,
)

GOLDEN = Path(__file__).parent / "fixtures" / "stream_include_usage.sse"


def request(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": TEXT, "messages": [{"role": "user", "content": "Hi"}], **fields}
    )


def normalized(transcript: str) -> str:
    """Ids and timestamps vary per run; the framing must not."""
    transcript = re.sub(r'"id":"chatcmpl-[0-9a-f]{24}"', '"id":"chatcmpl-ID"', transcript)
    return re.sub(r'"created":\d+', '"created":0', transcript)


async def run_stream(state, body: ChatCompletionRequest, rid: str = "rid-1") -> str:
    stream = await state.chat.stream(await state.chat.plan(body), rid)
    return "".join([frame async for frame in stream])


async def test_stream_with_usage_matches_golden_transcript():
    state = make_state({TEXT: FakeTextEngine(TEXT, hello_script())})
    transcript = await run_stream(state, request(stream=True, stream_options={"include_usage": True}))
    assert normalized(transcript) == GOLDEN.read_text(encoding="utf-8")
    ids = {json.loads(line[6:])["id"] for line in transcript.splitlines() if line.startswith("data: {")}
    assert len(ids) == 1  # every chunk of one completion shares its id


async def test_stream_without_include_usage_has_no_usage_chunk():
    state = make_state({TEXT: FakeTextEngine(TEXT, hello_script())})
    transcript = normalized(await run_stream(state, request(stream=True)))
    expected = "".join(
        f"{line}\n\n"
        for line in GOLDEN.read_text(encoding="utf-8").split("\n\n")
        if line and '"choices":[]' not in line
    )
    assert transcript == expected


async def test_complete_returns_a_chat_completion_with_usage():
    engine = FakeTextEngine(TEXT, hello_script())
    state = make_state({TEXT: engine})
    body = await state.chat.complete(await state.chat.plan(request()), "rid-2")
    assert body["object"] == "chat.completion" and re.fullmatch(r"chatcmpl-[0-9a-f]{24}", body["id"])
    assert body["model"] == TEXT and body["choices"][0]["message"] == {"role": "assistant", "content": "Hello wörld"}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 2,
        "total_tokens": 9,
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    assert engine.calls[0].request_id == "rid-2" and engine.calls[0].timeout == 5.0


async def test_length_finish_reason_passes_through():
    state = make_state({TEXT: FakeTextEngine(TEXT, [Accepted(1), TextDelta("a"), finished("length")])})
    body = await state.chat.complete(await state.chat.plan(request(max_tokens=1)), "r")
    assert body["choices"][0]["finish_reason"] == "length"


async def test_only_parameters_the_client_sent_are_set():
    engine = FakeTextEngine(TEXT, hello_script())
    state = make_state({TEXT: engine})
    plan = await state.chat.plan(
        request(
            temperature=0,
            max_tokens=9,
            max_completion_tokens=5,
            stop="END",
            presence_penalty=0.5,
            user="u1",
            some_future_field={"x": 1},
        )
    )
    await state.chat.complete(plan, "r")
    params = engine.calls[0].params
    assert (params.temperature, params.max_tokens, params.stop, params.presence_penalty) == (0, 5, ("END",), 0.5)
    assert (params.top_p, params.top_k, params.seed, params.frequency_penalty) == (None, None, None, None)
    assert engine.calls[0].messages[0].role == "user" and engine.calls[0].messages[0].content == "Hi"


async def test_text_parts_are_joined_into_one_text_turn():
    engine = FakeTextEngine(TEXT, hello_script())
    state = make_state({TEXT: engine})
    parts = [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]
    body = ChatCompletionRequest.model_validate(
        {"model": TEXT, "messages": [{"role": "developer", "content": "be brief"}, {"role": "user", "content": parts}]}
    )
    await state.chat.complete(await state.chat.plan(body), "r")
    assert [(t.role, t.content) for t in engine.calls[0].messages] == [("developer", "be brief"), ("user", "one\ntwo")]


@pytest.mark.parametrize("asked, served", [(TEXT, TEXT), (OTHER, OTHER), ("default", OTHER)])
async def test_model_resolution(asked, served):
    engines = {TEXT: FakeTextEngine(TEXT, hello_script()), OTHER: FakeTextEngine(OTHER, hello_script())}
    state = make_state(engines, make_config(default=OTHER))
    body = await state.chat.complete(await state.chat.plan(request(model=asked)), "r")
    assert body["model"] == served and len(engines[served].calls) == 1


async def test_unknown_model_is_model_not_found():
    state = make_state({TEXT: FakeTextEngine(TEXT)})
    with pytest.raises(ModelNotFoundError) as info:
        await state.chat.plan(request(model="gpt-9"))
    assert (info.value.http_status, info.value.code, info.value.param) == (404, "model_not_found", "model")


async def test_the_vision_model_is_not_a_chat_model():
    state = make_state({TEXT: FakeTextEngine(TEXT)}, make_config(vision=True))
    with pytest.raises(InvalidRequestError) as info:
        await state.chat.plan(request(model=VISION))
    assert info.value.param == "model" and info.value.code == "model_not_supported"


async def test_supported_variants_are_accepted():
    state = make_state({TEXT: FakeTextEngine(TEXT, hello_script())})
    plan = await state.chat.plan(request(n=1, logprobs=False, response_format={"type": "text"}, tool_choice="none"))
    assert (await state.chat.complete(plan, "r"))["choices"][0]["finish_reason"] == "stop"


async def test_error_before_the_first_event_is_raised_and_the_call_closed():
    engine = FakeTextEngine(TEXT, [ContextLengthExceededError("too long", param="messages")])
    state = make_state({TEXT: engine})
    with pytest.raises(ContextLengthExceededError):
        await state.chat.stream(await state.chat.plan(request(stream=True)), "r")
    assert engine.calls[0].closed.is_set()


@pytest.mark.parametrize(
    "tail, kind",
    [
        ([finished("error", error="CUDA fell over")], "server_error"),
        ([EngineUnavailableError("engine went away")], "server_error"),
        ([], "server_error"),  # the engine ended without a Finished
        ([RuntimeError("a bug")], "server_error"),
    ],
)
async def test_error_after_the_first_byte_is_an_sse_error_event_then_done(tail, kind):
    engine = FakeTextEngine(TEXT, [Accepted(1), TextDelta("partial"), *tail])
    state = make_state({TEXT: engine})
    frames = (await run_stream(state, request(stream=True))).split("\n\n")
    assert frames[-2:] == ["data: [DONE]", ""]
    error = json.loads(frames[-3].removeprefix("data: "))["error"]
    assert error["type"] == kind and error["message"]
    assert '"content":"partial"' in frames[1] and engine.calls[0].closed.is_set()
    assert "a bug" not in error["message"]  # no internals leak


async def test_non_streamed_engine_error_is_internal_error():
    state = make_state({TEXT: FakeTextEngine(TEXT, [Accepted(1), TextDelta("x"), finished("error", error="boom")])})
    with pytest.raises(InternalError, match="boom"):
        await state.chat.complete(await state.chat.plan(request()), "r")


async def test_closing_a_stream_that_never_started_cancels_the_engine_call():
    engine = FakeTextEngine(TEXT, hello_script())
    state = make_state({TEXT: engine})
    stream = await state.chat.stream(await state.chat.plan(request(stream=True)), "r")
    assert not engine.calls[0].closed.is_set()  # accepted, response not started
    await stream.aclose()
    assert engine.calls[0].closed.is_set()


async def test_closing_a_stream_midway_cancels_the_engine_call():
    engine = FakeTextEngine(TEXT, [Accepted(1), *(TextDelta(str(i)) for i in range(100))])
    state = make_state({TEXT: engine})
    stream = await state.chat.stream(await state.chat.plan(request(stream=True)), "r")
    iterator = aiter(stream)
    assert '"role":"assistant"' in await anext(iterator)
    assert '"content":"0"' in await anext(iterator)
    await stream.aclose()
    assert engine.calls[0].closed.is_set()


def queued_state(*script):
    """An engine that accepts the request and holds it at a gate (queued for a batch slot)."""
    gate = asyncio.Event()
    engine = FakeTextEngine(TEXT, [Accepted(7), gate, *script])
    return make_state({TEXT: engine}, keepalive_secs=0.01), engine, gate


async def test_a_queued_request_starts_the_stream_and_keeps_it_alive():
    state, engine, gate = queued_state(*hello_script())
    stream = await asyncio.wait_for(state.chat.stream(await state.chat.plan(request(stream=True)), "r"), 2)
    frames = aiter(stream)
    assert '"role":"assistant"' in await anext(frames)
    assert await anext(frames) == sse.KEEPALIVE
    gate.set()
    rest = [frame async for frame in frames]
    after_keepalives = [f for f in rest if f != sse.KEEPALIVE]
    assert '"content":"Hello"' in after_keepalives[0] and after_keepalives[-1] == sse.DONE


async def test_a_refusal_after_the_stream_started_is_an_error_event():
    state, engine, gate = queued_state(ContextLengthExceededError("too long", param="messages"))
    stream = await state.chat.stream(await state.chat.plan(request(stream=True)), "r")
    gate.set()
    frames = [frame async for frame in stream if frame != sse.KEEPALIVE]
    assert json.loads(frames[-2].removeprefix("data: "))["error"]["code"] == "context_length_exceeded"
    assert frames[-1] == sse.DONE


@pytest.mark.parametrize("read_first_frame", [False, True])
async def test_leaving_while_queued_cancels_the_engine_call(read_first_frame):
    state, engine, gate = queued_state(*hello_script())
    stream = await state.chat.stream(await state.chat.plan(request(stream=True)), "r")
    if read_first_frame:
        assert '"role":"assistant"' in await anext(aiter(stream))
    await stream.aclose()
    assert engine.calls[0].closed.is_set() and not gate.is_set()


async def test_the_response_waits_for_acceptance_however_long_so_a_late_refusal_is_still_a_status():
    # An idle model reloading for longer than any timer: the refusal that follows is still raised, not streamed.
    gate = asyncio.Event()
    engine = FakeTextEngine(TEXT, [gate, ContextLengthExceededError("too long", param="messages")])
    state = make_state({TEXT: engine})
    pending = asyncio.ensure_future(state.chat.stream(await state.chat.plan(request(stream=True)), "r"))
    await asyncio.sleep(0.3)
    assert not pending.done()  # no response has started
    gate.set()
    with pytest.raises(ContextLengthExceededError):
        await pending
    assert engine.calls[0].closed.is_set()


async def test_an_engine_without_accepted_still_streams_its_first_delta():
    state = make_state({TEXT: FakeTextEngine(TEXT, [TextDelta("Hi"), finished()])})
    transcript = await run_stream(state, request(stream=True))
    assert '"content":"Hi"' in transcript and transcript.endswith(sse.DONE)


REASONING_GOLDEN = Path(__file__).parent / "fixtures" / "stream_reasoning.sse"


async def test_reasoning_streams_in_its_own_field_and_counts_in_usage():
    state = make_state({TEXT: FakeTextEngine(TEXT, reasoning_script())})
    transcript = await run_stream(state, request(stream=True, stream_options={"include_usage": True}))
    assert normalized(transcript) == REASONING_GOLDEN.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "field, keys",
    [
        ("reasoning_content", {"reasoning_content"}),
        ("reasoning", {"reasoning"}),
        ("both", {"reasoning_content", "reasoning"}),
    ],
)
async def test_the_reasoning_field_name_is_configurable(field, keys):
    state = make_state({TEXT: FakeTextEngine(TEXT, reasoning_script())}, reasoning_field=field)
    body = await state.chat.complete(await state.chat.plan(request()), "r")
    message = body["choices"][0]["message"]
    assert message["content"] == "Hello!" and set(message) - {"role", "content"} == keys
    assert all(message[k] == "Let me think." for k in keys)
    assert body["usage"]["completion_tokens_details"] == {"reasoning_tokens": 4}
    deltas = [
        json.loads(line[6:])["choices"][0]["delta"]
        for line in (await run_stream(state, request(stream=True))).splitlines()
        if line.startswith("data: {")
    ][1:-1]
    assert [set(d) for d in deltas] == [keys, keys, {"content"}, {"content"}]


async def test_include_reasoning_false_drops_it_but_usage_still_counts_it():
    state = make_state({TEXT: FakeTextEngine(TEXT, reasoning_script())})
    body = await state.chat.complete(await state.chat.plan(request(include_reasoning=False)), "r")
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Hello!"}
    assert body["usage"]["completion_tokens_details"] == {"reasoning_tokens": 4}
    transcript = await run_stream(state, request(stream=True, include_reasoning=False))
    assert '"reasoning' not in transcript and '"content":"Hello"' in transcript


async def test_reasoning_sent_back_with_an_assistant_message_reaches_the_engine():
    engine = FakeTextEngine(TEXT, hello_script())
    state = make_state({TEXT: engine})
    body = request(
        messages=[
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!", "reasoning_content": "Greet back."},
            {"role": "assistant", "content": "Again", "reasoning": "vLLM's name"},
            {"role": "user", "content": "Bye", "reasoning_content": "ignored for users"},
        ]
    )
    await state.chat.complete(await state.chat.plan(body), "r")
    assert [t.reasoning for t in engine.calls[0].messages] == ["", "Greet back.", "vLLM's name", ""]
