"""Run the gateway app under uvicorn with a graceful drain on SIGTERM / Ctrl-C.

uvicorn on its own stops listening at the first signal, so a Kubernetes Service would still send
connections that are refused, and it re-raises the signal at exit (status -15, not 0). Here the first
signal starts a drain instead: `/ready` and new chat requests answer 503 while running requests get
`grace` seconds to finish; streams still running after that are ended with an SSE error event (their
engine calls are cancelled); then uvicorn shuts down and the process exits 0. A second signal skips the
rest of the grace period.
"""

from __future__ import annotations

import asyncio
import logging
import time

import uvicorn
from fastapi import FastAPI

from .state import Drain

log = logging.getLogger(__name__)

POLL_SECS = 0.05
ABORT_FLUSH_SECS = 5.0  # for aborted streams to send their error event and [DONE]


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose exit signals drain the app first."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, drain: Drain, grace_secs: float) -> None:
        super().__init__(config)
        self._app = app
        self._drain = drain
        self._grace = grace_secs
        self._task: asyncio.Task | None = None
        self._hurry = False

    def handle_exit(self, sig, frame) -> None:  # runs in the signal handler, on the loop's thread
        if self._task is not None:
            self._hurry = True  # second signal: stop waiting
            return
        loop = asyncio.get_event_loop()
        loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run_drain())

    async def _run_drain(self) -> None:
        self._drain.draining = True
        log.info("Draining: %d request(s) in flight, grace %.0fs", self._drain.inflight, self._grace)
        if not await self._wait_idle(self._grace):
            state = getattr(self._app.state, "gateway", None)
            aborted = state.registry.abort_calls() if state is not None else 0
            log.warning(
                "Drain grace of %.0fs over: aborted %d engine call(s) of %d request(s)",
                self._grace,
                aborted,
                self._drain.inflight,
            )
            self._hurry = False
            await self._wait_idle(ABORT_FLUSH_SECS)
        log.info("Drained; shutting down")
        self.should_exit = True

    async def _wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._drain.inflight > 0 and time.monotonic() < deadline and not self._hurry:
            await asyncio.sleep(POLL_SECS)
        return self._drain.inflight == 0
