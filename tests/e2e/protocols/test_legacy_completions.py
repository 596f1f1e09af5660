"""Legacy `/v1/completions` end to end: the official openai SDK (`client.completions.create`) -> real uvicorn
gateway -> real gRPC text engines with tiny random-weight stand-ins:

- ministral-3-tiny (TEXT_MODEL): no fill-in-the-middle tokens, so `suffix` is a 400 naming it;
- qwen3-tiny: Qwen's `<|fim_prefix|>`/`<|fim_suffix|>`/`<|fim_middle|>`, so `suffix` is a FIM prompt.

The weights are random, so the tests compare the server with itself and with the tokenizer: greedy requests are
deterministic (a string prompt and its token ids give the same text; a stop string cut where the greedy text has
it), seeded ones reproducible, and usage counts exactly the tokenizer's tokens (no chat template).
"""

from __future__ import annotations

import openai
import pytest

from services.common.tokenizers import load_tokenizer
from tests.support.models_yaml import TEXT_MODEL

from .conftest import QWEN3

pytestmark = pytest.mark.e2e
PROMPT = "def add(a, b):"
GREEDY = {"temperature": 0, "max_tokens": 8, "extra_body": {"ignore_eos": True}}  # always 8 tokens
SAMPLED = {"temperature": 1.0, "seed": 7, "max_tokens": 8, "extra_body": {"ignore_eos": True}}


@pytest.fixture(scope="module")
def client(stack):
    return stack.client()


@pytest.fixture(scope="module")
def tokenizer(models):
    return load_tokenizer(str(models["text"]))


@pytest.fixture(scope="module")
def greedy(client):
    """The greedy completion of PROMPT, the reference the other tests compare with."""
    response = client.completions.create(model=TEXT_MODEL, prompt=PROMPT, **GREEDY)
    return response.choices[0].text


@pytest.fixture(scope="module")
def sampled(client):
    """A seeded, sampled completion of PROMPT."""
    return client.completions.create(model=TEXT_MODEL, prompt=PROMPT, **SAMPLED).choices[0].text


def test_a_string_prompt_is_completed_as_it_is_without_a_chat_template(client, tokenizer, greedy):
    response = client.completions.create(model=TEXT_MODEL, prompt=PROMPT, **GREEDY)
    assert response.object == "text_completion" and response.id.startswith("cmpl-") and response.model == TEXT_MODEL
    (choice,) = response.choices
    assert (choice.index, choice.finish_reason, choice.text, choice.logprobs) == (0, "length", greedy, None)
    assert response.usage.prompt_tokens == len(tokenizer(PROMPT)["input_ids"])  # the tokenizer's own count
    assert response.usage.completion_tokens == 8 and response.usage.total_tokens == response.usage.prompt_tokens + 8


def test_a_token_id_prompt_is_the_same_prompt(client, tokenizer, greedy):
    ids = tokenizer(PROMPT)["input_ids"]
    response = client.completions.create(model=TEXT_MODEL, prompt=ids, **GREEDY)
    assert response.choices[0].text == greedy and response.usage.prompt_tokens == len(ids)


def test_a_list_of_prompts_with_n_2_numbers_choices_prompt_times_n_plus_choice(client, tokenizer, greedy):
    prompts = [PROMPT, "The capital of France is"]
    response = client.completions.create(model=TEXT_MODEL, prompt=prompts, n=2, **GREEDY)
    assert [c.index for c in response.choices] == [0, 1, 2, 3]
    assert response.choices[0].text == response.choices[1].text == greedy  # prompt 0's choices (greedy)
    assert response.usage.prompt_tokens == sum(len(tokenizer(p)["input_ids"]) for p in prompts)
    assert response.usage.completion_tokens == 4 * 8


def test_echo_puts_the_prompt_before_the_completion(client, greedy):
    response = client.completions.create(model=TEXT_MODEL, prompt=PROMPT, echo=True, **GREEDY)
    assert response.choices[0].text == PROMPT + greedy


def test_logprobs_2_gives_each_token_with_up_to_3_alternatives(client):
    response = client.completions.create(model=TEXT_MODEL, prompt=PROMPT, logprobs=2, **GREEDY)
    logprobs = response.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs) == 8
    for token, logprob, top in zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True):
        assert token in top and top[token] == logprob and 1 <= len(top) <= 3 and logprob <= 0
        assert logprob == max(top.values())  # greedy: the sampled token is the most likely one
    offsets = logprobs.text_offset
    assert offsets[0] == 0 and offsets == sorted(offsets) and offsets[-1] <= len(response.choices[0].text)


def test_a_seed_reproduces_a_sampled_completion(client, sampled):
    assert client.completions.create(model=TEXT_MODEL, prompt=PROMPT, **SAMPLED).choices[0].text == sampled


def test_a_stop_string_cuts_the_completion_where_it_first_appears(client, sampled):
    # The seeded text up to the stop is sampled as before: the stop only ends it. (The greedy text of the
    # random-weight stand-in repeats one token, which would put any stop at the start.)
    stop = next((c for i, c in enumerate(sampled) if i > 0 and sampled.index(c) == i and c.isalnum()), None)
    assert stop is not None, f"no stop candidate in {sampled!r}"
    response = client.completions.create(model=TEXT_MODEL, prompt=PROMPT, stop=[stop], **SAMPLED)
    assert response.choices[0].text == sampled[: sampled.index(stop)] != ""
    assert response.choices[0].finish_reason == "stop"


def test_suffix_is_a_fill_in_the_middle_prompt_on_a_model_with_fim_tokens(client, models):
    response = client.completions.create(model=QWEN3, prompt="def add(a, b):\n", suffix="\n    return c\n", **GREEDY)
    fim = "<|fim_prefix|>def add(a, b):\n<|fim_suffix|>\n    return c\n<|fim_middle|>"
    assert response.usage.prompt_tokens == len(load_tokenizer(str(models["qwen3"]))(fim)["input_ids"])
    assert response.choices[0].finish_reason == "length" and response.usage.completion_tokens == 8


def test_suffix_on_a_model_without_fim_tokens_is_a_400_naming_it(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=TEXT_MODEL, prompt=PROMPT, suffix="return c", max_tokens=4)
    assert info.value.param == "suffix" and "fill-in-the-middle" in info.value.message


def test_a_streamed_completion_is_the_same_text_then_its_finish_and_usage(client, greedy):
    chunks = list(
        client.completions.create(
            model=TEXT_MODEL, prompt=PROMPT, stream=True, stream_options={"include_usage": True}, **GREEDY
        )
    )
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(texts) == greedy and len(texts) > 2  # streamed in pieces, not in one
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8
    assert len({c.id for c in chunks}) == 1


def test_echo_with_token_ids_and_echo_with_logprobs_are_400s_naming_echo(client, tokenizer):
    for kwargs in (
        {"prompt": tokenizer(PROMPT)["input_ids"], "echo": True},
        {"prompt": PROMPT, "echo": True, "logprobs": 1},
    ):
        with pytest.raises(openai.BadRequestError) as info:
            client.completions.create(model=TEXT_MODEL, max_tokens=4, **kwargs)
        assert info.value.param == "echo"
