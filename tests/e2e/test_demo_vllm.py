"""`BACKEND=vllm make demo`: `proxyvision serve` on configs/demo.vllm.models.yaml (the Makefile's command, on free
ports), the launcher starting the vLLM engines under .venv-vllm's python: the real SmolLM2 answers in words on vLLM,
an image reaches it through the proxy captioner (on vLLM too), the Qwen3 stand-in and the brief's Ministral-3
stand-in answer on vLLM; and a model vLLM cannot run here stops the stack with one line that says why."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.images import data_url, png
from tests.support.processes import REPO_ROOT, free_port
from tests.support.real_model import REAL_MODEL

pytestmark = [pytest.mark.e2e, pytest.mark.vllm]
DEMO_CONFIG = REPO_ROOT / "configs" / "demo.vllm.models.yaml"
CLI = Path(sys.executable).parent / "proxyvision"


def serve(config: Path, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [
            str(CLI),
            "serve",
            "--models-config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--engine-port-base",
            str(free_port()),
            "--device",
            "cpu",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture(scope="module")
def demo(tiny_models):
    from services.model_builder import build_all

    build_all(REPO_ROOT / "models" / "tiny", only={"qwen3", "smollm2", "vision"})
    port = free_port()
    proc = serve(DEMO_CONFIG, port)
    try:
        output: list[str] = []
        deadline = time.monotonic() + 400
        while "Ctrl-C stops everything" not in "".join(output):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(output)[-4000:]
            output.append(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(90) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def chat(base: str, model: str, content, **extra) -> dict:
    reply = httpx.post(
        f"{base}/v1/chat/completions",
        timeout=120,
        json={"model": model, "messages": [{"role": "user", "content": content}], **extra},
    )
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_each_model_runs_on_the_backend_the_file_names(demo):
    listing = {m["id"]: m for m in httpx.get(f"{demo}/v1/models").json()["data"]}
    assert {name: m["backend"] for name, m in listing.items()} == {
        REAL_MODEL: "vllm",
        "qwen3-0.6b": "vllm",
        "ministral-3-3b-reasoning": "vllm",
        "qwen2-vl-7b": "vllm",
    }
    assert all(m["state"] == "ready" for m in listing.values())


def test_the_real_model_answers_in_words_on_vllm(demo):
    answer = chat(demo, REAL_MODEL, "What is the capital of France?", temperature=0, max_tokens=20)
    assert "Paris" in answer["choices"][0]["message"]["content"]


def test_an_image_reaches_the_vllm_model_through_the_captioner(demo):
    url = data_url(png((200, 30, 30)))
    content = [{"type": "text", "text": "What is in this picture?"}, {"type": "image_url", "image_url": {"url": url}}]
    answer = chat(demo, REAL_MODEL, content, temperature=0, max_tokens=16)
    assert answer["choices"][0]["message"]["content"] and len(answer["proxy_vision"]["images"]) == 1


def test_the_reasoning_stand_in_and_the_brief_model_answer(demo):
    for model in ("qwen3-0.6b", "ministral-3-3b-reasoning"):
        answer = chat(demo, model, "Hello", temperature=0, max_tokens=12)
        assert answer["usage"]["completion_tokens"] > 0 and answer["choices"][0]["finish_reason"] in ("stop", "length")


def test_a_model_vllm_cannot_run_here_stops_the_stack_with_the_reason(tmp_path):
    """The brief's stand-in as it was before its heads grew to 32: 16-dim heads, which vLLM's CPU attention lacks
    (the check reads config.json, before any weight)."""
    checkpoint = tmp_path / "ministral-16-dim-heads"
    shutil.copytree(REPO_ROOT / "models" / "tiny" / "ministral-3-tiny", checkpoint)
    hf_config = json.loads((checkpoint / "config.json").read_text())
    hf_config["text_config"].update(head_dim=16, num_attention_heads=4, num_key_value_heads=2)
    (checkpoint / "config.json").write_text(json.dumps(hf_config))
    config = yaml.safe_load(DEMO_CONFIG.read_text())
    brief = next(m for m in config["models"] if m["name"] == "ministral-3-3b-reasoning")
    brief["local_path"] = str(checkpoint)
    config["models"], config["default_model"] = [brief], brief["name"]
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = serve(path, free_port())
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, output[-3000:]
    (line,) = [line for line in output.splitlines() if "model failed to load" in line and "proxyvision:" in line]
    assert "vLLM's CPU attention takes head sizes" in line and "serve it with backend: transformers" in line
