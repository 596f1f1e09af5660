"""Tool calls, structured outputs, logprobs, n and the vLLM sampling extras end to end: the official openai
SDK -> real uvicorn gateway -> real gRPC text engines, one per model:

- ministral-3-tiny (TEXT_MODEL): Mistral's call format (`[TOOL_CALLS]name[ARGS]{...}`), [THINK] reasoning;
- qwen3-tiny: Hermes' format (`<tool_call>{...}</tool_call>`), <think> reasoning;
- the scripted reasoning model, whose greedy output is `[THINK]<reasoning>[/THINK]<answer></s>`.

Both stand-ins have random weights, so every schema here bounds its strings and uses enums: the grammar
decides what is valid, the weights only pick among valid tokens, and bounded values let an answer end well
before max_tokens. Seeded requests are reproducible, so the seed lists below are fixed, not searched.
"""

from __future__ import annotations

import asyncio
import json
from typing import Literal

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from services.common.tokenizers import load_tokenizer
from services.model_builder import build_all
from services.model_builder.scripted import SCRIPTED_REASONING
from tests.support.models_yaml import TEXT_MODEL
from tests.support.processes import REPO_ROOT
from tests.support.stack import make_stack

pytestmark = pytest.mark.e2e
QWEN3 = "qwen3-tiny"
SCRIPTED = "scripted-reasoning"
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER_PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME_PARAMS = {
    "type": "object",
    "properties": {"zone": {"enum": ["UTC", "CET", "PST"]}, "seconds": {"type": "boolean"}},
    "required": ["zone"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Current weather in a city.", "parameters": WEATHER_PARAMS},
}
TIME = {"type": "function", "function": {"name": "get_time", "description": "The time now.", "parameters": TIME_PARAMS}}
PARAMS_OF = {"get_weather": WEATHER_PARAMS, "get_time": TIME_PARAMS}
NAMED_WEATHER = {"type": "function", "function": {"name": "get_weather"}}


class Person(BaseModel):
    """The structured-output model: bounded, so random weights close the object."""

    name: str = Field(max_length=8)
    age: int = Field(ge=0, le=120)
    color: Literal["red", "green", "blue"]


@pytest.fixture(scope="module")
def models():
    return build_all(REPO_ROOT / "models" / "tiny", only={"text", "reasoning", "qwen3"})


@pytest.fixture(scope="module")
def stack(models, tmp_path_factory):
    s = make_stack(
        tmp_path_factory.mktemp("tools"),
        {"text": models["text"]},
        vision=False,
        more_text={QWEN3: models["qwen3"], SCRIPTED: models["reasoning"]},
    )
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(stack):
    return stack.client()


@pytest.fixture(scope="module")
def no_think(models) -> dict[str, dict[str, int]]:
    """Per model, a logit_bias that bans the token opening a reasoning. The grammar gate lets a reasoning model
    reason before its constrained answer (its first token may be the reasoning start instead of the
    grammar's), and random weights, once thinking, rarely stop before max_tokens. The scripted model covers
    the reason-then-answer path (test_the_reasoning_model_reasons_freely_then_answers_in_the_schema)."""
    bias = {}
    for model, path, token in ((TEXT_MODEL, models["text"], "[THINK]"), (QWEN3, models["qwen3"], "<think>")):
        token_id = load_tokenizer(str(path)).convert_tokens_to_ids(token)
        assert isinstance(token_id, int) and token_id >= 0, f"{token} is not a token of {model}"
        bias[model] = {str(token_id): -100}
    return bias


def call_kwargs(no_think, model: str, **kw) -> dict:
    return {
        "model": model,
        "messages": ASK,
        "tools": [WEATHER],
        "tool_choice": NAMED_WEATHER,
        "temperature": 1.0,
        "max_tokens": 96,
        "logit_bias": no_think[model],
        **kw,
    }


def assert_valid_call(call) -> None:
    assert call.type == "function" and call.id
    assert call.function.name in PARAMS_OF, call.function.name
    jsonschema.validate(json.loads(call.function.arguments), PARAMS_OF[call.function.name])


def streamed_tool_calls(stream) -> tuple[list[dict], str | None]:
    """Assemble streamed tool calls as a client does: a call's first delta has its index, id and name, later
    ones only argument fragments for that index."""
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        for delta in chunk.choices[0].delta.tool_calls or ():
            if delta.index not in calls:
                assert delta.id and delta.function.name, delta  # the opening delta names the call
                calls[delta.index] = {
                    "id": delta.id,
                    "name": delta.function.name,
                    "arguments": delta.function.arguments or "",
                }
            else:
                assert delta.id is None and not delta.function.name, delta  # later deltas only carry arguments
                calls[delta.index]["arguments"] += delta.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    return [calls[i] for i in sorted(calls)], finish


@pytest.mark.parametrize("model", [TEXT_MODEL, QWEN3])
def test_named_tool_choice_calls_that_tool_with_valid_arguments(client, no_think, model):
    response = client.chat.completions.create(**call_kwargs(no_think, model, seed=0, parallel_tool_calls=False))
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert response.usage.completion_tokens < 96  # ended by end-of-sequence, not cut
    assert len(choice.message.tool_calls) == 1 and not choice.message.content
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert_valid_call(call)


@pytest.mark.parametrize("model", [TEXT_MODEL, QWEN3])
def test_streamed_tool_call_assembles_to_the_non_streamed_one(client, no_think, model):
    kwargs = call_kwargs(no_think, model, seed=3, parallel_tool_calls=False)
    whole = client.chat.completions.create(**kwargs).choices[0].message.tool_calls
    calls, finish = streamed_tool_calls(client.chat.completions.create(**kwargs, stream=True))
    assert finish == "tool_calls"
    # The ids are fresh per answer; the seed fixes what the model said.
    assert [(c["name"], c["arguments"]) for c in calls] == [(c.function.name, c.function.arguments) for c in whole]
    jsonschema.validate(json.loads(calls[0]["arguments"]), WEATHER_PARAMS)


@pytest.mark.parametrize("model", [TEXT_MODEL, QWEN3])
def test_required_tool_choice_over_seeds_with_and_without_parallel_calls(stack, models, no_think, model):
    # The grammar lets a model end after any call (for Qwen3's, after the newline that ends a call's line too).
    # The random-weight Qwen3 stand-in mostly does; a bias on <tool_call> stands for a model that goes on to
    # one more call once it ended the line, so that some parallel answers have several.
    more = {}
    if model == QWEN3:
        more = {str(load_tokenizer(str(models["qwen3"])).convert_tokens_to_ids("<tool_call>")): 5}

    async def ask(client, seed: int, parallel: bool):
        kwargs = call_kwargs(
            no_think,
            model,
            tools=[WEATHER, TIME],
            tool_choice="required",
            seed=seed,
            parallel_tool_calls=parallel,
            max_tokens=160,
        )
        if parallel:
            kwargs["logit_bias"] = {**kwargs["logit_bias"], **more}
        return await client.chat.completions.create(**kwargs)

    async def main():
        async with stack.async_client() as client:
            return await asyncio.gather(
                *(ask(client, seed, parallel) for parallel in (False, True) for seed in range(6))
            )

    answers = asyncio.run(main())
    single, parallel = answers[:6], answers[6:]
    for response in answers:
        choice = response.choices[0]
        assert choice.message.tool_calls, choice
        for call in choice.message.tool_calls:
            assert_valid_call(call)  # never a call cut by max_tokens
        if response.usage.completion_tokens < 160:  # ended by end-of-sequence: nothing but calls
            assert choice.finish_reason == "tool_calls" and not choice.message.content, choice
        else:  # max_tokens: "length" if it cut one more call (dropped), else the calls are the answer
            assert choice.finish_reason in ("length", "tool_calls"), choice
    assert all(len(r.choices[0].message.tool_calls) == 1 for r in single)
    assert all(r.usage.completion_tokens < 160 for r in single)  # one bounded call always fits
    assert max(len(r.choices[0].message.tool_calls) for r in parallel) > 1  # several calls are allowed
    assert {c.function.name for r in answers for c in r.choices[0].message.tool_calls} == {"get_weather", "get_time"}


@pytest.mark.parametrize("model", [TEXT_MODEL, QWEN3])
def test_a_named_tool_choice_is_one_call_even_with_parallel_calls(client, no_think, model):
    for seed in range(4):
        response = client.chat.completions.create(**call_kwargs(no_think, model, seed=seed, parallel_tool_calls=True))
        choice = response.choices[0]
        assert choice.finish_reason == "tool_calls" and len(choice.message.tool_calls) == 1, choice
        assert choice.message.tool_calls[0].function.name == "get_weather"


@pytest.mark.parametrize("model", [TEXT_MODEL, QWEN3])
def test_a_call_cut_by_max_tokens_is_length_without_the_call(client, no_think, model):
    # Cut inside the forced call's arguments (the call's head is 6 tokens of Ministral's, 24 of Qwen3's stand-in):
    # no call, not even a streamed piece of one, and no markup as content.
    cut = {TEXT_MODEL: 10, QWEN3: 30}[model]
    kwargs = call_kwargs(no_think, model, seed=0, parallel_tool_calls=False, max_tokens=cut)
    choice = client.chat.completions.create(**kwargs).choices[0]
    assert (choice.finish_reason, choice.message.tool_calls, choice.message.content or "") == ("length", None, "")
    chunks = list(client.chat.completions.create(**kwargs, stream=True))
    calls, finish = streamed_tool_calls(chunks)
    assert (calls, finish) == ([], "length")
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ""


@pytest.mark.parametrize("model", [TEXT_MODEL, QWEN3])
def test_a_tool_result_sent_back_gets_an_answer(client, no_think, model):
    first = client.chat.completions.create(**call_kwargs(no_think, model, seed=0, parallel_tool_calls=False))
    call = first.choices[0].message.tool_calls[0]
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21, "sky": "clear"}'},
    ]
    second = client.chat.completions.create(
        model=model, messages=history, tools=[WEATHER], temperature=0, max_tokens=12, logit_bias=no_think[model]
    )
    assert second.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert second.choices[0].message.role == "assistant"
    # The call and its result are part of the prompt now: more than the first request's prompt plus the call.
    assert second.usage.prompt_tokens > first.usage.prompt_tokens + 10


