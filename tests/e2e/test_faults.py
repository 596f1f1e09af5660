"""Faults under `proxyvision serve`: an engine killed mid-stream, an engine that hangs.

- kill -9 of the text or the vision engine while a stream runs: the client gets an SSE error event and
  `[DONE]` within 2 s (the issue's deadline); while the engine is down its requests are a 503 with
  `Retry-After` and the rest of the stack serves on; the launcher restarts the engine and it is served
  again, by the same gateway process.
- SIGSTOP of the text engine: requests end at the gateway's deadline (3 s here) with 504, not later;
  after SIGCONT the engine serves again.

To hold the "engine down" window open for as long as the test looks at it, the launcher itself is
paused (SIGSTOP) before the kill and resumed after: its children run on meanwhile, and on resuming it
sees the exit and restarts the engine after its backoff. Each test leaves the stack as it found it.
Timings are printed (`pytest -s`) for docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.images import data_url, png
from tests.support.models_yaml import TEXT_MODEL, tiny
from tests.support.processes import REPO_ROOT, free_port, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]
DEADLINE_SECS = 3.0  # the hung-engine requests' own deadline (the SDK's x-stainless-timeout; the stack allows 60 s)
STREAM_END_SECS = 2.0  # the bound: error event and [DONE] this soon after an engine dies
HELLO = [{"role": "user", "content": "Hello, how are you?"}]
# Greedy decoding on the tiny model runs to max_tokens: a stream long enough to be killed in the middle.
LONG_STREAM = {"model": TEXT_MODEL, "messages": HELLO, "max_tokens": 3500, "temperature": 0, "stream": True}


class Supervised:
    """`proxyvision serve` over the tiny models, and the pids of its children by service."""

    def __init__(self, tmp: Path, tiny_models) -> None:
        config = tiny(tiny_models, vision=True).gateway(request_timeout_secs=60).write(tmp / "models.yaml")
        self.port, base = free_port(), free_port()
        self.vision_port = base + 1
        self.log_path = tmp / "launcher.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PROXYVISION_DRAIN_GRACE_SECS": "5"}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "proxyvision"),
                    "serve",
                    "--models-config",
                    str(config),
                    "--port",
                    str(self.port),
                    "--engine-port-base",
                    str(base),
                    "--device",
                    "cpu",
                ],
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        wait_until(
            lambda: "Ctrl-C stops everything" in self.log() or self.proc.poll() is not None,
            timeout=120,
            message="the ready banner",
        )
        assert self.proc.poll() is None, self.log()[-4000:]
        self.gateway_pid = self.pid("api_gateway")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pid(self, service: str) -> int:
        """The pid of the launcher's child running services.<service>."""
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True).stdout
        for pid in map(int, out.split()):
            try:
                if f"services.{service}" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                    return pid
            except FileNotFoundError:
                continue
        raise AssertionError(f"no {service} child running:\n{self.log()[-3000:]}")

    def post(self, body: dict, timeout: float = 30, headers: dict | None = None) -> httpx.Response:
        return httpx.post(f"{self.base_url}/v1/chat/completions", json=body, timeout=timeout, headers=headers)

    def stop(self) -> int:
        os.kill(self.proc.pid, signal.SIGCONT)  # in case a failing test left it paused
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


@pytest.fixture(scope="module")
def stack(tiny_models, tmp_path_factory):
    s = Supervised(tmp_path_factory.mktemp("faults"), tiny_models)
    yield s
    assert s.stop() == 0, s.log()[-3000:]


def image_request(seed: int, *, stream: bool) -> dict:
    """A request with an image of its own colour: never a caption-cache hit."""
    url = data_url(png(color=(seed % 256, 90, 160)))
    content = [{"type": "text", "text": "What is it?"}, {"type": "image_url", "image_url": {"url": url}}]
    return {"model": TEXT_MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 3, "stream": stream}


def data_frames(lines) -> Iterator:
    """The SSE data payloads of `lines` as they arrive, parsed (`[DONE]` as is)."""
    for line in lines:
        if line.startswith("data: "):
            yield line[6:] if line == "data: [DONE]" else json.loads(line[6:])


def kill_mid_stream(stream: httpx.Response, pid: int, started_when) -> tuple[list, float]:
    """Read `stream` until `started_when(frame)`, kill -9 `pid`, read to the end: (frames after the kill,
    seconds from the kill to the end of the stream)."""
    frames = data_frames(stream.iter_lines())
    for frame in frames:
        if started_when(frame):
            break
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    rest = list(frames)
    return rest, time.monotonic() - killed


def served(stack: Supervised, body: dict) -> bool:
    return stack.post(body).status_code == 200


def assert_503_with_retry_after(reply: httpx.Response, code: str) -> None:
    assert reply.status_code == 503, reply.text
    assert reply.json()["error"]["code"] == code
    assert reply.headers.get("Retry-After"), f"503 {code} without Retry-After"


def resume(stack: Supervised) -> float:
    """SIGCONT the launcher; when."""
    os.kill(stack.proc.pid, signal.SIGCONT)
    return time.monotonic()


