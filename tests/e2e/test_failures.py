"""Engine unreachable -> 503, deadline -> 504, an error after the first SSE byte -> an SSE error event.
The SDK raises the matching exception class for each; the gateway stays healthy throughout."""

from __future__ import annotations

import httpx
import openai
import pytest
import yaml

from tests.support.models_yaml import TEXT_MODEL, tiny
from tests.support.processes import free_port, start_service, wait_http
from tests.support.stack import make_stack

pytestmark = pytest.mark.e2e
HELLO = [{"role": "user", "content": "Hello, how are you?"}]
# Greedy decoding on the tiny model runs to max_tokens (measured: 3500 tokens, no end-of-sequence), so a
# long generation is guaranteed to outlive the 0.5 s deadline; sampling could stop early by chance.


@pytest.fixture(scope="module")
def slow_stack(tiny_models, tmp_path_factory):
    """A gateway whose engine deadline (0.5 s) is shorter than a long generation."""
    s = make_stack(
        tmp_path_factory.mktemp("deadline"), tiny_models, vision=False, gateway_extra={"request_timeout_secs": 0.5}
    )
    yield s
    s.stop()


@pytest.fixture(scope="module")
def orphan_gateway(tiny_models, tmp_path_factory):
    """A gateway whose text engine endpoint has nothing listening."""
    tmp = tmp_path_factory.mktemp("no_engine")
    config = tiny(tiny_models, endpoints={TEXT_MODEL: f"127.0.0.1:{free_port()}"}).write(tmp / "models.yaml")
    port = free_port()
    gateway = start_service("services.api_gateway", ["--models-config", str(config), "--port", str(port)], port, tmp)
    wait_http(f"http://127.0.0.1:{port}/health", gateway)
    yield f"http://127.0.0.1:{port}"
    gateway.stop()


def test_engine_unreachable_is_503(orphan_gateway):
    client = openai.OpenAI(base_url=f"{orphan_gateway}/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model=TEXT_MODEL, messages=HELLO, max_tokens=5)
    assert info.value.status_code == 503 and info.value.body["code"] == "engine_unavailable"
    with pytest.raises(openai.InternalServerError):
        list(client.chat.completions.create(model=TEXT_MODEL, messages=HELLO, max_tokens=5, stream=True))
    ready = httpx.get(f"{orphan_gateway}/ready")
    assert ready.status_code == 503 and ready.json()["engines"][TEXT_MODEL].startswith("UNREACHABLE")
    assert httpx.get(f"{orphan_gateway}/health").status_code == 200


def test_deadline_is_504(slow_stack):
    client = slow_stack.client()
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model=TEXT_MODEL, messages=HELLO, max_tokens=3500, temperature=0)
    assert info.value.status_code == 504 and info.value.body["type"] == "timeout_error"


def test_error_after_first_byte_is_an_sse_error_event(slow_stack):
    client = slow_stack.client()
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in client.chat.completions.create(
            model=TEXT_MODEL, messages=HELLO, max_tokens=3500, temperature=0, stream=True
        ):
            received.append(chunk)
    assert received, "the stream had started before the deadline"
    assert "deadline" in str(info.value).lower() or "timeout" in str(info.value).lower()
    with httpx.stream(
        "POST",
        f"{slow_stack.base_url}/v1/chat/completions",
        timeout=30,
        json={"model": TEXT_MODEL, "messages": HELLO, "max_tokens": 3500, "temperature": 0, "stream": True},
    ) as reply:
        frames = [f for f in reply.read().decode().split("\n\n") if f]
    assert frames[-1] == "data: [DONE]" and '"error"' in frames[-2]
    assert httpx.get(f"{slow_stack.base_url}/health").status_code == 200


def test_bad_config_fails_at_start_naming_file_and_key(tmp_path):
    bad = tmp_path / "models.yaml"
    bad.write_text(yaml.safe_dump({"models": [{"name": "x", "hf_id": "y", "params": {"mem": "lots"}}]}))
    port = free_port()
    gateway = start_service("services.api_gateway", ["--models-config", str(bad), "--port", str(port)], port, tmp_path)
    assert gateway.proc.wait(30) == 2
    assert f"{bad}: models[0].params.mem:" in gateway.log_text()
