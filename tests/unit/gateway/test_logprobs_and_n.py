"""Logprobs (streamed per chunk, joined in the answer) and n > 1 (n engine calls, seeds seed + i, choices
interleaved as they come, usage counting the prompt once) through the chat service over fakes."""

from __future__ import annotations

import asyncio
import json

import pytest

from services.api_gateway.serving import chunks, sse
from services.common.errors import ContextLengthExceededError, InvalidRequestError
from services.common.generation import Accepted, TextDelta, TokenLogprob, TopLogprob

from .fakes import TEXT, FakeTextEngine, finished, hello_script, make_state
from .test_chat_service import request, run_stream
from .test_tool_calls import data_of

HELLO = TokenLogprob("Hello", -0.25, b"Hello", (TopLogprob("Hello", -0.25, b"Hello"), TopLogprob("Hi", -1.5, b"Hi")))
# A character split over two tokens: each token's bytes are a part of it, its text the engine's rendering.
WORLD_1 = TokenLogprob(" w\ufffd", -0.5, b" w\xc3")
WORLD_2 = TokenLogprob("\ufffdrld", float("-inf"), b"\xb6rld")


def logprob_script() -> list:
    return [Accepted(7), TextDelta("Hello", (HELLO,)), TextDelta(" wörld", (WORLD_1, WORLD_2)), finished("stop")]


async def test_streamed_logprobs_ride_on_their_content_chunks():
    state = make_state({TEXT: FakeTextEngine(TEXT, logprob_script())})
    choices = [
        c["choices"][0] for c in data_of(await run_stream(state, request(stream=True, logprobs=True, top_logprobs=2)))
    ]
    assert choices[0]["logprobs"] is None and choices[-1]["logprobs"] is None  # role and finish chunks
    assert choices[1]["delta"] == {"content": "Hello"}
    assert choices[1]["logprobs"] == {
        "content": [
            {
                "token": "Hello",
                "logprob": -0.25,
                "bytes": list(b"Hello"),
                "top_logprobs": [
                    {"token": "Hello", "logprob": -0.25, "bytes": list(b"Hello")},
                    {"token": "Hi", "logprob": -1.5, "bytes": [72, 105]},
                ],
            }
        ],
        "refusal": None,
    }
    second = choices[2]["logprobs"]["content"]
    assert [e["bytes"] for e in second] == [[32, 119, 0xC3], [0xB6, 114, 108, 100]]
    assert second[1]["logprob"] == chunks.MASKED_LOGPROB  # -inf is not JSON


async def test_non_streamed_logprobs_are_joined_and_only_sent_when_asked():
    engine = FakeTextEngine(TEXT, logprob_script())
    state = make_state({TEXT: engine})
    body = await state.chat.complete(await state.chat.plan(request(logprobs=True)), "r")
    logprobs = body["choices"][0]["logprobs"]
    assert [e["token"] for e in logprobs["content"]] == ["Hello", " w\ufffd", "\ufffdrld"] and logprobs[
        "refusal"
    ] is None
    assert engine.calls[0].params.top_logprobs == 0  # logprobs alone: the tokens, no alternatives
    plain = await state.chat.complete(await state.chat.plan(request()), "r")
    assert plain["choices"][0]["logprobs"] is None and engine.calls[1].params.top_logprobs is None
    await state.chat.complete(await state.chat.plan(request(logprobs=True, top_logprobs=5)), "r")
    assert engine.calls[2].params.top_logprobs == 5


async def test_without_logprobs_requested_chunks_carry_none_even_if_the_engine_sent_some():
    state = make_state({TEXT: FakeTextEngine(TEXT, logprob_script())})
    choices = [c["choices"][0] for c in data_of(await run_stream(state, request(stream=True)))]
    assert all(c["logprobs"] is None for c in choices)


def numbered_script(index_word: str) -> list:
    return [Accepted(7), TextDelta(index_word), finished("stop", prompt=7, completion=3, reasoning=1)]


def per_call(*scripts) -> FakeTextEngine:
    return FakeTextEngine(TEXT, scripts=scripts)


