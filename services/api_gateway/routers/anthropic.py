"""POST /v1/messages and /v1/messages/count_tokens: parse, delegate to the Anthropic Messages protocol
(serving/protocols/anthropic.py), choose the response type. Errors on these paths are Anthropic's (errors.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from services.common.errors import ShuttingDownError

from ..dependencies import get_state, request_id
from ..openapi import anthropic_error_responses
from ..schemas.anthropic import AnthropicMessage, CountTokensRequest, CountTokensResponse, MessagesRequest
from ..state import GatewayState
from .generation import Generation, client_timeout, stream_responses, unless_disconnected

router = APIRouter(tags=["anthropic"])

_RESPONSES = stream_responses(
    "A `message`, or with `stream: true` a `text/event-stream` of Anthropic's message events",
    "The event as JSON, its `type` the event's name",
    events="message_start, content_block_start, content_block_delta, content_block_stop, message_delta, "
    "message_stop, ping; after the first byte, error",
    errors=anthropic_error_responses(400, 404, 413, 500, 503, 504, 529),
)


def _refuse_while_draining(state: GatewayState) -> None:
    if state.drain.draining:
        raise ShuttingDownError("The server is shutting down; retry in a moment (another replica will answer)")


@router.post("/v1/messages", response_model=AnthropicMessage, responses=_RESPONSES)
async def create_message(body: MessagesRequest, generation: Generation = Depends()):
    """Anthropic Messages, streamed (SSE) or not; images are described by the vision engine."""
    return await generation.serve(generation.state.messages, body)


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
