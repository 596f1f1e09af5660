"""What every generation route shares (Chat Completions, Responses, Anthropic Messages, legacy Completions): the
route body itself (`serve`), the client's own timeout, work cancelled when the client leaves, and how a streamed
answer is described in the OpenAPI document."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse

from services.common.errors import RequestCancelledError, ShuttingDownError

from ..serving.sse import EventStreamResponse

DISCONNECT_POLL_SECS = 0.5
T = TypeVar("T")


def stream_responses(description: str, event: dict[str, str], errors: dict) -> dict:
    """The `responses=` of a generation route: 200 as JSON or, with `stream: true`, a `text/event-stream` whose
    events `event` describes (field -> description; `data` always, `event` when the protocol names its events),
    and the route's documented errors."""
    required = ["data"] if event.get("event", "").startswith("Always the default") else sorted(event)
    schema = {
        "type": "object",
        "required": required,
        "properties": {name: {"type": "string", "description": text} for name, text in event.items()},
    }
    # Before OpenAPI 3.2 (FastAPI writes 3.1) a stream's `schema` describes one event, as a parsed SSE event.
    return {200: {"description": description, "content": {"text/event-stream": {"schema": schema}}}, **errors}


async def serve(request: Request, protocol, body, request_id: str, draining: bool):
    """A generation route's body: refuse while draining, plan (every refusal is still an HTTP status), then the
    stream once the engine accepted it, or the whole answer, either cancelled if the client leaves first. The
    answer is sent as built: it is already the protocol's shape, and re-validating it against the documentation
    model would drop what that model does not spell out."""
    if draining:
        raise ShuttingDownError("The server is shutting down; retry in a moment (another replica will answer)")
    plan = await protocol.plan(body, client_timeout(request))
    request.state.model = plan.entry.name  # for the request metrics
    if body.stream:
        # Until the engine accepts (it may queue the request), nothing is sent: watch the client meanwhile.
        return EventStreamResponse(await unless_disconnected(request, protocol.stream(plan, request_id)))
    return JSONResponse(await unless_disconnected(request, protocol.complete(plan, request_id)))


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
