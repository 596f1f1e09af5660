"""Start and stop the server contenders as child processes of the bench: our stack and `transformers serve`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from tests.support.processes import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]


def _spawn(argv: list[str], log_path: Path) -> subprocess.Popen:
    log = open(log_path, "wb")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"})  # fmt: skip
    log.close()
    return proc


def _wait_http(url: str, procs: list[subprocess.Popen], timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"a server exited early; see {log_path}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {timeout}s; see {log_path}")


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass(frozen=True)
class OurStack:
    """Where the gateway (OpenAI base URL) and the text engine (gRPC) of a running stack answer."""

    base_url: str
    engine_address: str


@contextmanager
def our_stack(model_dir: str, model_name: str, params: dict, work: Path, *, idle_unload_secs: int = 0):
    """Text engine + gateway as separate processes (as the launcher runs them). Yields an OurStack."""
    engine_port, gateway_port = free_port(), free_port()
    config = work / "bench.models.yaml"
    config.write_text(yaml.safe_dump({
        "models": [{"name": model_name, "local_path": model_dir, "params": params,
                    "endpoint": f"127.0.0.1:{engine_port}"}],
        "idle_unload_secs": idle_unload_secs,
    }))  # fmt: skip
    log_path = work / "stack.log"
    common = ["--models-config", str(config), "--log-level", "WARNING"]
    engine = _spawn([sys.executable, "-m", "services.text_engine", *common, "--model", model_name,
                     "--port", str(engine_port), "--device", "cpu"], work / "engine.log")  # fmt: skip
    gateway = _spawn([sys.executable, "-m", "services.api_gateway", *common, "--port", str(gateway_port)], log_path)
    try:
        _wait_http(f"http://127.0.0.1:{gateway_port}/ready", [engine, gateway], 300, work / "engine.log")
        yield OurStack(f"http://127.0.0.1:{gateway_port}/v1", f"127.0.0.1:{engine_port}")
    finally:
        _stop([gateway, engine])


@contextmanager
def transformers_serve(model_dir: str, block_size: int, num_blocks: int, max_batch_tokens: int, work: Path):
    """`transformers serve <dir> --continuous-batching` on the same checkpoint and cache size."""
    port = free_port()
    cli = Path(sys.executable).parent / "transformers"
    log_path = work / "transformers_serve.log"
    proc = _spawn([str(cli), "serve", model_dir, "--continuous-batching", "--cb-block-size", str(block_size),
                   "--cb-num-blocks", str(num_blocks), "--cb-max-batch-tokens", str(max_batch_tokens),
                   "--device", "cpu", "--dtype", "float32", "--port", str(port), "--host", "127.0.0.1"],
                  log_path)  # fmt: skip
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", [proc], 300, log_path)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        _stop([proc])


@contextmanager
def vision_stack(text_dir: str, vision_dir: str, text_name: str, vision_name: str, work: Path):
    """Tiny text engine + vision engine + gateway (fetching allowed from 127.0.0.1). Yields (base URL, vision address)."""
    text_port, vision_port, gateway_port = free_port(), free_port(), free_port()
    config = work / "vision.models.yaml"
    config.write_text(yaml.safe_dump({
        "models": [
            {"name": text_name, "local_path": text_dir, "endpoint": f"127.0.0.1:{text_port}",
             "params": {"mem": 8, "dtype": "f32", "max_num_seqs": 16}},
            {"name": vision_name, "local_path": vision_dir, "endpoint": f"127.0.0.1:{vision_port}",
             "params": {"mem": 256, "dtype": "f32", "max_num_seqs": 4}, "capabilities": {"vision_mode": "proxy"}},
        ],
        "idle_unload_secs": 0,
        "gateway": {"images": {"allow_private_networks": ["127.0.0.0/8"]}},
    }))  # fmt: skip
    common = ["--models-config", str(config), "--log-level", "WARNING"]
    procs = [
        _spawn([sys.executable, "-m", "services.text_engine", *common, "--model", text_name, "--port", str(text_port),
                "--device", "cpu"], work / "v-text.log"),
        _spawn([sys.executable, "-m", "services.vision_engine", *common, "--model", vision_name, "--port",
                str(vision_port), "--device", "cpu"], work / "v-vision.log"),
        _spawn([sys.executable, "-m", "services.api_gateway", *common, "--port", str(gateway_port)], work / "v-gateway.log"),
    ]  # fmt: skip
    try:
        _wait_http(f"http://127.0.0.1:{gateway_port}/ready", procs, 300, work / "v-gateway.log")
        yield f"http://127.0.0.1:{gateway_port}", f"127.0.0.1:{vision_port}"
    finally:
        _stop(procs)
