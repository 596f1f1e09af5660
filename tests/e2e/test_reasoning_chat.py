"""A reasoning model end to end: the official SDK -> gateway -> gRPC text engine serving the scripted
Ministral-3 stand-in, whose greedy output is always `[THINK]<reasoning>[/THINK]<answer></s>`
(services/model_builder/scripted.py). The engine's output pipeline splits it; the gateway returns it as
vLLM's clients expect (`reasoning_content`, `delta.reasoning_content`, `reasoning_tokens`)."""

from __future__ import annotations

import pytest

from services.common.tokenizers import load_tokenizer
from services.model_builder import build_all
from services.model_builder.scripted import (
    END_THINK_ID,
    SCRIPTED_ANSWER,
    SCRIPTED_COMPLETION_IDS,
    SCRIPTED_REASONING,
    THINK_ID,
)
from tests.support.models_yaml import TEXT_MODEL
from tests.support.processes import REPO_ROOT
from tests.support.stack import make_stack

pytestmark = pytest.mark.e2e
ASK = [{"role": "user", "content": "What is two plus two?"}]


@pytest.fixture(scope="module")
def scripted_model():
    return build_all(REPO_ROOT / "models" / "tiny", only={"reasoning"})["reasoning"]


@pytest.fixture(scope="module")
def stack(tiny_models, scripted_model, tmp_path_factory):
    s = make_stack(tmp_path_factory.mktemp("reasoning"), {**tiny_models, "text": scripted_model}, vision=False)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(stack):
    return stack.client()


def reasoning_tokens() -> int:
    """Tokens from [THINK] to [/THINK], both included."""
    ids = list(SCRIPTED_COMPLETION_IDS)
    return ids.index(END_THINK_ID) - ids.index(THINK_ID) + 1


def test_non_streamed_answer_has_reasoning_apart_from_content(client):
    response = client.chat.completions.create(model=TEXT_MODEL, messages=ASK, temperature=0)
    message = response.choices[0].message
    assert message.content == SCRIPTED_ANSWER and message.reasoning_content == SCRIPTED_REASONING
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.completion_tokens == len(SCRIPTED_COMPLETION_IDS)
    assert response.usage.completion_tokens_details.reasoning_tokens == reasoning_tokens()


def test_streamed_reasoning_comes_first_in_its_own_field(client):
    stream = client.chat.completions.create(
        model=TEXT_MODEL, messages=ASK, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    kinds, reasoning, answer, usage, finish = [], "", "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        if getattr(delta, "reasoning_content", None):
            kinds.append("reasoning")
            reasoning += delta.reasoning_content
        if delta.content:
            kinds.append("content")
            answer += delta.content
        finish = chunk.choices[0].finish_reason or finish
    assert (reasoning, answer, finish) == (SCRIPTED_REASONING, SCRIPTED_ANSWER, "stop")
    assert "[THINK]" not in answer + reasoning and "[/THINK]" not in answer + reasoning
    assert kinds == sorted(kinds, key=lambda k: k != "reasoning")  # all reasoning before any content
    assert usage.completion_tokens_details.reasoning_tokens == reasoning_tokens()


def test_include_reasoning_false_drops_it_streamed_and_not(client):
    response = client.chat.completions.create(
        model=TEXT_MODEL, messages=ASK, temperature=0, extra_body={"include_reasoning": False}
    )
    assert response.choices[0].message.content == SCRIPTED_ANSWER
    assert getattr(response.choices[0].message, "reasoning_content", None) is None
    assert response.usage.completion_tokens_details.reasoning_tokens == reasoning_tokens()  # still generated
    chunks = list(
        client.chat.completions.create(
            model=TEXT_MODEL, messages=ASK, temperature=0, stream=True, extra_body={"include_reasoning": False}
        )
    )
    assert not any(getattr(c.choices[0].delta, "reasoning_content", None) for c in chunks if c.choices)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == SCRIPTED_ANSWER


def test_stop_strings_cut_the_answer_and_never_the_reasoning(client):
    word_only_in_reasoning = "think"
    assert word_only_in_reasoning in SCRIPTED_REASONING and word_only_in_reasoning not in SCRIPTED_ANSWER
    response = client.chat.completions.create(
        model=TEXT_MODEL, messages=ASK, temperature=0, stop=[word_only_in_reasoning]
    )
    assert response.choices[0].message.reasoning_content == SCRIPTED_REASONING
    assert response.choices[0].message.content == SCRIPTED_ANSWER and response.choices[0].finish_reason == "stop"
    word_in_answer = SCRIPTED_ANSWER.split()[-1]
    response = client.chat.completions.create(model=TEXT_MODEL, messages=ASK, temperature=0, stop=[word_in_answer])
    assert response.choices[0].message.content == SCRIPTED_ANSWER[: SCRIPTED_ANSWER.index(word_in_answer)]
    assert response.choices[0].finish_reason == "stop"


def test_cut_by_max_tokens_inside_the_reasoning_everything_is_reasoning(client):
    response = client.chat.completions.create(model=TEXT_MODEL, messages=ASK, temperature=0, max_tokens=4)
    message = response.choices[0].message
    assert response.choices[0].finish_reason == "length" and message.content == ""
    assert SCRIPTED_REASONING.startswith(message.reasoning_content) and message.reasoning_content
    assert response.usage.completion_tokens_details.reasoning_tokens == 4


def test_reasoning_sent_back_is_rendered_as_the_template_renders_thinking(client, scripted_model):
    tokenizer = load_tokenizer(str(scripted_model))  # as the engine loads it
    answer = {"role": "assistant", "content": SCRIPTED_ANSWER}
    follow_up = {"role": "user", "content": "And three plus three?"}
    without = client.chat.completions.create(model=TEXT_MODEL, messages=[*ASK, answer, follow_up], temperature=0)
    with_reasoning = client.chat.completions.create(
        model=TEXT_MODEL,
        temperature=0,
        messages=[*ASK, {**answer, "reasoning_content": SCRIPTED_REASONING}, follow_up],
    )
    thinking = {
        "role": "assistant",
        "content": [{"type": "thinking", "thinking": SCRIPTED_REASONING}, {"type": "text", "text": SCRIPTED_ANSWER}],
    }
    expected = tokenizer.apply_chat_template(
        [*ASK, thinking, follow_up], add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert with_reasoning.usage.prompt_tokens == len(expected) > without.usage.prompt_tokens
