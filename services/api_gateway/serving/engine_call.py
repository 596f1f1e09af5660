"""One Generate call of the gateway, as one object: acceptance, output events, and closing.

The engine's stream is `Accepted`, then reasoning/answer deltas, then `Finished`. `EngineCall` hides the
acceptance (an engine that predates `Accepted` sends its first delta instead: that is an acceptance too)
and owns the one subtle part of cancelling: a task may be waiting on the next event (so the caller can send
keep-alives meanwhile), and the generator cannot be closed while that task runs it, so `aclose()` cancels
the task first. Closing the call cancels the gRPC call, and the engine frees the request's slot.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from services.common.errors import InternalError
from services.common.generation import Accepted, GenerationEvent


class BackgroundRead:
    """`next_soon()`: the next event read in a task, so the caller can send keep-alives meanwhile; `aclose()`
    of a subclass calls `_cancel_read()` first so no read outlives the call."""

    _pending: asyncio.Future | None = None

    async def next(self):
        raise NotImplementedError

    def next_soon(self) -> asyncio.Future:
        """`next()` in a task, so the caller can do other work (keep-alives) until it is done."""
        self._pending = asyncio.ensure_future(self.next())
        return self._pending

    async def _cancel_read(self) -> None:
        if self._pending is not None and not self._pending.done():
            self._pending.cancel()
            await asyncio.gather(self._pending, return_exceptions=True)


class EngineCall(BackgroundRead):
    """The events of one engine call, read in order by one coroutine."""

    def __init__(self, events: AsyncGenerator[GenerationEvent, None]) -> None:
        self._events = events
        self._head: GenerationEvent | None = None  # an event read while waiting for acceptance
        self.prompt_tokens: int | None = None  # the templated prompt's tokens, once the engine accepted the call

    async def accept(self) -> None:
        """Wait until the engine admitted the request; its refusal (a 4xx/503 error) is raised here."""
        first = await self._read()
        if isinstance(first, Accepted):
            self.prompt_tokens = first.prompt_tokens
        else:
            self._head = first

    async def next(self) -> GenerationEvent:
        """The next output event (deltas, then the Finished); acceptances are skipped."""
        if self._head is not None:
            event, self._head = self._head, None
            return event
        event = await self._read()
        while isinstance(event, Accepted):
            event = await self._read()
        return event

    async def _read(self) -> GenerationEvent:
        try:
            return await anext(self._events)
        except StopAsyncIteration:
            raise ended_without_finish() from None

    async def aclose(self) -> None:
        """Cancel the call (a no-op once it finished)."""
        await self._cancel_read()
        await self._events.aclose()


def ended_without_finish() -> InternalError:
    """The error for an engine stream that ended before its Finished event."""
    return InternalError("The engine ended the stream without finishing")
