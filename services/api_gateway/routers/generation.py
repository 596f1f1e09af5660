"""What every generation route shares: the client's own timeout, and work cancelled when the client leaves."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

from services.common.errors import RequestCancelledError

DISCONNECT_POLL_SECS = 0.5
T = TypeVar("T")


def client_timeout(request: Request) -> float | None:
    """The timeout the official OpenAI SDKs announce (`X-Stainless-Timeout`, seconds), if any and sane."""
    try:
        value = float(request.headers.get("x-stainless-timeout", ""))
    except ValueError:
        return None
    return value if 0 < value < float("inf") else None


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Run `work`, cancelling it (and so the engine call) if the client goes away first.

    The 499 that follows is never read by anyone; it keeps the access log honest and spares the
    server a CancelledError traceback."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_SECS)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                (late,) = await asyncio.gather(task, return_exceptions=True)
                if hasattr(late, "aclose"):  # the stream was ready just as the client left
                    await late.aclose()
                raise RequestCancelledError("The client closed the connection")
    finally:
        if not task.done():
            task.cancel()
