"""POST /v1/messages and /v1/messages/count_tokens: parse, delegate to the Anthropic Messages protocol
(serving/protocols/anthropic.py), choose the response type. Errors on these paths are Anthropic's (errors.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from services.common.errors import ShuttingDownError

from ..dependencies import get_state, request_id
from ..openapi import anthropic_error_responses
from ..schemas.anthropic import AnthropicMessage, CountTokensRequest, CountTokensResponse, MessagesRequest
from ..serving.sse import EventStreamResponse
from ..state import GatewayState
from .generation import client_timeout, unless_disconnected

router = APIRouter(tags=["anthropic"])

_SSE_EVENT = {
    "type": "object", "required": ["event", "data"],
    "properties": {"event": {"type": "string", "description": "message_start, content_block_start, "
                                                             "content_block_delta, content_block_stop, message_delta, "
                                                             "message_stop, ping; after the first byte, error"},
                   "data": {"type": "string", "description": "The event as JSON, its `type` the event's name"}},
}  # fmt: skip
_RESPONSES = {
    200: {"description": "A `message`, or with `stream: true` a `text/event-stream` of Anthropic's message events",
          # Before OpenAPI 3.2 (FastAPI writes 3.1) a stream's `schema` describes one event, as a parsed SSE event.
          "content": {"text/event-stream": {"schema": _SSE_EVENT}}},
    **anthropic_error_responses(400, 404, 413, 500, 503, 504, 529),
}  # fmt: skip


def _refuse_while_draining(state: GatewayState) -> None:
    if state.drain.draining:
        raise ShuttingDownError("The server is shutting down; retry in a moment (another replica will answer)")


@router.post("/v1/messages", response_model=AnthropicMessage, responses=_RESPONSES)
async def create_message(
    body: MessagesRequest, request: Request, state: GatewayState = Depends(get_state), rid: str = Depends(request_id)
):
    """Anthropic Messages, streamed (SSE) or not; images are described by the vision engine."""
    _refuse_while_draining(state)
    plan = await state.messages.plan(body, client_timeout(request))
    request.state.model = plan.entry.name  # for the request metrics
    if body.stream:
        # Until the engine accepts (it may queue the request), nothing is sent: watch the client meanwhile.
        return EventStreamResponse(await unless_disconnected(request, state.messages.stream(plan, rid)))
    # Sent as built, as chat completions are (re-validating against the documentation model would drop fields).
    return JSONResponse(await unless_disconnected(request, state.messages.complete(plan, rid)))


@router.post(
    "/v1/messages/count_tokens",
    response_model=CountTokensResponse,
    responses=anthropic_error_responses(400, 404, 413, 500, 503, 504),
)
async def count_message_tokens(
    body: CountTokensRequest, request: Request, state: GatewayState = Depends(get_state), rid: str = Depends(request_id)
):
    """The input tokens `/v1/messages` would report for the same request (its images described first)."""
    _refuse_while_draining(state)
    counting = state.messages.count_tokens(body, rid, client_timeout(request))
    return JSONResponse(await unless_disconnected(request, counting))
