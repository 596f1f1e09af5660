"""Processes for tests, suites and benchmarks: free ports, log files, readiness waits, clean stops.

The generic layer: any program (ours, `transformers serve`, llama.cpp's server). tests/support/stack.py
builds ProxyVision's engines, gateway and whole stacks on it."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port that was free a moment ago (the kernel picks it by binding port 0)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` different ports that were free a moment ago: every socket stays bound until all are picked, so the
    kernel cannot hand one port out twice (separate `free_port()` calls can: two services of one stack then race
    for one port, and the loser's address answers as the winner)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class ServiceProcess:
    """A service subprocess whose stderr/stdout go to a log file the test can read."""

    name: str
    proc: subprocess.Popen
    port: int
    log_path: Path
    metrics_port: int | None = None  # its Prometheus exporter, when started with one

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """http://address, for an HTTP service."""
        return f"http://{self.address}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 30.0) -> str:
        """Wait until `needle` appears in the log; return the log."""
        wait_until(lambda: needle in self.log_text(), timeout, f"{self.name}: {needle!r} in its log", watch=[self])
        return self.log_text()

    @property
    def exited(self) -> bool:
        """The process has ended (its exit status is in `proc.returncode`)."""
        return self.proc.poll() is not None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def start_process(
    name: str,
    argv: list[str],
    port: int,
    log_path: Path,
    env: dict | None = None,
    *,
    inherit_env: bool = True,
    new_session: bool = False,
) -> ServiceProcess:
    """Run `argv` from the repository root with stdout and stderr in `log_path`. `env` adds to os.environ, or with
    `inherit_env=False` is the whole environment (a container's, say); `new_session` gives it a process group."""
    if inherit_env:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env.pop("RUST_LOG", None)
    else:
        full_env = dict(env or {})
    log_file = open(log_path, "wb")  # noqa: SIM115 - owned by the child for its lifetime
    proc = subprocess.Popen(
        argv, cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT, env=full_env, start_new_session=new_session
    )
    log_file.close()
    return ServiceProcess(name, proc, port, log_path)


def start_service(
    module: str, args: list[str], port: int, log_dir: Path, env: dict | None = None, *, python: str | None = None
) -> ServiceProcess:
    """`python -m module args...` with output in log_dir/<module>-<port>.log; `python`: another interpreter than
    the tests' (the vLLM backend's venv)."""
    log_path = log_dir / f"{module.rsplit('.', 1)[-1]}-{port}.log"
    # A short drain grace: stopping a test's service must not wait the production default of 30 s.
    env = {"PROXYVISION_DRAIN_GRACE_SECS": "5", **(env or {})}
    return start_process(module, [python or sys.executable, "-m", module, *args], port, log_path, env)


def engine_python(backend: str) -> str:
    """The interpreter an engine of `backend` runs under, as the launcher picks it (services/common/backends.py):
    the tests' own for transformers; for vllm the one `make install-vllm` built (a clear error without it)."""
    from services.common.backends import vllm_python

    return vllm_python() if backend == "vllm" else sys.executable


def stop_all(services: list[ServiceProcess], timeout: float = 20.0) -> None:
    """SIGTERM every one at once, then wait for each (SIGKILL after `timeout`): a bench's quick teardown."""
    for service in services:
        if service.proc.poll() is None:
            service.proc.send_signal(signal.SIGTERM)
    for service in services:
        service.stop(timeout)


def grpc_serving(channel: grpc.Channel, service_name: str = "", timeout: float = 1.0) -> bool:
    """One grpc.health.v1 Check: True if SERVING (False if not, or if nothing answers)."""
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service_name), timeout=timeout
        )
    except grpc.RpcError:
        return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def wait_grpc_serving(service: ServiceProcess, timeout: float = 120.0, service_name: str = "") -> None:
    """Poll grpc.health.v1 until SERVING (the engine has loaded its model)."""
    with grpc.insecure_channel(service.address) as channel:
        wait_until(
            lambda: grpc_serving(channel, service_name),
            timeout,
            f"{service.name} SERVING",
            interval=0.2,
            watch=[service],
        )


def wait_http(url: str, *services: ServiceProcess, timeout: float = 60.0, status: int = 200) -> None:
    """Poll GET `url` until it answers `status`; fail with the log of the first of `services` to exit."""

    def answers() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == status
        except httpx.HTTPError:
            return False

    wait_until(answers, timeout, f"{url} answering {status}", watch=services)


def _not_reached(message: str, timeout: float, watch: Sequence[ServiceProcess]) -> AssertionError:
    logs = "".join(f"\n--- {s.name}:\n{s.log_text()[-3000:]}" for s in watch)
    return AssertionError(f"{message} not reached in {timeout}s{logs}")


def _exited(message: str, watch: Sequence[ServiceProcess]) -> AssertionError | None:
    for service in watch:
        if service.exited:
            log = service.log_text()[-4000:]
            return AssertionError(f"{message}: {service.name} exited {service.proc.returncode}:\n{log}")
    return None


def wait_until(
    predicate: Callable[[], object],
    timeout: float = 30.0,
    message: str = "condition",
    *,
    interval: float = 0.1,
    watch: Sequence[ServiceProcess] = (),
) -> None:
    """Poll `predicate` until it is true: the one readiness poll of the tests (not a sleep standing in for
    synchronisation). Fails after `timeout`, or at once when one of the `watch` processes has exited (a process
    that died will never get there), with their logs."""
    deadline = time.monotonic() + timeout
    while True:
        exited = _exited(message, watch)  # before the check: a process may write its last line and exit
        if predicate():
            return
        if exited is not None:
            raise exited
        if time.monotonic() > deadline:
            raise _not_reached(message, timeout, watch)
        time.sleep(interval)


async def wait_until_async(
    predicate: Callable[[], object], timeout: float = 30.0, message: str = "condition", *, interval: float = 0.02
) -> None:
    """wait_until for a test running in an event loop: polls without blocking it. `predicate` may return an
    awaitable (a coroutine function asking a server, say)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise _not_reached(message, timeout, ())
        await asyncio.sleep(interval)
