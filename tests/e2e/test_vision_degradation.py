"""When vision is missing or dies, text keeps working; images get 503 "Vision model unavailable: <reason>";
a restarted vision engine is picked up without restarting the gateway."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.support.images import data_url, png
from tests.support.models_yaml import TEXT_MODEL, VISION_MODEL
from tests.support.processes import wait_grpc_serving, wait_until
from tests.support.stack import make_stack

pytestmark = pytest.mark.e2e
IMAGE = {"type": "image_url", "image_url": {"url": data_url(png())}}


def ask(client, with_image: bool):
    content = [{"type": "text", "text": "What is it?"}, IMAGE] if with_image else "Hello"
    return client.chat.completions.create(
        model=TEXT_MODEL, max_tokens=3, messages=[{"role": "user", "content": content}]
    )


def assert_vision_unavailable(client):
    with pytest.raises(openai.InternalServerError) as info:
        ask(client, with_image=True)
    assert info.value.status_code == 503
    assert info.value.body["code"] == "vision_unavailable"
    assert info.value.body["message"].startswith("Vision model unavailable: ")
    return info.value.body["message"]


def test_no_vision_model_configured(tiny_models, tmp_path):
    """Text is served; an image has no way to be seen (no proxy, no native model): a 400 that says so, not the
    503 of a vision engine that is down (retrying would not help)."""
    stack = make_stack(tmp_path, tiny_models, vision=False)
    try:
        client = stack.client()
        assert ask(client, with_image=False).usage.completion_tokens == 3
        with pytest.raises(openai.BadRequestError) as refused:
            ask(client, with_image=True)
        assert refused.value.code == "images_not_supported" and TEXT_MODEL in refused.value.message
        stack.gateway.wait_for_log("Vision backend: Unavailable (no vision model configured)")
    finally:
        stack.stop()


def test_vision_engine_absent_killed_and_restarted(tiny_models, tmp_path):
    stack = make_stack(tmp_path, tiny_models, vision=True, start_vision=False)
    try:
        client = stack.client()
        stack.gateway.wait_for_log("Vision backend: Unavailable (vision engine unreachable")
        assert ask(client, with_image=False).usage.completion_tokens == 3
        assert_vision_unavailable(client)
        # Text still works, so the gateway stays ready; /ready reports the vision engine as it is.
        ready = httpx.get(f"{stack.base_url}/ready")
        assert ready.status_code == 200 and ready.json()["engines"][VISION_MODEL].startswith("UNREACHABLE")

        stack.start_vision()  # comes up while the gateway runs
        wait_grpc_serving(stack.vision)
        wait_until(lambda: _vision_works(client), timeout=30, message="vision restored")
        stack.gateway.wait_for_log("Vision backend: Available")

        stack.vision.stop()  # dies while the gateway runs
        assert_vision_unavailable(client)
        assert ask(client, with_image=False).usage.completion_tokens == 3
        assert httpx.get(f"{stack.base_url}/health").status_code == 200

        stack.start_vision()  # and comes back: no gateway restart needed
        wait_grpc_serving(stack.vision)
        wait_until(lambda: _vision_works(client), timeout=30, message="vision restored after restart")
        assert stack.gateway.log_text().count("Vision backend: Available") >= 2
    finally:
        stack.stop()


def _vision_works(client) -> bool:
    try:
        return ask(client, with_image=True).usage.completion_tokens == 3
    except openai.InternalServerError:
        return False
