"""The engine's own sampling pipeline end to end, in-process on the tiny stand-ins: grammars (response_format)
hold on random weights, logprobs are the model's, and the token-level parameters do what they say."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import pytest
import torch

from services.common.config import parse_models_config
from services.common.errors import InvalidRequestError
from services.common.generation import (
    ChatTurn,
    Finished,
    FinishReason,
    ReasoningDelta,
    ResponseFormat,
    ResponseFormatType,
    SamplingParams,
    TextDelta,
)
from services.model_builder.build import build_all
from services.text_engine.engine.engine import InferenceEngine
from services.text_engine.engine.prompt import render_prompt
from services.text_engine.engine.types import GenerationRequest

REPO_ROOT = Path(__file__).resolve().parents[2]
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "color": {"enum": ["red", "green", "blue"]},
        "tags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 3},
    },
    "required": ["name", "age", "color"],
    "additionalProperties": False,
}


def engine_for(path) -> InferenceEngine:
    entry = parse_models_config(
        {
            "models": [
                {
                    "name": "m",
                    "local_path": str(path),
                    "params": {"mem": 16, "dtype": "f32", "max_num_seqs": 8, "prefill_chunk_size": 256},
                }
            ]
        }
    ).models[0]
    return InferenceEngine(entry, device="cpu", idle_unload_secs=0)


@pytest.fixture(scope="module")
async def text_engine(tiny_models):
    engine = engine_for(tiny_models["text"])
    await engine.start()
    yield engine
    await engine.stop()


def request(content="hello", fmt=ResponseFormat(), **sampling) -> GenerationRequest:
    return GenerationRequest("t", (ChatTurn("user", content),), SamplingParams(**sampling), response_format=fmt)


async def run(engine, req):
    events = [e async for e in engine.generate(req)]
    assert isinstance(events[-1], Finished), events[-1]
    return events


def answer(events) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


pytestmark = pytest.mark.asyncio(loop_scope="module")


def no_think(engine) -> dict[int, float]:
    """A logit_bias that keeps the random-weight model from opening a reasoning: the stand-in has Ministral-3's
    [THINK] token, the gate lets a model reason before its constrained answer, and random weights, once
    thinking, rarely stop (the scripted reasoning model covers that path)."""
    return {engine.lifecycle.resource.loaded.tokenizer.convert_tokens_to_ids("[THINK]"): -100.0}


async def test_json_schema_output_validates_for_many_seeds(text_engine):
    import asyncio

    fmt = ResponseFormat(ResponseFormatType.JSON_SCHEMA, json.dumps(PERSON), "person")
    runs = await asyncio.gather(
        *(
            run(
                text_engine,
                request(fmt=fmt, temperature=1.0, seed=seed, max_tokens=96, logit_bias=no_think(text_engine)),
            )
            for seed in range(24)
        )
    )
    for events in runs:
        assert events[-1].reason is FinishReason.STOP, answer(events)
        jsonschema.validate(json.loads(answer(events)), PERSON)
    assert len({answer(events) for events in runs}) > 1  # seeds differ: the grammar constrains, it does not script


async def test_json_object_output_is_an_object(text_engine):
    fmt = ResponseFormat(ResponseFormatType.JSON_OBJECT)
    finished = 0
    for seed in range(8):
        events = await run(
            text_engine, request(fmt=fmt, temperature=0.8, seed=seed, max_tokens=64, logit_bias=no_think(text_engine))
        )
        text = answer(events)
        if events[-1].reason is FinishReason.STOP:
            finished += 1
            assert isinstance(json.loads(text), dict)
        else:  # cut by max_tokens: still a prefix the grammar allowed
            assert events[-1].reason is FinishReason.LENGTH and text.startswith("{")
    assert finished > 0


async def test_a_bad_schema_is_refused_before_the_request_is_accepted(text_engine):
    fmt = ResponseFormat(ResponseFormatType.JSON_SCHEMA, '{"type": "object", "properties": {"a": {"type": "nope"}}}')
    with pytest.raises(InvalidRequestError) as info:
        await run(text_engine, request(fmt=fmt))
    assert info.value.param == "response_format"


async def test_greedy_logprobs_are_the_models_own_distribution(text_engine):
    """Each returned token is the top alternative (greedy), and its logprob is log-softmax of the logits an
    independent forward pass of the same model computes for that position."""
    req = request(temperature=0.0, max_tokens=6, ignore_eos=True, top_logprobs=3)
    events = await run(text_engine, req)
    records = [r for e in events if isinstance(e, TextDelta) for r in e.logprobs]
    assert len(records) == events[-1].completion_tokens == 6
    loaded = text_engine.lifecycle.resource.loaded
    ids = render_prompt(loaded.tokenizer, req)
    eos = loaded.eos_token_ids
    for record in records:
        assert len(record.top_logprobs) == 3 and record.top_logprobs[0].logprob >= record.top_logprobs[1].logprob
        assert (record.token, record.logprob) == (record.top_logprobs[0].token, record.top_logprobs[0].logprob)
        with torch.no_grad():
            logits = loaded.model(torch.tensor([ids])).logits[0, -1].float()
        logits[eos] = float("-inf")  # ignore_eos bans them before the choice, so the distribution excludes them
        expected = torch.log_softmax(logits, dim=-1)
        token = int(expected.argmax())
        assert math.isclose(record.logprob, float(expected[token]), abs_tol=1e-3)
        assert record.bytes == loaded.tokenizer.decode([token]).encode() or record.token == "\ufffd"
        ids.append(token)


async def test_logit_bias_forces_a_token_and_stop_token_ids_end_the_answer(text_engine):
    loaded = text_engine.lifecycle.resource.loaded
    forced = loaded.tokenizer.encode("cat", add_special_tokens=False)[0]
    events = await run(text_engine, request(temperature=1.0, seed=1, max_tokens=5, logit_bias={forced: 100.0}))
    assert answer(events) == loaded.tokenizer.decode([forced] * 5)
    # The same forced token listed as a stop token: the answer ends before it, with finish "stop".
    events = await run(
        text_engine,
        request(temperature=1.0, seed=1, max_tokens=5, logit_bias={forced: 100.0}, stop_token_ids=(forced,)),
    )
    assert answer(events) == "" and events[-1].reason is FinishReason.STOP


async def test_min_tokens_holds_off_the_end_and_ignore_eos_runs_to_max_tokens(text_engine):
    eos = text_engine.lifecycle.resource.loaded.eos_token_ids[0]
    pushed = {eos: 100.0}  # end-of-sequence is all the model wants to say
    events = await run(text_engine, request(temperature=0.0, max_tokens=8, logit_bias=pushed))
    assert events[-1].completion_tokens == 1 and events[-1].reason is FinishReason.STOP
    events = await run(text_engine, request(temperature=0.0, max_tokens=8, logit_bias=pushed, min_tokens=4))
    assert events[-1].completion_tokens == 5 and events[-1].reason is FinishReason.STOP  # 4 tokens, then EOS
    events = await run(text_engine, request(temperature=0.0, max_tokens=8, logit_bias=pushed, ignore_eos=True))
    assert events[-1].completion_tokens == 8 and events[-1].reason is FinishReason.LENGTH


async def test_token_parameters_outside_the_vocabulary_are_refused(text_engine):
    for kw, param in (
        ({"logit_bias": {10**7: 1.0}}, "logit_bias"),
        ({"stop_token_ids": (-1,)}, "stop_token_ids"),
        ({"top_logprobs": 21}, "top_logprobs"),
        ({"max_tokens": 4, "min_tokens": 5}, "min_tokens"),
    ):
        with pytest.raises(InvalidRequestError) as info:
            await run(text_engine, request(**kw))
        assert info.value.param == param


async def test_a_reasoning_model_reasons_freely_then_answers_in_the_schema():
    """The constraint starts after [/THINK]: the scripted model's reasoning comes out unchanged, the answer
    follows the schema."""
    engine = engine_for(build_all(REPO_ROOT / "models" / "tiny", only={"reasoning"})["reasoning"])
    await engine.start()
    try:
        fmt = ResponseFormat(ResponseFormatType.JSON_SCHEMA, json.dumps(PERSON), "person")
        events = await run(engine, request("What is 2+2?", fmt=fmt, temperature=0.0, max_tokens=96))
        reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
        assert reasoning == "Let me think about this first"
        jsonschema.validate(json.loads(answer(events)), PERSON)
    finally:
        await engine.stop()
