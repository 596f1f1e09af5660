"""`/v1/responses` (the OpenAI Responses API): create, retrieve and delete; the work is in
serving/protocols/responses.py."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from ..dependencies import get_state
from ..openapi import error_responses
from ..schemas.responses import ResponsesRequest
from ..state import GatewayState
from .generation import Generation, stream_responses

router = APIRouter(tags=["responses"])

_CREATED = stream_responses(
    "A `response` object, or with `stream: true` a `text/event-stream` of typed Responses events",
    "The event as JSON, with `type` and `sequence_number`",
    events="The event's type: `response.created`, `response.output_text.delta`, ... `response.completed`",
)


@router.post("/v1/responses", responses=_CREATED)
async def create_response(body: ResponsesRequest, generation: Generation = Depends()):
    """OpenAI Responses: text, images, function tools, structured outputs, reasoning; stored for
    `previous_response_id` unless `store` is false."""
    return await generation.serve(generation.state.responses, body)


@router.get("/v1/responses/{response_id}", responses=error_responses(404, 503))
async def get_response(response_id: str, state: GatewayState = Depends(get_state)) -> JSONResponse:
    """A stored response, as it was answered."""
    return JSONResponse(await state.responses.retrieve(response_id))


@router.delete("/v1/responses/{response_id}", responses=error_responses(404, 503))
async def delete_response(response_id: str, state: GatewayState = Depends(get_state)) -> JSONResponse:
    """Forget a stored response (a follow-up can no longer continue it)."""
    return JSONResponse(await state.responses.delete(response_id))