def test_parse_with_a_pydantic_model_returns_instances(stack, no_think):
    async def parse(client, seed: int):
        return await client.chat.completions.parse(
            model=TEXT_MODEL,
            messages=ASK,
            response_format=Person,
            seed=seed,
            temperature=1.0,
            max_tokens=96,
            logit_bias=no_think[TEXT_MODEL],
        )

    async def main():
        async with stack.async_client() as client:
            return await asyncio.gather(*(parse(client, seed) for seed in range(8)))

    answers = asyncio.run(main())
    for response in answers:
        message = response.choices[0].message
        assert response.choices[0].finish_reason == "stop"
        assert isinstance(message.parsed, Person), message.content
        assert message.parsed == Person.model_validate_json(message.content)
    assert len({r.choices[0].message.content for r in answers}) > 1  # the grammar constrains, it does not script


def test_json_object_answers_are_objects(client, no_think):
    finished = 0
    for seed in range(6):
        response = client.chat.completions.create(
            model=TEXT_MODEL,
            messages=ASK,
            response_format={"type": "json_object"},
            seed=seed,
            temperature=0.8,
            max_tokens=64,
            logit_bias=no_think[TEXT_MODEL],
        )
        content = response.choices[0].message.content
        if response.choices[0].finish_reason == "stop":
            finished += 1
            assert isinstance(json.loads(content), dict), content
        else:  # cut by max_tokens: still a prefix the grammar allowed
            assert response.choices[0].finish_reason == "length" and content.startswith("{"), content
    assert finished > 0


