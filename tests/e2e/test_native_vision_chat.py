"""Native vision end to end: the brief's multimodal examples through the official SDK against a model that sees
images itself (the tiny Qwen2-VL stand-in served by the text engine with `vision_mode: native`), beside the
brief's text model captioned through the proxy, in one models.yaml. Real engine and gateway processes; images
from a local HTTP server (the config opts in to 127.0.0.0/8)."""

from __future__ import annotations

import openai
import pytest

from tests.support.http_servers import ScriptedServer, send_bytes
from tests.support.images import data_url, jpeg, png
from tests.support.models_yaml import TEXT_MODEL, tiny
from tests.support.stack import make_stack

from .test_vision_chat import image_part

pytestmark = pytest.mark.e2e
NATIVE = "qwen2-vl-native"
IMAGES = {
    "/image.jpg": jpeg((200, 40, 40)),
    "/photo.jpg": jpeg((40, 200, 40), (80, 60)),
    "/image1.jpg": jpeg((10, 10, 200)),
    "/image2.jpg": png((250, 250, 0), (50, 70)),
}


@pytest.fixture(scope="module")
def images_server():
    server = ScriptedServer({path: send_bytes(data, "image/jpeg") for path, data in IMAGES.items()})
    yield server
    server.close()


@pytest.fixture(scope="module")
def stack(tiny_models, tmp_path_factory):
    images = {"allow_private_networks": ["127.0.0.0/8"], "fetch_timeout_secs": 5, "max_images_per_request": 4}
    config = tiny(tiny_models, vision=True).native(NATIVE, local_path=tiny_models["vision"]).gateway(images=images)
    s = make_stack(
        tmp_path_factory.mktemp("native_vision_chat"),
        tiny_models,
        config=config,
        more_text={NATIVE: tiny_models["vision"]},
    )
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(stack):
    return stack.client()


def user(*content) -> list[dict]:
    return [{"role": "user", "content": list(content)}]


def text(value: str) -> dict:
    return {"type": "text", "text": value}


def test_single_image_url_is_answered_natively_without_a_caption(stack, client, images_server):
    response = client.chat.completions.create(
        model=NATIVE,
        max_tokens=8,
        temperature=0,
        messages=user(text("What's in this image?"), image_part(f"{images_server.base}/photo.jpg")),
    )
    assert response.model == NATIVE and response.choices[0].message.content
    assert "proxy_vision" not in (response.model_extra or {})  # nothing was captioned
    stack.gateway.wait_for_log(f"Processing multimodal request with 1 images (native: {NATIVE})")
    # The image went into the model's prompt as image tokens: more prompt than the text alone.
    alone = client.chat.completions.create(model=NATIVE, max_tokens=1, messages=user(text("What's in this image?")))
    assert response.usage.prompt_tokens > alone.usage.prompt_tokens + 4


def test_base64_data_url_with_detail_high(client):
    response = client.chat.completions.create(
        model=NATIVE,
        max_tokens=5,
        messages=user(text("Analyze this image:"), image_part(data_url(jpeg((90, 90, 90), (64, 64))), "high")),
    )
    assert response.usage.completion_tokens == 5 and "proxy_vision" not in (response.model_extra or {})


def test_multiple_images_each_count_in_the_prompt(client, images_server):
    one = client.chat.completions.create(
        model=NATIVE,
        max_tokens=2,
        messages=user(text("Compare these two images:"), image_part(f"{images_server.base}/image1.jpg", "high")),
    )
    two = client.chat.completions.create(
        model=NATIVE,
        max_tokens=2,
        messages=user(
            text("Compare these two images:"),
            image_part(f"{images_server.base}/image1.jpg", "high"),
            image_part(f"{images_server.base}/image2.jpg", "high"),
        ),
    )
    assert two.usage.prompt_tokens > one.usage.prompt_tokens + 4


def test_streaming_multimodal_response(client, images_server):
    stream = client.chat.completions.create(
        model=NATIVE,
        max_tokens=6,
        stream=True,
        messages=user(text("Describe this image:"), image_part(f"{images_server.base}/image.jpg")),
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "length"
    assert "".join(c.choices[0].delta.content or "" for c in chunks)
    assert not any((c.model_extra or {}).get("proxy_vision") for c in chunks)


def test_side_by_side_the_text_model_is_still_captioned_through_the_proxy(stack, client, images_server):
    messages = user(text("What's in this image?"), image_part(f"{images_server.base}/image2.jpg"))
    proxied = client.chat.completions.create(model=TEXT_MODEL, max_tokens=3, messages=messages)
    (told,) = proxied.model_extra["proxy_vision"]["images"]
    assert told["caption"] and (told["message"], told["index"]) == (0, 0)
    native = client.chat.completions.create(model=NATIVE, max_tokens=3, messages=messages)
    assert "proxy_vision" not in (native.model_extra or {}) and native.usage.completion_tokens == 3
    stack.gateway.wait_for_log(f"Image policy: {TEXT_MODEL}=proxy, {NATIVE}=native")


def test_bad_images_for_the_native_model_are_the_gateways_400s(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=NATIVE, max_tokens=3, messages=user(text("What is this?"), image_part("data:image/png;base64,@@@@"))
        )
    assert info.value.body["code"] == "invalid_image" and info.value.body["message"].startswith("Invalid image")
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=NATIVE,
            max_tokens=3,
            messages=user(text("What is this?"), image_part("http://169.254.169.254/latest/meta-data/")),
        )
    assert info.value.body["code"] == "image_url_not_accessible"


def test_text_only_chat_with_the_native_model(client):
    answer = client.chat.completions.create(model=NATIVE, max_tokens=3, messages=[{"role": "user", "content": "Hi"}])
    assert answer.usage.completion_tokens == 3
