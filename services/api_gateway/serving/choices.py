"""The `n` engine calls of one request (one per choice), as one object: accepted together, read in the
order their events arrive, closed together.

Each call has at most one read in flight, so a slow client slows the engine calls down instead of piling
events up here. With one call (the common case) events are read directly, without a task per event.
"""

from __future__ import annotations

import asyncio
from collections import deque

from services.common.generation import Finished, GenerationEvent

from .engine_call import BackgroundRead, EngineCall


class ChoiceCalls(BackgroundRead):
    """Engine calls for choices 0..n-1, read by one coroutine; `next()` says which choice an event is for."""

    def __init__(self, calls: list[EngineCall]) -> None:
        self.calls = calls
        self._open = set(range(len(calls)))  # choices whose Finished has not been read yet
        self._reads: dict[asyncio.Future, int] = {}  # reads in flight -> their choice (n > 1)
        self._ready: deque[tuple[int, GenerationEvent]] = deque()  # events read together, not yet returned

    async def accept(self) -> None:
        """Wait until the engine admitted every call; the first refusal is raised (the others are then
        cancelled by `aclose()`)."""
        if len(self.calls) == 1:
            await self.calls[0].accept()
            return
        accepting = [asyncio.ensure_future(call.accept()) for call in self.calls]
        try:
            await asyncio.gather(*accepting)
        finally:  # on a refusal or a cancel: stop the other waits, so the calls can be closed
            for task in accepting:
                task.cancel()
            await asyncio.gather(*accepting, return_exceptions=True)

    async def next(self) -> tuple[int, GenerationEvent] | None:
        """The next output event and its choice index; None once every choice has finished. A failed call's
        error is raised here."""
        if not self._ready:
            if not self._open:
                return None
            if len(self.calls) == 1:
                self._ready.append((0, await self.calls[0].next()))
            else:
                await self._read_some()
        index, event = self._ready.popleft()
        if isinstance(event, Finished):
            self._open.discard(index)
        return index, event

    async def _read_some(self) -> None:
        for index in self._open - set(self._reads.values()):
            self._reads[self.calls[index].next_soon()] = index
        done, _ = await asyncio.wait(self._reads, return_when=asyncio.FIRST_COMPLETED)
        for read in sorted(done, key=self._reads.__getitem__):  # events that came together: in choice order
            index = self._reads.pop(read)
            self._ready.append((index, read.result()))

    async def aclose(self) -> None:
        """Cancel every call (no-ops for those that finished)."""
        await self._cancel_read()
        for call in self.calls:
            await call.aclose()
