"""POST /v1/chat/completions: parse, delegate to the Chat Completions protocol (serving/protocols/chat.py), choose the response type."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from ..schemas.chat import ChatCompletion, ChatCompletionRequest
from .generation import Generation, stream_responses

router = APIRouter(tags=["chat"])

_RESPONSES = stream_responses(
    "A `chat.completion`, or with `stream: true` a `text/event-stream` of `chat.completion.chunk` events ending with "
    "`data: [DONE]`",
    'A `chat.completion.chunk` as JSON; after the first byte, an error as `{"error": {...}}`; last, `[DONE]`. With '
    "images captioned, one chunk also carries `proxy_vision` (as in ChatCompletion)",
)


@router.post("/v1/chat/completions", response_model=ChatCompletion, responses=_RESPONSES)
async def create_chat_completion(body: ChatCompletionRequest, generation: Generation = Depends()):
    """OpenAI chat completions, streamed (SSE) or not; images are described by the vision engine."""
    return await generation.serve(generation.state.chat, body)
