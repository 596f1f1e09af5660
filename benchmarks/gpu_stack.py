"""Processes of the GPU check: our stack under the real launcher, `transformers serve` on a device, and the GPU
memory each process holds.

Built on the test harness's process helpers (tests/support/processes.py), with the hub offline. Every
process started here is registered, so the check's last-resort watchdog can kill what is left."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psutil

from services.common.pb.proxyvision.v1 import (
    common_pb2,
    text_engine_pb2_grpc,
    vision_engine_pb2_grpc,
)
from tests.support.models_yaml import ModelsYaml
from tests.support.processes import ServiceProcess, free_port, grpc_serving, start_process, wait_http

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
TEXT_MODEL, VISION_MODEL = "ministral-3-3b", "qwen2-vl-7b"
STARTED: list[ServiceProcess] = []  # for the watchdog: every process this module started


def kill_started() -> None:
    """SIGKILL whatever is still running (the watchdog's last resort; the launcher's children die with it)."""
    for service in STARTED:
        with suppress(ProcessLookupError):
            if service.proc.poll() is None:
                service.proc.kill()


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_engine_port_base() -> int:
    """A base for `--engine-port-base`: base and base + 1 (text, vision engines) and their metrics ports (+1000)
    are free. Starts from a port the kernel handed out, so parallel runs rarely collide."""
    for _ in range(200):
        base = free_port()
        if base + 1001 < 65536 and all(_port_free(p) for p in (base, base + 1, base + 1000, base + 1001)):
            return base
    raise RuntimeError("no free block of engine ports found")


@dataclass
class LauncherStack:
    """`proxyvision serve` (python -m services.launcher) running a text and a vision engine and the gateway."""

    process: ServiceProcess
    engine_port_base: int
    base_url: str  # the gateway: http://127.0.0.1:PORT
    log_path: Path
    engines: dict[str, str] = field(default_factory=dict)  # "text" / "vision" -> gRPC address

    def engine_pids(self) -> dict[str, int]:
        """ "text" / "vision" -> pid of that engine process now (they change when the launcher restarts one)."""
        pids = {}
        with suppress(psutil.NoSuchProcess):
            for child in psutil.Process(self.process.proc.pid).children(recursive=True):
                with suppress(psutil.Error):
                    cmdline = " ".join(child.cmdline())
                    for kind in ("text", "vision"):
                        if f"services.{kind}_engine" in cmdline:
                            pids[kind] = child.pid
        return pids

    def model_info(self, kind: str) -> common_pb2.ModelInfo:
        stub_class = text_engine_pb2_grpc.TextEngineStub if kind == "text" else vision_engine_pb2_grpc.VisionEngineStub
        with grpc.insecure_channel(self.engines[kind]) as channel:
            return stub_class(channel).GetModelInfo(common_pb2.GetModelInfoRequest(), timeout=10)


def stack_config(
    text_dir: str, vision_dir: str, *, text_params: dict, vision_params: dict, idle_unload_secs: int
) -> ModelsYaml:
    """The brief's pair: the Ministral-3 text model (its images captioned) and the Qwen2-VL proxy."""
    return (
        ModelsYaml()
        .text(TEXT_MODEL, local_path=text_dir, tiny_defaults=False, params=text_params)
        .vision(VISION_MODEL, local_path=vision_dir, tiny_defaults=False, prompt_template=None, params=vision_params)
        .set(idle_unload_secs=idle_unload_secs)
        .gateway(images={"allow_private_networks": ["127.0.0.0/8"]})
    )


@contextmanager
def launcher_stack(config: ModelsYaml, device: str, work: Path, *, timeout: float):
    """Start the stack with the real launcher and wait until both engines are SERVING and /ready answers 200.
    Yields a LauncherStack; stops it (SIGTERM, the launcher drains and stops its children) on the way out."""
    path = config.write(work / "gpu-check.models.yaml")
    base, port = free_engine_port_base(), free_port()
    argv = [
        sys.executable,
        "-m",
        "services.launcher",
        "serve",
        "--models-config",
        str(path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--engine-port-base",
        str(base),
        "--device",
        device,
        "--log-level",
        "WARNING",
        "--drain-grace-secs",
        "5",
        "--ready-timeout",
        str(int(timeout)),
    ]
    log_path = work / "launcher.log"
    service = start_process("proxyvision serve", argv, port, log_path, OFFLINE)
    STARTED.append(service)
    stack = LauncherStack(
        service, base, service.url, log_path, {"text": f"127.0.0.1:{base}", "vision": f"127.0.0.1:{base + 1}"}
    )
    try:
        deadline = time.monotonic() + timeout
        wait_http(f"{service.url}/ready", service, timeout=timeout)
        for kind, address in stack.engines.items():
            _wait_serving(address, service, deadline, f"{kind} engine")
        yield stack
    finally:
        service.stop(timeout=30)


def _wait_serving(address: str, launcher: ServiceProcess, deadline: float, what: str) -> None:
    with grpc.insecure_channel(address) as channel:
        while not grpc_serving(channel):
            if launcher.proc.poll() is not None:
                raise AssertionError(f"the launcher exited {launcher.proc.returncode}:\n{launcher.log_text()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} at {address} not SERVING in time:\n{launcher.log_text()[-4000:]}")
            time.sleep(0.2)


@contextmanager
def transformers_serve(
    model_dir: str,
    *,
    device: str,
    dtype: str,
    block_size: int,
    num_blocks: int,
    max_batch_tokens: int,
    work: Path,
    timeout: float,
):
    """`transformers serve <dir> --continuous-batching` on `device` in `dtype` with the given paged cache.
    Yields (base URL of its OpenAI API, the process)."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "transformers.cli.transformers",
        "serve",
        model_dir,
        "--continuous-batching",
        "--cb-block-size",
        str(block_size),
        "--cb-num-blocks",
        str(num_blocks),
        "--cb-max-batch-tokens",
        str(max_batch_tokens),
        "--device",
        device,
        "--dtype",
        dtype,
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
    ]
    service = start_process("transformers serve", argv, port, work / "transformers_serve.log", OFFLINE)
    STARTED.append(service)
    try:
        wait_http(f"{service.url}/health", service, timeout=timeout)
        yield f"{service.url}/v1", service
    finally:
        service.stop(timeout=20)


# --- memory ---------------------------------------------------------------------------------------------------
def gpu_memory_by_pid() -> dict[int, int] | None:
    """pid -> MiB of GPU memory, from `nvidia-smi --query-compute-apps`; None without nvidia-smi. In a container
    whose PID namespace nvidia-smi cannot see into, the table is empty."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    done = subprocess.run(
        [smi, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    table = {}
    for line in done.stdout.splitlines():
        pid, _, mib = line.partition(",")
        with suppress(ValueError):
            table[int(pid)] = int(mib)
    return table


_DEVICE_USED = "import torch; free, total = torch.cuda.mem_get_info(); print((total - free) // 2**20)"


def device_memory_used_mib() -> int | None:
    """MiB in use on GPU 0 by everyone (torch.cuda.mem_get_info in a short child process, whose own context is
    counted too: compare against the baseline taken the same way before anything started)."""
    done = subprocess.run([sys.executable, "-c", _DEVICE_USED], capture_output=True, text=True, timeout=120)
    return int(done.stdout.strip()) if done.returncode == 0 and done.stdout.strip() else None


def rss_mib(pid: int) -> float | None:
    with suppress(psutil.Error):
        return psutil.Process(pid).memory_info().rss / 2**20
    return None
