"""A real redis-server for tests: on a free loopback port, nothing persisted, stopped (and restartable on the
same port) by the test.

    server = RedisServer.start(tmp_path)           # waits for PING
    server.url                                     # redis://127.0.0.1:<port>/0
    server.stop(); server = server.restart()       # the same port again, empty
    server.pause(); server.resume()                # SIGSTOP/SIGCONT: a server that accepts and never answers

`password=` starts it with `--requirepass`. The server binary is Debian's /usr/bin/redis-server (or
REDIS_SERVER); tests that need one fail (not skip) when it is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import ServiceProcess, free_port, start_process, wait_until

STARTUP_TIMEOUT_SECS = 10.0


def redis_server_binary() -> str:
    """The redis-server to run: $REDIS_SERVER, else the one on PATH."""
    binary = os.environ.get("REDIS_SERVER") or shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        raise AssertionError(f"redis-server not found ({binary}); the shared caption cache's tests need it")
    return binary


def _ping(port: int, password: str | None, timeout: float = 0.5) -> bool:
    """One PING in the RESP protocol over a raw socket (no client library: this checks the server, not redis-py).
    With a password, AUTH first; True on +PONG."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            if password is not None:
                sock.sendall(f"*2\r\n$4\r\nAUTH\r\n${len(password)}\r\n{password}\r\n".encode())
                if not sock.recv(64).startswith(b"+OK"):
                    return False
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """One redis-server process."""

    service: ServiceProcess
    workdir: Path
    password: str | None = None

    @classmethod
    def start(cls, workdir: Path, *, port: int | None = None, password: str | None = None) -> RedisServer:
        """Start one on `port` (a free one unless given) and wait until it answers PING."""
        port = port or free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ]
        if password is not None:
            argv += ["--requirepass", password]
        service = start_process("redis-server", argv, port, workdir / f"redis-{port}.log")
        try:
            wait_until(
                lambda: _ping(port, password),
                STARTUP_TIMEOUT_SECS,
                f"redis-server on port {port} answering PING",
                interval=0.05,
                watch=[service],
            )
        except AssertionError:
            service.stop()
            raise
        return cls(service, workdir, password)

    @property
    def port(self) -> int:
        return self.service.port

    @property
    def url(self) -> str:
        """redis://[:password@]127.0.0.1:port/0."""
        auth = f":{self.password}@" if self.password is not None else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.service.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM (SIGCONT first, in case it is paused) and wait."""
        if self.running:
            self.service.proc.send_signal(signal.SIGCONT)
        self.service.stop(timeout=10)

    def kill(self) -> None:
        """SIGKILL: the server goes away at once, connections and all."""
        if self.running:
            self.service.proc.kill()
            self.service.proc.wait(10)

    def restart(self) -> RedisServer:
        """A new, empty server on the same port (and password)."""
        self.stop()
        return RedisServer.start(self.workdir, port=self.port, password=self.password)

    def pause(self) -> None:
        """SIGSTOP: the kernel still accepts connections, nothing answers (a hung or very slow server)."""
        self.service.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.service.proc.send_signal(signal.SIGCONT)
