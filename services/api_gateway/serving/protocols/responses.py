"""The OpenAI Responses API over the request core: `POST /v1/responses`, and the stored responses behind
`GET`/`DELETE /v1/responses/{id}` and `previous_response_id`.

A stream is typed SSE events (`event:` + `data:`), no `[DONE]`: `response.created`, `response.in_progress`, then
each output item's events (responses_output.py), then `response.completed`, whose response's `status` is
`incomplete` when the answer was cut by `max_output_tokens` (as vLLM sends it: the SDK's stream helpers finish only
on `response.completed`); a failure after the first byte is `response.failed` with the error in `response.error`.
With `store` (the default, as OpenAI's), the finished response is kept with the conversation that led to it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pydantic import TypeAdapter

from services.common.errors import InternalError, InvalidRequestError, NotFoundError, ProxyVisionError
from services.common.generation import Finished, ReasoningDelta, TextDelta, ToolCallDelta

from ...schemas.responses import InputItem, ResponsesRequest
from .. import sse
from ..core import CaptionsMade, GenerationCore, KeepAlive, LiveGeneration, Output
from ..response_store import ResponseStore
from .plan import ProtocolPlan
from .responses_input import request_items, responses_conversation
from .responses_output import StreamEvents, new_id, output_items, response_object, status_of

log = logging.getLogger(__name__)

_ITEMS = TypeAdapter(list[InputItem])


@dataclass
class ResponsesPlan(ProtocolPlan[ResponsesRequest]):
    """A validated request, its id, the conversation items it continues, and its planned conversation."""

    response_id: str
    history: list[dict]  # the continued conversation's items (JSON), oldest first
    created_at: int


class Responses:
    """`/v1/responses` over the request core, with a `ResponseStore` for stored responses."""

    def __init__(self, core: GenerationCore, store: ResponseStore, show_captions: bool = True) -> None:
        self.core = core
        self.store = store
        self._show_captions = show_captions

    async def plan(self, request: ResponsesRequest, client_timeout: float | None = None) -> ResponsesPlan:
        """The request planned by the core: every refusal (an unknown `previous_response_id` too) before a
        response starts."""
        history = await self._history(request.previous_response_id)
        conversation = responses_conversation(request, _ITEMS.validate_python(history))
        plan = await self.core.plan(conversation, client_timeout)
        return ResponsesPlan(request, plan, new_id("resp"), history, int(time.time()))

    async def _history(self, previous_id: str | None) -> list[dict]:
        if previous_id is None:
            return []
        record = await self.store.get(previous_id)
        if record is None:
            raise InvalidRequestError(
                f"Previous response with id '{previous_id}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        return [*record["items"], *record["response"]["output"]]

    async def complete(self, plan: ResponsesPlan, request_id: str) -> dict:
        """A non-streamed `response`."""
        outcome = await self.core.complete(plan.core, request_id)
        finished = outcome.finished[0]
        output = output_items(outcome.answers[0], finished, plan.request.wants_logprobs)
        return await self._finish(
            plan, status_of(finished), output, finished, extra=self._captions(outcome.proxy_vision)
        )

    async def stream(self, plan: ResponsesPlan, request_id: str) -> sse.FrameStream:
        """The typed SSE events. Text-only: first waits for the engine to accept the request (raising its refusal)."""
        live = await self.core.stream(plan.core, request_id)
        return sse.FrameStream(self._frames(plan, live), live)

    async def _frames(self, plan: ResponsesPlan, live: LiveGeneration) -> AsyncIterator[str]:
        events = StreamEvents(plan.request.wants_logprobs)
        started = self._object(plan, "in_progress", [])
        yield events.event("response.created", response=started)
        yield events.event("response.in_progress", response=started)
        captions: dict = {}
        try:
            finished: Finished | None = None
            async for item in live:
                if isinstance(item, KeepAlive):
                    yield sse.KEEPALIVE
                elif isinstance(item, Output):
                    event = item.event
                    if isinstance(event, TextDelta):
                        frames = events.text(event.text, event.logprobs) if event.text or event.logprobs else []
                    elif isinstance(event, ReasoningDelta):
                        frames = events.reasoning(event.text) if event.text else []
                    elif isinstance(event, ToolCallDelta):
                        frames = events.tool_call(event)
                    else:
                        finished = event
                        frames = events.close(status_of(event))
                    for frame in frames:
                        yield frame
                elif isinstance(item, CaptionsMade):
                    captions = self._captions(item.proxy_vision)
            status = status_of(finished)
            done = await self._finish(plan, status, events.output, finished, extra=captions)
            yield events.event("response.completed", response=done)
        except ProxyVisionError as error:
            log.info("Response stream failed after it started: %s", error.message)
            yield events.event("response.failed", response=self._failed(plan, events, error))
        except Exception:  # a bug: the client still gets response.failed, the log the traceback
            log.exception("Response stream failed unexpectedly")
            error = InternalError("The server had an error while processing your request.")
            yield events.event("response.failed", response=self._failed(plan, events, error))
        finally:
            await live.aclose()

    def _failed(self, plan: ResponsesPlan, events: StreamEvents, error: ProxyVisionError) -> dict:
        return self._object(
            plan, "failed", events.output, error={"code": error.code or error.error_type, "message": error.message}
        )

    def _captions(self, proxy_vision: dict | None) -> dict:
        return {"proxy_vision": proxy_vision} if proxy_vision is not None and self._show_captions else {}

    def _object(self, plan: ResponsesPlan, status: str, output: list[dict], **fields) -> dict:
        return response_object(
            plan.response_id,
            plan.request,
            plan.entry.name,
            created_at=plan.created_at,
            status=status,
            output=output,
            **fields,
        )

    async def _finish(
        self, plan: ResponsesPlan, status: str, output: list[dict], finished: Finished, extra: dict
    ) -> dict:
        """The finished response, stored when the request asked for it."""
        response = self._object(plan, status, output, finished=finished, extra=extra)
        if plan.request.store:
            items = [
                *plan.history,
                *(i.model_dump(mode="json", by_alias=True, exclude_none=True) for i in request_items(plan.request)),
            ]
            if not await self.store.put(plan.response_id, {"response": response, "items": items}):
                response["store"] = False  # too large to keep (logged): the answer says so rather than pretend
        return response

    async def retrieve(self, response_id: str) -> dict:
        """A stored response; 404 when unknown, expired or not stored."""
        record = await self.store.get(response_id)
        if record is None:
            raise NotFoundError(
                f"Response with id '{response_id}' not found.", param="response_id", code="response_not_found"
            )
        return record["response"]

    async def delete(self, response_id: str) -> dict:
        """Forget a stored response; 404 when there is none."""
        if not await self.store.delete(response_id):
            raise NotFoundError(
                f"Response with id '{response_id}' not found.", param="response_id", code="response_not_found"
            )
        return {"id": response_id, "object": "response", "deleted": True}
