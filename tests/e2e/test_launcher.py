"""`proxyvision serve` with the demo config: the banner, the brief's curl, and Ctrl-C leaves no process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.chat_streams import finish_reasons, start_streams
from tests.support.images import data_url, png
from tests.support.launcher import Launcher
from tests.support.metrics import scrape
from tests.support.models_yaml import BENCH_MODEL as BENCH, TEXT_MODEL, bench, tiny
from tests.support.processes import free_port, wait_until

pytestmark = pytest.mark.e2e


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_serve_prints_banner_serves_and_stops_cleanly(tiny_models, tmp_path):
    config = tiny(tiny_models, vision=True).write(tmp_path / "models.yaml")
    launcher = Launcher(config, port := free_port(), "--ui-server")
    proc = launcher.proc
    try:
        banner = launcher.wait_ready(120)
        assert f"base_url : http://127.0.0.1:{port}/v1" in banner and "Building InferenceEngine" in banner
        children = children_of(proc.pid)
        assert len(children) == 3  # text engine, vision engine, gateway
        # Ready means vision too: the gateway's channel to the vision engine, in reconnect backoff since the
        # engine was not listening yet when the gateway started, is waited for, not answered with a 503.
        image = data_url(png(color=(40, 200, 90)))
        content = [{"type": "text", "text": "What is it?"}, {"type": "image_url", "image_url": {"url": image}}]
        reply = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            timeout=60,
            json={"model": TEXT_MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 3},
        )
        assert reply.status_code == 200, reply.text
        assert len(reply.json()["proxy_vision"]["images"]) == 1
        reply = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            timeout=60,
            json={
                "model": TEXT_MODEL,
                "messages": [{"role": "user", "content": "Hello, how are you?"}],
                "max_tokens": 100,
            },
        )
        assert reply.status_code == 200
        assert "<title>ProxyVision</title>" in httpx.get(f"http://127.0.0.1:{port}/").text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        for pid in children:
            assert not os.path.exists(f"/proc/{pid}") or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    finally:
        launcher.stop()


def test_busy_port_fails_fast(tiny_models, tmp_path):
    import socket

    config = tiny(tiny_models).write(tmp_path / "models.yaml")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        cli = Path(sys.executable).parent / "proxyvision"
        result = subprocess.run(
            [str(cli), "--models-config", str(config), "--port", str(port), "--engine-port-base", str(free_port())],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1 and f"port(s) already in use: {port}" in result.stderr
    assert yaml.safe_load(config.read_text())["models"][0]["name"] == TEXT_MODEL


def test_sigterm_to_the_launcher_drains_running_streams_and_exits_0(bench_model, tmp_path):

    config = bench(bench_model, params={"max_num_seqs": 2}).write(tmp_path / "models.yaml")
    launcher = Launcher(config, port := free_port(), "--drain-grace-secs", "60")
    proc, base = launcher.proc, launcher.engine_port_base
    try:
        output = launcher.wait_ready()
        metrics_url = f"http://127.0.0.1:{base + 1000}/metrics"
        assert metrics_url in output  # the banner says where each engine's metrics are
        threads, results = start_streams(f"http://127.0.0.1:{port}", BENCH, 2, max_tokens=64)
        wait_until(
            lambda: scrape(metrics_url).value("proxyvision_requests_running", model=BENCH) == 2,
            timeout=30,
            message="2 streams running",
        )
        proc.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(60)
        for events in results.values():
            assert finish_reasons(events) == ["length"] and events[-1] == "[DONE]"
        assert proc.wait(60) == 0
    finally:
        launcher.stop()


def test_serve_with_keys_protecting_health_still_gets_ready(tiny_models, tmp_path):
    """With `api_keys_protect_health` the gateway's /ready needs a key: the launcher's own readiness probe sends
    the key file's first key, so the stack comes up (it used to wait for --ready-timeout and fail)."""
    config = tiny(tiny_models).write(tmp_path / "models.yaml")
    data = yaml.safe_load(config.read_text())
    (tmp_path / "keys.txt").write_text("# rotated monthly\nsk-launcher-probe-1\nsk-other-2\n")
    data["gateway"] = {**data.get("gateway", {}), "api_keys_file": "keys.txt", "api_keys_protect_health": True}
    config.write_text(yaml.safe_dump(data))
    launcher = Launcher(config, port := free_port(), "--ready-timeout", "90")
    proc = launcher.proc
    try:
        output = launcher.wait_ready(120)
        assert "sk-launcher-probe-1" not in output  # the probe's key is never printed
        assert httpx.get(f"http://127.0.0.1:{port}/ready", timeout=10).status_code == 401
        ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=10, headers={"Authorization": "Bearer sk-other-2"})
        assert ready.status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        launcher.stop()
