"""POST /v1/chat/completions: parse, delegate to the Chat Completions protocol (serving/protocols/chat.py), choose the response type."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from ..dependencies import get_state, request_id
from ..openapi import error_responses
from ..schemas.chat import ChatCompletion, ChatCompletionRequest
from ..state import GatewayState
from .generation import serve, stream_responses

router = APIRouter(tags=["chat"])

_RESPONSES = stream_responses(
    "A `chat.completion`, or with `stream: true` a `text/event-stream` of `chat.completion.chunk` events ending with "
    "`data: [DONE]`",
    {
        "data": 'A `chat.completion.chunk` as JSON; after the first byte, an error as `{"error": {...}}`; last, '
        "`[DONE]`. With images captioned, one chunk also carries `proxy_vision` (as in ChatCompletion)",
        "event": "Always the default, `message`",
    },
    error_responses(400, 404, 413, 500, 503, 504),
)


@router.post("/v1/chat/completions", response_model=ChatCompletion, responses=_RESPONSES)
async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    state: GatewayState = Depends(get_state),
    rid: str = Depends(request_id),
):
    """OpenAI chat completions, streamed (SSE) or not; images are described by the vision engine."""
    return await serve(request, state.chat, body, rid, state.drain.draining)
