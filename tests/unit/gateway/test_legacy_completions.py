"""`/v1/completions` (OpenAI's legacy Completions) over fake engines: each prompt form as the engine's raw prompt,
a batch's choice indices, echo, the legacy logprobs shape, sampling parameters, the stream's chunk order, usage,
keep-alives and errors, and bad requests as 400s naming the field."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from services.api_gateway.app import build_app
from services.api_gateway.dependencies import get_state
from services.api_gateway.schemas.completions import CompletionRequest
from services.api_gateway.serving import sse
from services.common.config import parse_models_config
from services.common.errors import EngineUnavailableError, InvalidRequestError
from services.common.generation import Accepted, RawPrompt, TextDelta, TokenLogprob, TopLogprob

from .fakes import OTHER, TEXT, FakeTextEngine, finished, hello_script, make_state

HELLO = TokenLogprob("Hello", -0.25, b"Hello", (TopLogprob("Hello", -0.25, b"Hello"), TopLogprob("Hi", -1.5, b"Hi")))
# "ö" split over two tokens: each token's text shows a replacement character, the bytes make one character.
WORLD_1 = TokenLogprob(" w\ufffd", -0.5, b" w\xc3", (TopLogprob(" x", -0.75, b" x"),))
WORLD_2 = TokenLogprob("\ufffdrld", float("-inf"), b"\xb6rld")


def config(**gateway):
    models = [
        {"name": TEXT, "hf_id": "mistralai/Ministral-3-3B-Reasoning-2512", "endpoint": "127.0.0.1:1"},
        {"name": OTHER, "hf_id": "x/other", "endpoint": "127.0.0.1:2"},
    ]
    return parse_models_config({"models": models, "gateway": gateway})


def request(**fields) -> CompletionRequest:
    return CompletionRequest.model_validate({"model": TEXT, "prompt": "def add(a, b):", **fields})


def script(text: str, completion: int = 2, prompt: int = 7, reason: str = "stop") -> list:
    return [Accepted(prompt), TextDelta(text), finished(reason, prompt=prompt, completion=completion)]


async def complete(state, body: CompletionRequest) -> dict:
    return await state.completions.complete(await state.completions.plan(body), "rid-1")


async def stream_frames(state, body: CompletionRequest) -> list[str]:
    stream = await state.completions.stream(await state.completions.plan(body), "rid-1")
    return [frame async for frame in stream]


def data_of(frames: list[str]) -> list[dict]:
    return [json.loads(f[6:]) for f in frames if f.startswith("data: {")]


@pytest.fixture
def engine():
    return FakeTextEngine(TEXT, hello_script())


@pytest.fixture
async def client(engine):
    app = build_app(config(limits={"max_text_chars": 50, "max_completion_tokens": 100}))
    state = make_state({TEXT: engine}, config())
    app.dependency_overrides[get_state] = lambda: state
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        yield c


# --- the request as the engine sees it -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("prompt", "raw"),
    [
        ("def add(a, b):", [RawPrompt("def add(a, b):")]),
        (["one", "two"], [RawPrompt("one"), RawPrompt("two")]),
        ([1, 2, 3], [RawPrompt(token_ids=(1, 2, 3))]),
        ([[1, 2], [3]], [RawPrompt(token_ids=(1, 2)), RawPrompt(token_ids=(3,))]),
    ],
)
async def test_each_prompt_form_is_one_raw_prompt_per_prompt_with_no_messages(client, engine, prompt, raw):
    response = await client.post("/v1/completions", json={"model": TEXT, "prompt": prompt})
    assert response.status_code == 200, response.text
    assert [c.prompt for c in engine.calls] == raw
    assert all(c.messages == [] and c.options.tools == () for c in engine.calls)


async def test_suffix_goes_with_every_prompt_and_an_engine_refusal_of_it_comes_back_as_is(engine):
    state = make_state({TEXT: engine})
    await complete(state, request(prompt=["a", "b"], suffix="return c"))
    await complete(state, request(prompt=[5], suffix="return c"))
    assert [c.prompt for c in engine.calls] == [
        RawPrompt("a", (), "return c"),
        RawPrompt("b", (), "return c"),
        RawPrompt("", (5,), "return c"),
    ]
    refusal = InvalidRequestError("model x has no fill-in-the-middle tokens; suffix is not supported", param="suffix")
    state = make_state({TEXT: FakeTextEngine(TEXT, [refusal])})
    for body in (request(suffix="x"), request(suffix="x", stream=True)):
        with pytest.raises(InvalidRequestError) as info:
            await (complete(state, body) if not body.stream else stream_frames(state, body))
        assert info.value.param == "suffix"


async def test_sampling_fields_map_to_the_engine_and_choice_i_samples_with_seed_plus_i(engine):
    state = make_state({TEXT: FakeTextEngine(TEXT, scripts=[script("x")] * 2)})
    await complete(
        state,
        request(
            n=2,
            seed=41,
            stop=["\n\n", "def "],
            temperature=0.5,
            top_k=3,
            min_tokens=2,
            max_tokens=9,
            logit_bias={"7": -100},
            user="ann",
        ),
    )
    first, second = state.completions.core.registry.text[TEXT].calls
    assert (first.params.seed, second.params.seed) == (41, 42)
    assert first.params.stop == ("\n\n", "def ") and first.params.temperature == 0.5 and first.params.top_k == 3
    assert (first.params.max_tokens, first.params.min_tokens, first.params.logit_bias) == (9, 2, {7: -100.0})
    assert first.params.top_logprobs is None and first.affinity_key == "user:ann"


async def test_max_tokens_defaults_to_16_as_openai_and_null_leaves_the_models_default(engine):
    state = make_state({TEXT: engine})
    await complete(state, request())
    await complete(state, request(max_tokens=None))
    assert [c.params.max_tokens for c in engine.calls] == [16, None]


# --- answers --------------------------------------------------------------------------------------------------
async def test_a_text_completion_has_openais_shape_and_usage():
    state = make_state({TEXT: FakeTextEngine(TEXT, script(" return a + b", completion=5, reason="length"))})
    body = await complete(state, request())
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion" and body["model"] == TEXT
    assert body["choices"] == [{"index": 0, "text": " return a + b", "logprobs": None, "finish_reason": "length"}]
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}


async def test_a_batch_numbers_choices_prompt_times_n_plus_choice_and_counts_every_prompt():
    scripts = [
        script("p0c0", 1, prompt=3),
        script("p0c1", 2, prompt=3),
        script("p1c0", 3, prompt=4),
        script("p1c1", 4, prompt=4),
    ]
    engine = FakeTextEngine(TEXT, scripts=scripts)
    body = await complete(make_state({TEXT: engine}), request(prompt=["first", "second"], n=2))
    assert [(c["index"], c["text"]) for c in body["choices"]] == [(0, "p0c0"), (1, "p0c1"), (2, "p1c0"), (3, "p1c1")]
    assert [c.prompt.text for c in engine.calls] == ["first", "first", "second", "second"]
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 10, "total_tokens": 17}


async def test_echo_puts_each_prompt_before_its_completions():
    engine = FakeTextEngine(TEXT, scripts=[script(" A"), script(" B")])
    body = await complete(make_state({TEXT: engine}), request(prompt=["x =", "y ="], echo=True))
    assert [c["text"] for c in body["choices"]] == ["x = A", "y = B"]


def logprob_script() -> list:
    return [Accepted(7), TextDelta("Hello", (HELLO,)), TextDelta(" wörld", (WORLD_1, WORLD_2)), finished("stop")]


async def test_logprobs_have_the_legacy_shape_with_the_sampled_token_among_the_alternatives():
    engine = FakeTextEngine(TEXT, logprob_script())
    body = await complete(make_state({TEXT: engine}), request(logprobs=2))
    assert engine.calls[0].params.top_logprobs == 2
    assert body["choices"][0]["logprobs"] == {
        "tokens": ["Hello", " w\ufffd", "\ufffdrld"],
        "token_logprobs": [-0.25, -0.5, -9999.0],  # -inf is not JSON
        "top_logprobs": [{"Hello": -0.25, "Hi": -1.5}, {" x": -0.75, " w\ufffd": -0.5}, {"\ufffdrld": -9999.0}],
        "text_offset": [0, 5, 7],  # "ö" starts in the second token: the third starts at it, one character
    }


async def test_logprobs_zero_still_returns_each_tokens_own_logprob():
    engine = FakeTextEngine(
        TEXT, [Accepted(7), TextDelta("Hello", (TokenLogprob("Hello", -0.25, b"Hello"),)), finished("stop")]
    )
    body = await complete(make_state({TEXT: engine}), request(logprobs=0))
    assert engine.calls[0].params.top_logprobs == 0
    assert body["choices"][0]["logprobs"]["top_logprobs"] == [{"Hello": -0.25}]


# --- streams --------------------------------------------------------------------------------------------------
async def test_a_stream_is_text_chunks_then_the_finish_chunk_then_usage_then_done(engine):
    frames = await stream_frames(
        make_state({TEXT: engine}), request(stream=True, stream_options={"include_usage": True})
    )
    events = data_of(frames)
    assert [e["choices"] for e in events] == [
        [{"index": 0, "text": "Hello", "logprobs": None, "finish_reason": None}],
        [{"index": 0, "text": " wörld", "logprobs": None, "finish_reason": None}],
        [{"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}],
        [],
    ]  # the engine's empty delta sends nothing
    assert events[-1]["usage"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    assert {e["object"] for e in events} == {"text_completion"} and len({e["id"] for e in events}) == 1
    assert frames[-1] == sse.DONE


async def test_without_include_usage_a_stream_has_no_usage_chunk(engine):
    events = data_of(await stream_frames(make_state({TEXT: engine}), request(stream=True)))
    assert all("usage" not in e and len(e["choices"]) == 1 for e in events)


async def test_a_streamed_batch_interleaves_prompts_with_their_indices_and_echoes_first():
    gate = asyncio.Event()  # prompt 0 waits until prompt 1 has finished: arrival order, not prompt order
    engine = FakeTextEngine(
        TEXT, scripts=[[Accepted(3), TextDelta(" slow"), gate, finished("length", prompt=3)], script(" fast", prompt=4)]
    )
    stream = await state_stream(
        make_state({TEXT: engine}),
        request(prompt=["a", "b"], echo=True, stream=True, stream_options={"include_usage": True}),
    )
    frames = []
    async for frame in stream:
        frames.append(frame)
        if '"finish_reason":"stop"' in frame:
            gate.set()
    seen = [(c["index"], c["text"], c["finish_reason"]) for e in data_of(frames) for c in e["choices"]]
    assert seen[:2] == [(0, "a", None), (1, "b", None)]  # the echoed prompts open the stream
    assert seen.index((1, "", "stop")) < seen.index((0, "", "length"))
    assert [s for s in seen if s[0] == 0] == [(0, "a", None), (0, " slow", None), (0, "", "length")]
    assert data_of(frames)[-1]["usage"] == {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}


async def state_stream(state, body):
    return await state.completions.stream(await state.completions.plan(body), "rid-1")


async def test_streamed_logprobs_continue_their_offsets_across_chunks():
    frames = await stream_frames(
        make_state({TEXT: FakeTextEngine(TEXT, logprob_script())}), request(stream=True, logprobs=1)
    )
    first, second, _finish = (e["choices"][0]["logprobs"] for e in data_of(frames))
    assert first["tokens"] == ["Hello"] and first["text_offset"] == [0]
    assert second["tokens"] == [" w\ufffd", "\ufffdrld"] and second["text_offset"] == [5, 7]


async def test_keep_alives_are_sse_comments_until_the_first_token():
    gate = asyncio.Event()
    engine = FakeTextEngine(TEXT, [Accepted(7), gate, TextDelta("Hi"), finished("stop")])
    stream = await state_stream(make_state({TEXT: engine}, keepalive_secs=0.01), request(stream=True))
    frames = []
    async for frame in stream:
        frames.append(frame)
        gate.set()  # the first frame is a keep-alive: nothing else can come before the gate opens
    assert frames[0] == sse.KEEPALIVE and '"text":"Hi"' in next(f for f in frames if f != sse.KEEPALIVE)


async def test_an_error_after_the_first_byte_is_an_error_event_then_done_and_the_batch_is_cancelled():
    engine = FakeTextEngine(
        TEXT,
        scripts=[
            [Accepted(7), TextDelta("fine"), asyncio.Event()],
            [Accepted(7), TextDelta("x"), EngineUnavailableError("engine died")],
        ],
    )
    frames = await stream_frames(make_state({TEXT: engine}), request(prompt=["a", "b"], stream=True))
    assert frames[-1] == sse.DONE and json.loads(frames[-2][6:])["error"]["message"] == "engine died"
    assert all(call.closed.is_set() for call in engine.calls)  # the other prompt's call is cancelled


async def test_a_refusal_of_any_prompt_before_the_stream_is_raised_and_every_call_closed():
    refusal = InvalidRequestError("prompt: token id 99999 is not in this model's vocabulary", param="prompt")
    engine = FakeTextEngine(TEXT, scripts=[hello_script(), [refusal], hello_script()])
    state = make_state({TEXT: engine})
    with pytest.raises(InvalidRequestError):
        await stream_frames(state, request(prompt=[[1], [99999], [2]], stream=True))
    assert len(engine.calls) == 3 and all(call.closed.is_set() for call in engine.calls)


async def test_a_non_streamed_batch_fails_whole_and_cancels_the_other_prompts():
    engine = FakeTextEngine(TEXT, scripts=[[Accepted(7), asyncio.Event()], [EngineUnavailableError("down")]])
    with pytest.raises(EngineUnavailableError):
        await complete(make_state({TEXT: engine}), request(prompt=["a", "b"]))
    assert all(call.closed.is_set() for call in engine.calls)


# --- refusals -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": []}, "prompt"),
        ({"prompt": ["a", [1]]}, "prompt"),
        ({"prompt": [1, True]}, "prompt"),
        ({"prompt": [[1], []]}, "prompt[1]"),
        ({"prompt": [-1]}, "prompt[0]"),
        ({"prompt": "x" * 51}, "prompt"),  # gateway.limits.max_text_chars
        ({"prompt": [[1] * 30, [2] * 30]}, "prompt"),  # a token id counts as one character
        ({"max_tokens": 101}, "max_tokens"),  # gateway.limits.max_completion_tokens
        ({"max_tokens": 0}, "max_tokens"),
        ({"min_tokens": 17}, "min_tokens"),  # above the default max_tokens (16)
        ({"best_of": 2}, "best_of"),
        ({"n": 2, "best_of": 3}, "best_of"),
        ({"logprobs": 21}, "logprobs"),
        ({"echo": True, "logprobs": 1}, "echo"),
        ({"echo": True, "prompt": [1, 2]}, "echo"),
        ({"echo": True, "prompt": [[1], [2]]}, "echo"),
        ({"n": 9}, "n"),  # gateway.max_n
        ({"prompt": ["a", "b", "c"], "n": 3}, "prompt"),  # 9 completions > gateway.max_n
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ],
)
async def test_bad_requests_are_400s_naming_the_field(client, engine, body, param):
    response = await client.post("/v1/completions", json={"model": TEXT, "prompt": "x", **body})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param and response.json()["error"]["type"] == "invalid_request_error"
    assert engine.calls == []


async def test_a_missing_prompt_is_named(client):
    response = await client.post("/v1/completions", json={"model": TEXT})
    assert response.status_code == 400 and response.json()["error"]["param"] == "prompt"
    assert response.json()["error"]["code"] == "missing_required_parameter"


async def test_best_of_equal_to_n_is_accepted(client, engine):
    response = await client.post("/v1/completions", json={"model": TEXT, "prompt": "x", "n": 2, "best_of": 2})
    assert response.status_code == 200 and len(response.json()["choices"]) == 2


async def test_an_unknown_model_is_a_404(client):
    response = await client.post("/v1/completions", json={"model": "nope", "prompt": "x"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


async def test_a_streamed_http_answer_is_an_event_stream(client):
    response = await client.post("/v1/completions", json={"model": TEXT, "prompt": "x", "stream": True})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert response.text.endswith(sse.DONE) and '"object":"text_completion"' in response.text
