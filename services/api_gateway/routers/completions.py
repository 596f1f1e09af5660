"""POST /v1/completions (OpenAI's legacy Completions): parse, delegate to serving/protocols/completions.py, choose
the response type."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from ..dependencies import get_state, request_id
from ..openapi import error_responses
from ..schemas.completions import Completion, CompletionRequest
from ..state import GatewayState
from .generation import serve, stream_responses

router = APIRouter(tags=["completions"])

_RESPONSES = stream_responses(
    "A `text_completion`, or with `stream: true` a `text/event-stream` of `text_completion` chunks ending with "
    "`data: [DONE]`",
    {
        "data": "A `text_completion` chunk as JSON (one choice's new text, or its finish_reason; with include_usage, "
        'last, the usage with no choices); after the first byte, an error as `{"error": {...}}`; last, '
        "`[DONE]`",
        "event": "Always the default, `message`",
    },
    error_responses(400, 404, 413, 500, 503, 504),
)


@router.post("/v1/completions", response_model=Completion, responses=_RESPONSES)
async def create_completion(
    body: CompletionRequest,
    request: Request,
    state: GatewayState = Depends(get_state),
    rid: str = Depends(request_id),
):
    """OpenAI legacy completions of a raw prompt (no chat template), streamed (SSE) or not; `suffix` for
    fill-in-the-middle (an editor's autocomplete)."""
    return await serve(request, state.completions, body, rid, state.drain.draining)
