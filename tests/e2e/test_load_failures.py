"""`proxyvision serve` with a model that cannot load: the launcher says so within seconds, with the
engine's reason, instead of waiting out --ready-timeout.

- a broken text checkpoint (a config but no weights) stops the stack: exit 1, reason in the output;
- a hub id that cannot be fetched (no network, not cached) stops it within seconds, in one line naming the
  fixes, and one that is in the hub cache loads from it with the hub unreachable;
- a corrupt vision checkpoint (garbage safetensors: an exception type the loader does not expect) leaves
  text served: the banner and /ready say why vision is unavailable, and image requests get a clear 503.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from tests.support.images import data_url, png
from tests.support.launcher import Launcher
from tests.support.models_yaml import TEXT_MODEL, VISION_MODEL, ModelsYaml, tiny
from tests.support.processes import free_port, wait_until

pytestmark = pytest.mark.e2e
# The default: a launcher that waited for it would fail these tests by their own timeout.
READY = ("--ready-timeout", "600")


def without_weights(source: Path, dest: Path) -> Path:
    """The checkpoint's config, tokenizer and template, but no model.safetensors."""
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("*.safetensors"))
    return dest


def with_corrupt_weights(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest)
    (dest / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json" + b"\x00" * 64)
    return dest


def test_a_text_model_that_fails_to_load_stops_the_stack_within_seconds_with_the_reason(tiny_models, tmp_path):
    broken = without_weights(tiny_models["text"], tmp_path / "no-weights")
    config = tiny({**tiny_models, "text": broken}).write(tmp_path / "models.yaml")
    launcher = Launcher(config, free_port(), *READY)
    try:
        failed_at = launcher.wait_for(f"Model {TEXT_MODEL} failed to load")  # the engine's own log line
        assert launcher.proc.wait(30) == 1
        stopped_at = launcher.wait_for("stopped")
    finally:
        launcher.stop()
    output = launcher.output
    # The launcher's own line names the engine and carries the engine's reason (from GetModelInfo).
    reason = f"text_engine[{TEXT_MODEL}]: model failed to load: cannot load weights from '{broken}'"
    assert reason in output and "model.safetensors" in output.split(reason, 1)[1].splitlines()[0]
    assert stopped_at - failed_at < 10  # a probe round and a stop, not the 600 s ready timeout
    assert "ProxyVision is ready" not in output and "Traceback" not in output


def test_a_vision_model_that_fails_to_load_leaves_text_served_and_says_why(tiny_models, tmp_path):
    corrupt = with_corrupt_weights(tiny_models["vision"], tmp_path / "corrupt")
    config = tiny({**tiny_models, "vision": corrupt}, vision=True).write(tmp_path / "models.yaml")
    port = free_port()
    launcher = Launcher(config, port, *READY)
    try:
        launcher.wait_for("Ctrl-C stops everything")
        output = launcher.output
        # An exception the loader does not translate is still one clear line (with a traceback for the bug report).
        assert f"vision_engine[{VISION_MODEL}]: model failed to load: " in output
        banner_line = next(line for _, line in launcher.lines if line.startswith("  vision "))
        assert f"UNAVAILABLE: {VISION_MODEL} failed to load (" in banner_line and "text only" in banner_line
        base = f"http://127.0.0.1:{port}"
        # The gateway's channel to the vision engine may still be in its reconnect backoff (up to 10 s).
        wait_until(
            lambda: httpx.get(f"{base}/ready", timeout=10).json()["engines"][VISION_MODEL] == "NOT_SERVING",
            timeout=30,
            message="the gateway to reach the vision engine",
        )
        ready = httpx.get(f"{base}/ready", timeout=10)
        assert ready.status_code == 200
        detail = ready.json()["models"][VISION_MODEL]
        assert detail["state"] == "failed" and detail["error"] and detail["error"] in banner_line
        chat = httpx.post(
            f"{base}/v1/chat/completions",
            timeout=60,
            json={"model": TEXT_MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "Hello"}]},
        )
        assert chat.status_code == 200
        image = httpx.post(
            f"{base}/v1/chat/completions",
            timeout=60,
            json={
                "model": TEXT_MODEL,
                "max_tokens": 5,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "What is this?"},
                            {
                                "type": "image_url",
                                "image_url": {"url": data_url(png())},
                            },
                        ],
                    }
                ],
            },
        )
        assert image.status_code == 503 and "Vision model unavailable" in image.json()["error"]["message"]
    finally:
        launcher.stop()
    assert launcher.proc.returncode == 0


HUB_ID = "proxyvision-test/tiny-text"


def offline_hub(tmp_path: Path) -> dict[str, str]:
    """An empty hub cache and a hub endpoint nothing listens on: what an engine without network access sees."""
    return {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"}


def test_a_hub_id_that_cannot_be_fetched_stops_the_stack_in_one_line_naming_the_fixes(tmp_path):
    config = ModelsYaml().text(hf_id=HUB_ID).write(tmp_path / "models.yaml")
    launcher = Launcher(config, free_port(), *READY, env=offline_hub(tmp_path))
    try:
        building_at = launcher.wait_for("Building InferenceEngine")
        failed_at = launcher.wait_for(f"Model {TEXT_MODEL} failed to load")
        assert launcher.proc.wait(30) == 1
    finally:
        launcher.stop()
    output = launcher.output
    line = next(line for _, line in launcher.lines if f"Model {TEXT_MODEL} failed to load" in line)
    assert f"hf_id {HUB_ID}: cannot reach the hub at http://127.0.0.1:" in line
    assert all(fix in line for fix in ("HF_ENDPOINT", "HF_HUB_OFFLINE=1", "local_path")), line
    # No retry ladder: the load fails as soon as the one probe does (it used to take ~55 s and ~70 lines).
    assert failed_at - building_at < 20
    assert "Retrying" not in output and "Traceback" not in output, output[-4000:]


def test_a_hub_id_in_the_hub_cache_loads_from_it_when_the_hub_cannot_be_reached(tiny_models, tmp_path):
    env = offline_hub(tmp_path)
    # The stand-in, laid out as huggingface_hub caches a download of HUB_ID.
    repo = Path(env["HF_HOME"]) / "hub" / f"models--{HUB_ID.replace('/', '--')}"
    shutil.copytree(tiny_models["text"], repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    config = ModelsYaml().text(hf_id=HUB_ID).write(tmp_path / "models.yaml")
    port = free_port()
    launcher = Launcher(config, port, *READY, env=env)
    try:
        launcher.wait_for("Ctrl-C stops everything")
        chat = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            timeout=60,
            json={"model": TEXT_MODEL, "max_tokens": 3, "messages": [{"role": "user", "content": "Hello"}]},
        )
        assert chat.status_code == 200, chat.text
    finally:
        launcher.stop()
    assert f"loading {HUB_ID} from the hub cache" in launcher.output
    assert "Retrying" not in launcher.output
