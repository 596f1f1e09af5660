"""POST /v1/completions (OpenAI's legacy Completions): parse, delegate to serving/protocols/completions.py, choose
the response type."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from ..schemas.completions import Completion, CompletionRequest
from .generation import Generation, stream_responses

router = APIRouter(tags=["completions"])

_RESPONSES = stream_responses(
    "A `text_completion`, or with `stream: true` a `text/event-stream` of `text_completion` chunks ending with "
    "`data: [DONE]`",
    "A `text_completion` chunk as JSON (one choice's new text, or its finish_reason; with include_usage, last, the "
    'usage with no choices); after the first byte, an error as `{"error": {...}}`; last, `[DONE]`',
)


@router.post("/v1/completions", response_model=Completion, responses=_RESPONSES)
async def create_completion(body: CompletionRequest, generation: Generation = Depends()):
    """OpenAI legacy completions of a raw prompt (no chat template), streamed (SSE) or not; `suffix` for
    fill-in-the-middle (an editor's autocomplete)."""
    return await generation.serve(generation.state.completions, body)
