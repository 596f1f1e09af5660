"""What every generation route shares (Chat Completions, Responses, Anthropic Messages, legacy Completions): the
route body itself (`serve`), the client's own timeout, work cancelled when the client leaves, and how a streamed
answer is described in the OpenAPI document."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from services.common.errors import RequestCancelledError, ShuttingDownError

from ..dependencies import get_state, request_id
from ..openapi import error_responses
from ..serving.sse import EventStreamResponse
from ..state import GatewayState

DISCONNECT_POLL_SECS = 0.5
T = TypeVar("T")


def stream_responses(description: str, data: str, *, events: str = "", errors: dict | None = None) -> dict:
    """The `responses=` of a generation route: 200 as JSON or, with `stream: true`, a `text/event-stream` whose
    events carry `data` and, when the protocol names its events, `events` (else every event is SSE's default
    `message`); and the route's documented errors (by default the OpenAI routes' set)."""
    if events:
        fields, required = {"event": events, "data": data}, ["data", "event"]
    else:
        fields, required = {"data": data, "event": "Always the default, `message`"}, ["data"]
    schema = {
        "type": "object",
        "required": required,
        "properties": {name: {"type": "string", "description": text} for name, text in fields.items()},
    }
    if errors is None:
        errors = error_responses(400, 404, 413, 500, 503, 504)
    # Before OpenAPI 3.2 (FastAPI writes 3.1) a stream's `schema` describes one event, as a parsed SSE event.
    return {200: {"description": description, "content": {"text/event-stream": {"schema": schema}}}, **errors}


class Generation:
    """What a generation route needs besides its body (`generation: Generation = Depends()`): the request, the
    gateway's state and the request id; `serve` is the route's whole body."""

    def __init__(
        self, request: Request, state: GatewayState = Depends(get_state), rid: str = Depends(request_id)
    ) -> None:
        self.request = request
        self.state = state
        self.request_id = rid

    async def serve(self, protocol, body):
        """Refuse while draining, plan (every refusal is still an HTTP status), then the stream once the engine
        accepted it, or the whole answer, either cancelled if the client leaves first. The answer is sent as
        built: it is already the protocol's shape, and re-validating it against the documentation model would
        drop what that model does not spell out."""
        request = self.request
        if self.state.drain.draining:
            raise ShuttingDownError("The server is shutting down; retry in a moment (another replica will answer)")
        plan = await protocol.plan(body, client_timeout(request))
        request.state.model = plan.entry.name  # for the request metrics
        if body.stream:
            # Until the engine accepts (it may queue the request), nothing is sent: watch the client meanwhile.
            return EventStreamResponse(await unless_disconnected(request, protocol.stream(plan, self.request_id)))
        return JSONResponse(await unless_disconnected(request, protocol.complete(plan, self.request_id)))


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
