"""A child's output, passed through to the launcher's stderr line by line and its last lines kept.

The tail is what the give-up message quotes: after a crash loop the reason (a traceback, "address
already in use") is usually in the last lines the child wrote, and it may have scrolled far up.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections import deque
from typing import BinaryIO

TAIL_LINES = 20


class OutputTail:
    """Reads one pipe on a daemon thread until EOF: every line to `sink`, the last `lines` kept."""

    def __init__(self, pipe: BinaryIO, *, sink: BinaryIO | None = None, lines: int = TAIL_LINES) -> None:
        self._pipe = pipe
        self._sink = sink
        self._tail: deque[bytes] = deque(maxlen=lines)
        self._lock = threading.Lock()  # the reader thread appends, the supervisor's thread reads
        self._thread = threading.Thread(target=self._pump, name="child-output", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        with self._pipe:
            for line in self._pipe:
                with self._lock:
                    self._tail.append(line)
                with contextlib.suppress(OSError, ValueError):  # our stderr closed (its reader left): keep the tail
                    self._write(line)

    def _write(self, line: bytes) -> None:
        if self._sink is not None:
            self._sink.write(line)
            self._sink.flush()
            return
        # Looked up per line: pytest swaps sys.stderr, and a text stream without a buffer has no bytes side.
        stream = sys.stderr
        buffer = getattr(stream, "buffer", None)
        if buffer is not None:
            buffer.write(line)
        else:
            stream.write(line.decode(errors="replace"))
        stream.flush()

    def text(self, timeout: float = 1.0) -> str:
        """The last lines, once the pipe is drained (bounded: a grandchild may still hold it open)."""
        self._thread.join(timeout)
        with self._lock:
            return b"".join(self._tail).decode(errors="replace").rstrip()