async def test_n_choices_are_n_calls_with_consecutive_seeds_and_usage_counts_the_prompt_once():
    engine = per_call(*(numbered_script(w) for w in ("zero", "one", "two")))
    state = make_state({TEXT: engine})
    body = await state.chat.complete(await state.chat.plan(request(n=3, seed=41, temperature=1.0)), "r")
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in body["choices"]] == [
        (0, "zero", "stop"),
        (1, "one", "stop"),
        (2, "two", "stop"),
    ]
    assert [c.params.seed for c in engine.calls] == [41, 42, 43]
    assert {c.params.temperature for c in engine.calls} == {1.0} and {c.request_id for c in engine.calls} == {"r"}
    assert body["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 9,
        "total_tokens": 16,
        "completion_tokens_details": {"reasoning_tokens": 3},
    }


async def test_n_without_a_seed_leaves_every_seed_unset_and_a_seed_wraps_within_int64():
    engine = per_call(*[numbered_script("x")] * 4)
    state = make_state({TEXT: engine})
    await state.chat.complete(await state.chat.plan(request(n=2)), "r")
    await state.chat.complete(await state.chat.plan(request(n=2, seed=2**63 - 1)), "r")
    assert [c.params.seed for c in engine.calls] == [None, None, 2**63 - 1, -(2**63)]


async def test_n_streams_interleave_one_choice_per_chunk_and_finish_each_choice():
    gate = asyncio.Event()  # choice 0 waits until choice 1 has finished: arrival order, not choice order
    engine = per_call(
        [Accepted(7), TextDelta("slow"), gate, TextDelta(" zero"), finished("length")],
        [Accepted(7), TextDelta("one"), finished("stop")],
    )
    state = make_state({TEXT: engine})
    stream = await state.chat.stream(
        await state.chat.plan(request(n=2, stream=True, stream_options={"include_usage": True})), "r"
    )
    frames = []
    async for frame in stream:
        frames.append(frame)
        if '"finish_reason":"stop"' in frame:
            gate.set()
    events = [json.loads(f[6:]) for f in frames if f.startswith("data: {")]
    seen = [(c["index"], c["delta"].get("content"), c["finish_reason"]) for e in events for c in e["choices"]]
    assert all(len(e["choices"]) == 1 for e in events[:-1]) and events[-1]["choices"] == []
    assert seen[:2] == [(0, "", None), (1, "", None)]  # one role chunk per choice
    assert seen.index((1, None, "stop")) < seen.index((0, " zero", None)) < seen.index((0, None, "length"))
    assert [s for s in seen if s[0] == 0] == [(0, "", None), (0, "slow", None), (0, " zero", None), (0, None, "length")]
    assert events[-1]["usage"]["completion_tokens"] == 4 and frames[-1] == sse.DONE


async def test_a_choice_failing_after_the_stream_started_ends_it_with_the_error_event():
    engine = per_call(
        [Accepted(7), TextDelta("fine"), asyncio.Event()],  # never finishes on its own
        [Accepted(7), TextDelta("x"), finished("error", error="CUDA fell over")],
    )
    state = make_state({TEXT: engine})
    frames = (await run_stream(state, request(n=2, stream=True))).split("\n\n")
    assert frames[-2:] == ["data: [DONE]", ""] and "CUDA fell over" in json.loads(frames[-3][6:])["error"]["message"]
    assert all(call.closed.is_set() for call in engine.calls)  # the other choice's call is cancelled


async def test_a_refusal_of_any_choice_before_the_stream_is_raised_and_every_call_closed():
    engine = per_call(hello_script(), [ContextLengthExceededError("too long", param="messages")], hello_script())
    state = make_state({TEXT: engine})
    with pytest.raises(ContextLengthExceededError):
        await state.chat.stream(await state.chat.plan(request(n=3, stream=True)), "r")
    assert len(engine.calls) == 3 and all(call.closed.is_set() for call in engine.calls)


async def test_n_above_gateway_max_n_is_refused():
    state = make_state({TEXT: FakeTextEngine(TEXT, hello_script())}, max_n=2)
    await state.chat.plan(request(n=2))
    with pytest.raises(InvalidRequestError) as info:
        await state.chat.plan(request(n=3))
    assert info.value.param == "n" and "at most 2" in info.value.message
