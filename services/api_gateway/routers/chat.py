"""POST /v1/chat/completions: parse, delegate to the Chat Completions protocol (serving/protocols/chat.py), choose the response type."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from services.common.errors import ShuttingDownError

from ..dependencies import get_state, request_id
from ..openapi import error_responses
from ..schemas.chat import ChatCompletion, ChatCompletionRequest
from ..serving.sse import EventStreamResponse
from ..state import GatewayState
from .generation import client_timeout, unless_disconnected

router = APIRouter(tags=["chat"])

_SSE_EVENT = {
    "type": "object", "required": ["data"],
    "properties": {"data": {"type": "string", "description": "A `chat.completion.chunk` as JSON; after the first byte, "
                                                            "an error as `{\"error\": {...}}`; last, `[DONE]`. With images "
                                                            "captioned, one chunk also carries `proxy_vision` (as in "
                                                            "ChatCompletion)"},
                   "event": {"type": "string", "description": "Always the default, `message`"}},
}  # fmt: skip
_RESPONSES = {
    200: {"description": "A `chat.completion`, or with `stream: true` a `text/event-stream` of `chat.completion.chunk` "
                         "events ending with `data: [DONE]`",
          # Before OpenAPI 3.2 (FastAPI writes 3.1) a stream's `schema` describes one event, as a parsed SSE event.
          "content": {"text/event-stream": {"schema": _SSE_EVENT}}},
    **error_responses(400, 404, 413, 500, 503, 504),
}  # fmt: skip


@router.post("/v1/chat/completions", response_model=ChatCompletion, responses=_RESPONSES)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, state: GatewayState = Depends(get_state),
    rid: str = Depends(request_id),
):  # fmt: skip
    """OpenAI chat completions, streamed (SSE) or not; images are described by the vision engine."""
    if state.drain.draining:
        raise ShuttingDownError("The server is shutting down; retry in a moment (another replica will answer)")
    plan = await state.chat.plan(body, client_timeout(request))
    request.state.model = plan.entry.name  # for the request metrics
    if body.stream:
        # Until the engine accepts (it may queue the request), nothing is sent: watch the client meanwhile.
        frames = await unless_disconnected(request, state.chat.stream(plan, rid))
        return EventStreamResponse(frames)
    # Sent as built: the body is already the OpenAI shape, and re-validating it against the response model
    # (documentation) would drop what the model does not spell out.
    return JSONResponse(await unless_disconnected(request, state.chat.complete(plan, rid)))