def test_an_invalid_schema_is_a_bad_request_naming_response_format(client):
    bad = {
        "type": "json_schema",
        "json_schema": {"name": "bad", "schema": {"type": "object", "properties": {"a": {"type": "nope"}}}},
    }
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=TEXT_MODEL, messages=ASK, response_format=bad, max_tokens=8)
    assert info.value.status_code == 400
    assert info.value.param == "response_format", info.value.body


def test_the_reasoning_model_reasons_freely_then_answers_in_the_schema(client):
    schema = {"type": "json_schema", "json_schema": {"name": "weather", "schema": WEATHER_PARAMS}}
    response = client.chat.completions.create(
        model=SCRIPTED, messages=ASK, temperature=0, max_tokens=96, response_format=schema
    )
    message = response.choices[0].message
    assert message.reasoning_content == SCRIPTED_REASONING  # the constraint starts after [/THINK]
    assert response.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(message.content), WEATHER_PARAMS)


def assert_greedy_logprobs(entries, content: str) -> None:
    for entry in entries:
        assert entry.token == entry.top_logprobs[0].token and entry.logprob == entry.top_logprobs[0].logprob
        assert len(entry.top_logprobs) == 3 and entry.logprob <= 0
        assert [t.logprob for t in entry.top_logprobs] == sorted((t.logprob for t in entry.top_logprobs), reverse=True)
    assert b"".join(bytes(entry.bytes) for entry in entries).decode() == content


