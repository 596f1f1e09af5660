"""POST /v1/completions (OpenAI's legacy Completions): parse, delegate to serving/protocols/completions.py, choose
the response type."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from services.common.errors import ShuttingDownError

from ..dependencies import get_state, request_id
from ..openapi import error_responses
from ..schemas.completions import Completion, CompletionRequest
from ..serving.sse import EventStreamResponse
from ..state import GatewayState
from .generation import client_timeout, unless_disconnected

router = APIRouter(tags=["completions"])

_SSE_EVENT = {
    "type": "object", "required": ["data"],
    "properties": {"data": {"type": "string", "description": "A `text_completion` chunk as JSON (one choice's new text, "
                                                            "or its finish_reason; with include_usage, last, the usage "
                                                            "with no choices); after the first byte, an error as "
                                                            "`{\"error\": {...}}`; last, `[DONE]`"},
                   "event": {"type": "string", "description": "Always the default, `message`"}},
}  # fmt: skip
_RESPONSES = {
    200: {"description": "A `text_completion`, or with `stream: true` a `text/event-stream` of `text_completion` "
                         "chunks ending with `data: [DONE]`",
          # Before OpenAPI 3.2 (FastAPI writes 3.1) a stream's `schema` describes one event, as a parsed SSE event.
          "content": {"text/event-stream": {"schema": _SSE_EVENT}}},
    **error_responses(400, 404, 413, 500, 503, 504),
}  # fmt: skip


@router.post("/v1/completions", response_model=Completion, responses=_RESPONSES)
async def create_completion(
    body: CompletionRequest, request: Request, state: GatewayState = Depends(get_state),
    rid: str = Depends(request_id),
):  # fmt: skip
    """OpenAI legacy completions of a raw prompt (no chat template), streamed (SSE) or not; `suffix` for
    fill-in-the-middle (an editor's autocomplete)."""
    if state.drain.draining:
        raise ShuttingDownError("The server is shutting down; retry in a moment (another replica will answer)")
    plan = await state.completions.plan(body, client_timeout(request))
    request.state.model = plan.entry.name  # for the request metrics
    if body.stream:
        # Until the engine accepts every prompt (it may queue them), nothing is sent: watch the client meanwhile.
        return EventStreamResponse(await unless_disconnected(request, state.completions.stream(plan, rid)))
    # Sent as built, as chat completions are (re-validating against the documentation model would drop fields).
    return JSONResponse(await unless_disconnected(request, state.completions.complete(plan, rid)))
