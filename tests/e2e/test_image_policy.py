"""A text model with no way to see images (vision_mode disabled, no proxy vision model configured): a request
with images is a 400 through the official SDK that names the model and says how to enable images; text is
served as usual. Real text engine and gateway processes, tiny model."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.support.images import data_url, png
from tests.support.models_yaml import TEXT_MODEL
from tests.support.stack import make_stack

pytestmark = pytest.mark.e2e
IMAGE = {"type": "image_url", "image_url": {"url": data_url(png())}}


@pytest.fixture(scope="module")
def stack(tiny_models, tmp_path_factory):
    s = make_stack(tmp_path_factory.mktemp("image_policy"), tiny_models, vision=False)
    yield s
    s.stop()


@pytest.mark.parametrize("stream", [False, True])
def test_images_for_a_model_that_cannot_see_them_are_a_400_that_says_how(stack, stream):
    client = stack.client()
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=TEXT_MODEL,
            max_tokens=3,
            stream=stream,
            messages=[{"role": "user", "content": [{"type": "text", "text": "What is it?"}, IMAGE]}],
        )
    body = info.value.body
    assert info.value.status_code == 400 and body["code"] == "images_not_supported" and body["param"] == "messages"
    assert body["message"].startswith(f"The model '{TEXT_MODEL}' cannot take images")
    assert "vision_mode 'proxy'" in body["message"] and "vision_mode 'native'" in body["message"]
    stack.gateway.wait_for_log(f"Image policy: {TEXT_MODEL}=refuse")


def test_text_is_still_served_and_the_gateway_stays_ready(stack):
    answer = stack.client().chat.completions.create(
        model=TEXT_MODEL, max_tokens=3, messages=[{"role": "user", "content": "Hello"}]
    )
    assert answer.usage.completion_tokens == 3 and "proxy_vision" not in (answer.model_extra or {})
    assert httpx.get(f"{stack.base_url}/ready").status_code == 200
