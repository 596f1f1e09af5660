"""`/v1/responses` (the OpenAI Responses API): create, retrieve and delete; the work is in
serving/protocols/responses.py."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from services.common.errors import ShuttingDownError

from ..dependencies import get_state, request_id
from ..openapi import error_responses
from ..schemas.responses import ResponsesRequest
from ..serving.sse import EventStreamResponse
from ..state import GatewayState
from .generation import client_timeout, unless_disconnected

router = APIRouter(tags=["responses"])

_SSE_EVENT = {
    "type": "object", "required": ["event", "data"],
    "properties": {"event": {"type": "string", "description": "The event's type: `response.created`, "
                                                               "`response.output_text.delta`, ... `response.completed`"},
                   "data": {"type": "string", "description": "The event as JSON, with `type` and `sequence_number`"}},
}  # fmt: skip
_CREATED = {
    200: {"description": "A `response` object, or with `stream: true` a `text/event-stream` of typed Responses events",
          "content": {"text/event-stream": {"schema": _SSE_EVENT}}},
    **error_responses(400, 404, 413, 500, 503, 504),
}  # fmt: skip


@router.post("/v1/responses", responses=_CREATED)
async def create_response(body: ResponsesRequest, request: Request, state: GatewayState = Depends(get_state),
                          rid: str = Depends(request_id)):  # fmt: skip
    """OpenAI Responses: text, images, function tools, structured outputs, reasoning; stored for
    `previous_response_id` unless `store` is false."""
    if state.drain.draining:
        raise ShuttingDownError("The server is shutting down; retry in a moment (another replica will answer)")
    plan = await state.responses.plan(body, client_timeout(request))
    request.state.model = plan.entry.name  # for the request metrics
    if body.stream:
        return EventStreamResponse(await unless_disconnected(request, state.responses.stream(plan, rid)))
    return JSONResponse(await unless_disconnected(request, state.responses.complete(plan, rid)))


@router.get("/v1/responses/{response_id}", responses=error_responses(404, 503))
async def get_response(response_id: str, state: GatewayState = Depends(get_state)) -> JSONResponse:
    """A stored response, as it was answered."""
    return JSONResponse(await state.responses.retrieve(response_id))


@router.delete("/v1/responses/{response_id}", responses=error_responses(404, 503))
async def delete_response(response_id: str, state: GatewayState = Depends(get_state)) -> JSONResponse:
    """Forget a stored response (a follow-up can no longer continue it)."""
    return JSONResponse(await state.responses.delete(response_id))
