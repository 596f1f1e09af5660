"""`proxyvision serve` in a subprocess, as a user starts it: its output read line by line as it arrives."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from .processes import REPO_ROOT, free_port, wait_until

READY_LINE = "Ctrl-C stops everything"  # the banner's last line: every model is loaded and the gateway serves


class Launcher:
    """`proxyvision serve --models-config CONFIG --port PORT --engine-port-base <free> --device cpu EXTRA...`,
    with the time each output line arrived; `env` adds to the environment."""

    def __init__(self, config: Path, port: int, *extra: str, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.engine_port_base = free_port()
        cli = Path(sys.executable).parent / "proxyvision"
        args = ["serve", "--models-config", str(config), "--port", str(port)]
        args += ["--engine-port-base", str(self.engine_port_base), "--device", "cpu", *extra]
        self.proc = subprocess.Popen(
            [str(cli), *args],
            cwd=REPO_ROOT,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line))

    @property
    def output(self) -> str:
        return "".join(line for _, line in self.lines)

    def wait_for(self, needle: str, timeout: float = 240.0) -> float:
        """When the first line containing `needle` arrived (fails with the output once the launcher has exited)."""

        def arrived() -> float | None:
            return next((at for at, line in list(self.lines) if needle in line), None)

        def over() -> bool:  # the launcher exited and all its output was read
            return self.proc.poll() is not None and not self._reader.is_alive()

        try:
            wait_until(lambda: arrived() is not None or over(), timeout, f"{needle!r} in the launcher's output")
        except AssertionError as exc:
            raise AssertionError(f"{exc}:\n{self.output[-6000:]}") from None
        at = arrived()
        assert at is not None, f"{needle!r} not in the launcher's output:\n{self.output[-6000:]}"
        return at

    def wait_ready(self, timeout: float = 240.0) -> str:
        """The output up to and including the banner."""
        self.wait_for(READY_LINE, timeout)
        return self.output

    def stop(self) -> None:
        """Terminate it if it still runs (a test that checks its exit signals it itself)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._reader.join(10)
