"""Whether the vision engine can describe images right now, watched in the background.

Text keeps being served whatever happens here. Every change is logged with the brief's words:
`Vision backend: Available` or `Vision backend: Unavailable (<reason>)`. A request with images while
unavailable gets 503 `Vision model unavailable: <reason>`.
"""

from __future__ import annotations

import asyncio
import logging

from services.common.errors import VisionUnavailableError

from ..clients.vision_engine import VisionEngineClient

log = logging.getLogger(__name__)

NOT_READY = "vision model not ready"  # the engine is up and says what its load is doing
FAILED = "vision model failed to load"


class VisionBackend:
    """Availability of the proxy vision engine (None when no vision model is configured)."""

    def __init__(self, client: VisionEngineClient | None, *, interval: float = 2.0, timeout: float = 2.0) -> None:
        self.client = client
        self._interval = interval
        self._timeout = timeout
        self.available: bool | None = None
        self._was_available = False
        self.reason = "no vision model configured" if client is None else "not checked yet"
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Check once now (and log), then keep watching."""
        if self.client is None:
            self._set(False, self.reason)
            return
        await self.refresh()
        self._task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        """Stop watching."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def refresh(self, *, wait_for_ready: bool = False) -> None:
        """Ask the engine's health service (`wait_for_ready`: as channels.check_health)."""
        if self.client is None:
            return
        status = await self.client.health(self._timeout, wait_for_ready=wait_for_ready)
        if status == "SERVING":
            self._set(True, "")
        elif status == "NOT_SERVING":
            self._set(False, await self._not_serving_reason())
        else:
            self._set(False, f"vision engine {status.lower()}")

    async def _not_serving_reason(self) -> str:
        """Why the engine is up but not serving: its own words when it says them (a failed load's error,
        what a load is doing), else the generic reason."""
        try:
            info = await self.client.model_info(self._timeout)
        except Exception:  # noqa: BLE001 - the health answer stands even if the engine cannot say more
            info = None
        if info is not None and info.error:
            return f"{FAILED}: {info.error}"
        if info is not None and info.status:
            return f"{NOT_READY}: {info.status}"
        return "vision engine not serving (model not loaded)"

    async def require(self) -> VisionEngineClient:
        """The client, or the 503 the brief describes. Re-checks first, waiting for the channel's next connection
        attempt: an engine that has just started (the launcher's banner, a restart) is served, not refused
        until the watcher's next look."""
        if not self.available and self.client is not None:
            await self.refresh(wait_for_ready=True)
        if not self.available or self.client is None:
            raise VisionUnavailableError(f"Vision model unavailable: {self.reason}")
        return self.client

    def mark_failed(self, reason: str) -> VisionUnavailableError:
        """A call failed as unavailable: record it now rather than at the next health check."""
        self._set(False, reason)
        return VisionUnavailableError(f"Vision model unavailable: {reason}")

    def _set(self, available: bool, reason: str) -> None:
        changed = available != self.available or (not available and reason != self.reason)
        # At start-up the vision engine may not listen yet or its model may still be loading (the launcher starts
        # every process at once, and importing torch takes longer than starting the gateway), or none is
        # configured (a text-only deployment): that is news, not a problem, so until vision has been available
        # once it is said at INFO. A failed load, or vision lost after it was available, is a warning.
        as_planned = not self._was_available and not reason.startswith(FAILED)
        self.available, self.reason = available, reason
        self._was_available = self._was_available or available
        if changed:
            if available:
                log.info("Vision backend: Available")
            elif as_planned and self.client is None:
                log.info("Vision backend: Unavailable (%s)", reason)
            elif as_planned:
                log.info("Vision backend: Unavailable (%s; images are described once it is ready)", reason)
            else:
                log.warning("Vision backend: Unavailable (%s)", reason)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.refresh()
            except Exception:  # noqa: BLE001 - the watcher must outlive any one failed check
                log.exception("vision health check failed")