def time_recovery(stack: Supervised, body: dict, service: str, old_pid: int, resumed: float) -> float:
    """Seconds from `resumed` until `body` is served again, by a new `service` process and the same gateway."""
    try:
        wait_until(lambda: served(stack, body), timeout=60, message=f"{service} served again")
    except AssertionError as failed:
        raise AssertionError(f"{failed}\n{stack.log()[-6000:]}") from None
    recovered = time.monotonic() - resumed
    assert stack.pid(service) != old_pid and stack.pid("api_gateway") == stack.gateway_pid
    assert f"{service}[" in stack.log() and "exited unexpectedly with killed by SIGKILL" in stack.log()
    return recovered


def test_text_engine_killed_mid_stream(stack):
    text_pid = stack.pid("text_engine")
    os.kill(stack.proc.pid, signal.SIGSTOP)  # the launcher holds the restart until we have looked
    try:
        with httpx.stream("POST", f"{stack.base_url}/v1/chat/completions", json=LONG_STREAM, timeout=30) as reply:
            assert reply.status_code == 200
            rest, ended = kill_mid_stream(
                reply, text_pid, lambda f: isinstance(f, dict) and f["choices"][0]["delta"].get("content")
            )
        print(f"\nFAULT-TIMING text: stream ended {ended:.3f}s after kill -9")
        assert rest[-1] == "[DONE]" and rest[-2]["error"]["code"] == "engine_unavailable", rest[-3:]
        assert ended < STREAM_END_SECS
        assert_503_with_retry_after(
            stack.post({"model": TEXT_MODEL, "messages": HELLO, "max_tokens": 3}), "engine_unavailable"
        )
        assert httpx.get(f"{stack.base_url}/ready").json()["engines"][TEXT_MODEL].startswith("UNREACHABLE")
    finally:
        resumed = resume(stack)
    recovered = time_recovery(
        stack, {"model": TEXT_MODEL, "messages": HELLO, "max_tokens": 3}, "text_engine", text_pid, resumed
    )
    print(f"FAULT-TIMING text: served again {recovered:.3f}s after the launcher resumed")


def bytes_unread_at(port: int) -> int:
    """Bytes that loopback connections to `port` have delivered and its process has not read yet (the kernel's
    receive queues, /proc/net/tcp and tcp6)."""
    unread = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                unread += int(fields[4].split(":")[1], 16)
    return unread


def test_vision_engine_killed_mid_stream(stack):
    vision_pid = stack.pid("vision_engine")
    # The gateway has seen the engine serve (a paused engine cannot answer its health check) ...
    first = stack.post(image_request(0, stream=False))
    assert first.status_code == 200, f"{first.text}\n{stack.log()[-4000:]}"
    os.kill(stack.proc.pid, signal.SIGSTOP)
    # ... and the engine is paused, so its caption cannot finish before the kill however short the stand-in's
    # caption turns out: the kill lands once the caption request is waiting at the engine's socket.
    os.kill(vision_pid, signal.SIGSTOP)
    try:
        with httpx.stream(
            "POST", f"{stack.base_url}/v1/chat/completions", json=image_request(1, stream=True), timeout=30
        ) as reply:
            assert reply.status_code == 200

            def captioning(frame) -> bool:  # the role chunk is out and the caption request is at the engine
                wait_until(lambda: bytes_unread_at(stack.vision_port) > 0, timeout=10, message="the caption request")
                return True

            rest, ended = kill_mid_stream(reply, vision_pid, captioning)
        print(f"\nFAULT-TIMING vision: stream ended {ended:.3f}s after kill -9")
        assert rest[-1] == "[DONE]" and rest[-2]["error"]["code"] == "vision_unavailable", rest[-3:]
        assert ended < STREAM_END_SECS
        assert_503_with_retry_after(stack.post(image_request(2, stream=False)), "vision_unavailable")
        assert served(stack, {"model": TEXT_MODEL, "messages": HELLO, "max_tokens": 3})  # text is unaffected
    finally:
        resumed = resume(stack)
    recovered = time_recovery(stack, image_request(3, stream=False), "vision_engine", vision_pid, resumed)
    print(f"FAULT-TIMING vision: served again {recovered:.3f}s after the launcher resumed")


def test_a_hung_text_engine_ends_requests_at_their_deadline(stack):
    text_pid = stack.pid("text_engine")
    os.kill(text_pid, signal.SIGSTOP)
    try:
        for stream in (False, True):  # a text stream starts only once the engine accepts: a plain 504 too
            started = time.monotonic()
            reply = stack.post(
                {"model": TEXT_MODEL, "messages": HELLO, "max_tokens": 3, "stream": stream},
                headers={"x-stainless-timeout": str(DEADLINE_SECS)},
            )  # the SDK's own timeout header
            elapsed = time.monotonic() - started
            print(f"\nFAULT-TIMING hung text (stream={stream}): 504 after {elapsed:.3f}s (deadline {DEADLINE_SECS}s)")
            assert reply.status_code == 504 and reply.json()["error"]["type"] == "timeout_error", reply.text
            assert DEADLINE_SECS <= elapsed < DEADLINE_SECS + STREAM_END_SECS  # at the deadline, not later
    finally:
        os.kill(text_pid, signal.SIGCONT)
    wait_until(
        lambda: served(stack, {"model": TEXT_MODEL, "messages": HELLO, "max_tokens": 3}),
        timeout=30,
        message="the resumed engine serving",
    )
    assert stack.pid("text_engine") == text_pid and stack.pid("api_gateway") == stack.gateway_pid
