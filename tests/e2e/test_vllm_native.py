"""`vision_mode: native` on vLLM against transformers, on the same checkpoint, through one gateway and the SDK.

Two text engines serve one stand-in natively: `hf` on transformers (images in static `generate()` batches beside
continuous batching), `vllm` on vLLM's engine core (images and text in its one continuous batch; its processor
encodes the images admission sized). Each stand-in in turn (random weights, 32-dim heads):
- Qwen2-VL (Qwen/Qwen2-VL-7B-Instruct's layout): vLLM's processor is transformers', in .venv-vllm with
  torchvision less its compiled ops; it writes each image's tokens in place of one placeholder.
- Ministral-3 (the brief's mistralai/Ministral-3-3B-Reasoning-2512 layout): vLLM reads Mistral's native format
  (params.json, consolidated.safetensors) and encodes images with mistral-common's image encoder, sized by
  tekken.json's `image` section; it checks the image tokens written out in the prompt.
- The same Ministral-3 without its native files (config.json and model.safetensors only, as a transformers-format
  Mistral3 repo ships): vLLM runs it as Mistral3ForConditionalGeneration with transformers' PixtralProcessor.
Greedy answers must be the same text and the same prompt token count (image tokens included) for one image at
each `detail`, two images of different details in one message, a text-only turn, streamed or not, and image
requests sent together. Marked `vllm`: `make test-vllm` runs them after `make install-vllm`.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from tests.support.images import data_url, jpeg, png
from tests.support.models_yaml import ModelsYaml
from tests.support.processes import free_ports
from tests.support.stack import TextEngineSpec, text_engines_behind_gateway

pytestmark = [pytest.mark.e2e, pytest.mark.vllm]

HF, VLLM = "native-hf", "native-vllm"
PARAMS = {"mem": 64, "dtype": "f32", "max_num_seqs": 4}
PICTURES = [
    png((200, 30, 30)),
    jpeg((20, 160, 60), (300, 200)),
    png((10, 10, 220), (64, 480)),
    jpeg((240, 240, 0), (900, 700)),
]


# Mistral's native files: without them vLLM reads a Mistral3 checkpoint in the transformers format.
NATIVE_FORMAT_FILES = ("params.json", "consolidated.safetensors")


def checkpoint(kind: str, tiny_models, tmp: Path) -> Path:
    """The stand-in a `client` serves (see the module docstring)."""
    if kind == "qwen2_vl":
        return tiny_models["vision"]
    if kind == "mistral3":
        return tiny_models["text"]
    copy = tmp / "ministral-3-transformers-format"
    shutil.copytree(tiny_models["text"], copy, ignore=shutil.ignore_patterns(*NATIVE_FORMAT_FILES))
    return copy


@pytest.fixture(scope="module", params=["qwen2_vl", "mistral3", "mistral3_transformers_format"])
def client(request, tiny_models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vllm_native")
    path = checkpoint(request.param, tiny_models, tmp)
    ports = dict(zip((HF, VLLM), free_ports(2)))
    yaml = ModelsYaml()
    for name, backend in ((HF, "transformers"), (VLLM, "vllm")):
        yaml = yaml.native(
            name,
            local_path=path,
            endpoint=f"127.0.0.1:{ports[name]}",
            backend=backend,
            tiny_defaults=False,
            params=PARAMS,
            max_model_len=4096,
        )
    config = yaml.write(tmp / "models.yaml")
    engines = [TextEngineSpec(name, ports[name], backend) for name, backend in ((HF, "transformers"), (VLLM, "vllm"))]
    with text_engines_behind_gateway(config, tmp, engines) as services:
        yield openai.OpenAI(base_url=f"{services[-1].url}/v1", api_key="none", max_retries=0, timeout=120)


def image(data: bytes, detail: str = "auto") -> dict:
    return {"type": "image_url", "image_url": {"url": data_url(data), "detail": detail}}


def ask(client, model: str, *content, stream: bool = False) -> tuple[str, int | None]:
    """The greedy answer's text and prompt tokens (None when streamed)."""
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is in this picture?"}, *content]}]
    if stream:
        chunks = client.chat.completions.create(
            model=model, messages=messages, max_tokens=16, temperature=0, stream=True
        )
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), None
    reply = client.chat.completions.create(model=model, messages=messages, max_tokens=16, temperature=0)
    return reply.choices[0].message.content, reply.usage.prompt_tokens


def test_models_list_both_backends(client):
    listing = {m.id: m.model_extra for m in client.models.list().data}
    assert (listing[HF]["backend"], listing[VLLM]["backend"]) == ("transformers", "vllm")


@pytest.mark.parametrize("detail", ["low", "auto", "high"])
@pytest.mark.parametrize("picture", range(len(PICTURES)))
def test_one_image_gets_the_same_greedy_answer_on_both_backends(client, picture, detail):
    hf = ask(client, HF, image(PICTURES[picture], detail))
    assert hf[0]  # something was said (random weights: not words)
    assert ask(client, VLLM, image(PICTURES[picture], detail)) == hf


def test_the_answers_depend_on_the_image(client):
    # Else equal answers would not show that vLLM's encoder saw the pixels ours did.
    answers = {ask(client, VLLM, image(picture))[0] for picture in PICTURES}
    assert len(answers) > 1


def test_two_images_of_different_details_in_one_message(client):
    parts = (image(PICTURES[3], "low"), image(PICTURES[1], "high"))
    hf = ask(client, HF, *parts)
    assert ask(client, VLLM, *parts) == hf
    one = ask(client, HF, parts[0])
    assert hf[1] > one[1]  # the second image's tokens are in the prompt too


def test_a_text_turn_and_a_streamed_image_answer_match(client):
    messages = [{"role": "user", "content": "Say something."}]
    text = [
        client.chat.completions.create(model=m, messages=messages, max_tokens=12, temperature=0) for m in (HF, VLLM)
    ]
    assert text[1].choices[0].message.content == text[0].choices[0].message.content
    streamed = ask(client, VLLM, image(PICTURES[1]), stream=True)[0]
    assert streamed == ask(client, HF, image(PICTURES[1]))[0]


def test_image_requests_sent_together_match_each_alone(client):
    fresh = [jpeg((i * 40, 255 - i * 30, 90), (120 + i * 30, 90)) for i in range(6)]
    with ThreadPoolExecutor(len(fresh)) as pool:
        together = list(pool.map(lambda data: ask(client, VLLM, image(data)), fresh))
    alone = [ask(client, HF, image(data)) for data in fresh]
    assert together == alone