def test_logprobs_cover_every_answer_token_streamed_and_not(client):
    kwargs = {
        "model": TEXT_MODEL,
        "messages": ASK,
        "temperature": 0,
        "max_tokens": 8,
        "logprobs": True,
        "top_logprobs": 3,
    }
    response = client.chat.completions.create(**kwargs)
    choice = response.choices[0]
    entries = choice.logprobs.content
    eos = 1 if choice.finish_reason == "stop" else 0  # end-of-sequence is counted, but is no answer token
    assert len(entries) == response.usage.completion_tokens - eos > 0
    assert_greedy_logprobs(entries, choice.message.content)

    streamed, text = [], ""
    for chunk in client.chat.completions.create(**kwargs, stream=True):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            streamed += chunk.choices[0].logprobs.content if chunk.choices[0].logprobs else []
    assert text == choice.message.content
    assert [(e.token, e.logprob, e.bytes) for e in streamed] == [(e.token, e.logprob, e.bytes) for e in entries]


def test_n_choices_are_seeded_and_counted(client, no_think):
    kwargs = {
        "model": TEXT_MODEL,
        "messages": ASK,
        "n": 3,
        "seed": 7,
        "temperature": 1.0,
        "max_tokens": 12,
        "logit_bias": no_think[TEXT_MODEL],
    }
    first, again = client.chat.completions.create(**kwargs), client.chat.completions.create(**kwargs)
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]
    assert len({c.message.content for c in first.choices}) > 1
    # Choice i samples with seed + i: each is the single answer of that seed, and usage adds them up.
    singles = [client.chat.completions.create(**{**kwargs, "n": 1, "seed": 7 + i}) for i in range(3)]
    assert [s.choices[0].message.content for s in singles] == [c.message.content for c in first.choices]
    assert first.usage.completion_tokens == sum(s.usage.completion_tokens for s in singles)
    assert first.usage.prompt_tokens == singles[0].usage.prompt_tokens  # the prompt is counted once

    contents, finishes = {0: "", 1: ""}, {}
    for chunk in client.chat.completions.create(**{**kwargs, "n": 2}, stream=True):
        for choice in chunk.choices:
            contents[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                assert choice.index not in finishes
                finishes[choice.index] = choice.finish_reason
    assert finishes == {0: first.choices[0].finish_reason, 1: first.choices[1].finish_reason}
    assert [contents[0], contents[1]] == [c.message.content for c in first.choices[:2]]  # same seeds, same samples


def test_a_last_token_without_text_still_has_its_logprob(client, no_think):
    """Seed 9 samples a special token (no text: skipped in the content) as its 12th and last token. Its entry
    must be there like those of the special tokens before it: one entry per answer token."""
    kwargs = {
        "model": TEXT_MODEL,
        "messages": ASK,
        "seed": 9,
        "temperature": 1.0,
        "logprobs": True,
        "logit_bias": no_think[TEXT_MODEL],
    }
    longer = client.chat.completions.create(**kwargs, max_tokens=13).choices[0].logprobs.content
    assert longer[11].token.startswith("<SPECIAL_")  # the 12th token is one without text
    response = client.chat.completions.create(**kwargs, max_tokens=12)
    assert response.choices[0].finish_reason == "length"
    entries = response.choices[0].logprobs.content
    assert [e.token for e in entries] == [e.token for e in longer[:12]]
    assert len(entries) == response.usage.completion_tokens == 12
    chunks = client.chat.completions.create(**kwargs, max_tokens=12, stream=True)
    streamed = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [e.token for e in streamed] == [e.token for e in longer[:12]]


def test_vllm_sampling_extras_reach_the_engine(client, models):
    tokenizer = load_tokenizer(str(models["text"]))
    eos, cat = tokenizer.eos_token_id, tokenizer.encode("cat", add_special_tokens=False)[0]
    extras = {"min_tokens": 4, "ignore_eos": True, "repetition_penalty": 1.2, "min_p": 0.1, "stop_token_ids": [cat]}
    response = client.chat.completions.create(
        model=TEXT_MODEL, messages=ASK, temperature=1.0, seed=1, max_tokens=8, extra_body=extras
    )
    assert (response.usage.completion_tokens, response.choices[0].finish_reason) == (8, "length")

    def ask(**extra):
        # End-of-sequence is all the model wants to say: what decides the length is the parameters.
        return client.chat.completions.create(
            model=TEXT_MODEL, messages=ASK, temperature=0, max_tokens=8, logit_bias={str(eos): 100}, extra_body=extra
        )

    for extra, tokens, finish in (({}, 1, "stop"), ({"min_tokens": 4}, 5, "stop"), ({"ignore_eos": True}, 8, "length")):
        response = ask(**extra)
        assert (response.usage.completion_tokens, response.choices[0].finish_reason) == (tokens, finish), extra


def test_stop_token_ids_end_the_answer_and_min_p_one_is_greedy(client, models):
    tokenizer = load_tokenizer(str(models["text"]))
    forced = tokenizer.encode("cat", add_special_tokens=False)[0]
    base = {"model": TEXT_MODEL, "messages": ASK, "max_tokens": 5, "temperature": 1.0, "seed": 1}
    response = client.chat.completions.create(
        **base, logit_bias={str(forced): 100}, extra_body={"stop_token_ids": [forced]}
    )
    assert (response.choices[0].message.content, response.choices[0].finish_reason) == ("", "stop")
    # min_p 1 keeps only the most likely token: sampling at temperature 1 gives the greedy answer.
    greedy = client.chat.completions.create(**{**base, "temperature": 0}).choices[0].message.content
    assert client.chat.completions.create(**base, extra_body={"min_p": 1.0}).choices[0].message.content == greedy
    # Random weights' logits are all near 0, so a mild penalty moves them less than the gaps between them (the
    # greedy answer repeats one token, penalty 1.2 or not): a strong one shows that the penalty reaches the
    # sampler, every token seen (prompt and answer) being pushed towards 0.
    penalized = client.chat.completions.create(
        **{**base, "temperature": 0}, logprobs=True, extra_body={"repetition_penalty": 10.0}
    )
    tokens = [e.token for e in penalized.choices[0].logprobs.content]
    assert len(tokens) == 5 and len(set(tokens)) == 5, tokens
    assert penalized.choices[0].message.content != greedy


def test_a_stop_token_id_outside_the_vocabulary_is_a_bad_request(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=TEXT_MODEL, messages=ASK, max_tokens=4, extra_body={"stop_token_ids": [10**7]}
        )
    assert info.value.param == "stop_token_ids", info.value.body
