"""The chat flow: validate what we cannot serve, resolve the model, rewrite images into text, generate.

`ChatService.plan()` does everything that can fail with a clean HTTP status before a response starts
(unsupported parameters, unknown model, image download and decoding). `complete()` returns a
`chat.completion`; `stream()` returns SSE frames. A text-only stream starts only once the engine has sent
`Accepted` (it has templated the request, checked it against the context and the KV budget, and queued
it), so every refusal (context too long, bad parameters, a full queue) is still a proper HTTP status,
however long an idle model takes to reload: no timer decides. An accepted request gets its role chunk at
once, and keep-alive comments every `keepalive_secs` until its first token. Once the first byte is out,
errors become an SSE error event followed by [DONE].
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, fields

from services.common.config import ModelEntry, ReasoningField
from services.common.errors import InternalError, InvalidRequestError, ProxyVisionError

from ..clients.text_engine import ChatTurn, Finished, GenerationParams, ReasoningDelta, TextDelta, TextEngine
from ..metrics import GatewayMetrics
from ..schemas.chat import ChatCompletionRequest
from . import chunks, sse
from .engine_call import EngineCall
from .registry import EngineRegistry
from .vision_rewrite import PendingImages, ProxyVisionRewriter

log = logging.getLogger(__name__)


@dataclass
class ChatPlan:
    """A validated request, ready to run."""

    request: ChatCompletionRequest
    entry: ModelEntry
    client: TextEngine
    params: GenerationParams
    images: PendingImages | None
    started: float  # time.monotonic() when the request was planned (for time to first token)
    timeout: float  # deadline of each engine call of this request, in seconds


class ChatService:
    """Runs chat completions against the engines."""

    KEEPALIVE_SECS = 10.0

    def __init__(self, registry: EngineRegistry, rewriter: ProxyVisionRewriter, timeout: float,
                 keepalive_secs: float = KEEPALIVE_SECS, metrics: GatewayMetrics | None = None,
                 reasoning_field: ReasoningField = "reasoning_content") -> None:  # fmt: skip
        self._registry = registry
        self._metrics = metrics or GatewayMetrics()
        self._rewriter = rewriter
        self._timeout = timeout
        self._keepalive_secs = keepalive_secs
        self._reasoning_field = reasoning_field

    async def plan(self, request: ChatCompletionRequest, client_timeout: float | None = None) -> ChatPlan:
        """Refuse what we cannot serve, resolve the model, fetch and check images. Engine calls get the
        configured deadline, or the client's own timeout when that is shorter (nobody waits for the rest)."""
        started = time.monotonic()
        timeout = min(self._timeout, client_timeout) if client_timeout else self._timeout
        _refuse_unsupported(request)
        entry, client = self._registry.text_client(request.model)
        params = generation_params(request)
        images = await self._rewriter.prepare(request.messages, timeout)
        return ChatPlan(request, entry, client, params, images, started, timeout)

    async def _turns(self, plan: ChatPlan, request_id: str) -> list[ChatTurn]:
        if plan.images is None:
            return [ChatTurn(m.role, m.text(), m.reasoning_text) for m in plan.request.messages]
        return await plan.images.describe(request_id)

    def _call(self, plan: ChatPlan, turns: list[ChatTurn], request_id: str) -> EngineCall:
        return EngineCall(plan.client.generate(turns, plan.params, request_id=request_id, timeout=plan.timeout))

    async def complete(self, plan: ChatPlan, request_id: str) -> dict:
        """A non-streamed `chat.completion`."""
        call = self._call(plan, await self._turns(plan, request_id), request_id)
        answer: list[str] = []
        reasoning: list[str] = []
        try:
            event = await call.next()
            while not isinstance(event, Finished):
                (reasoning if isinstance(event, ReasoningDelta) else answer).append(event.text)
                event = await call.next()
        finally:
            await call.aclose()
        finished = _check(event)
        thinking = "".join(reasoning) if plan.request.include_reasoning else None
        return {
            "id": chunks.completion_id(), "object": "chat.completion", "created": int(time.time()),
            "model": plan.entry.name, "system_fingerprint": None,
            "choices": [{"index": 0, "message": chunks.message("".join(answer), thinking, self._reasoning_field),
                         "finish_reason": finished.finish_reason, "logprobs": None}],
            "usage": chunks.usage(finished),
        }  # fmt: skip

    async def stream(self, plan: ChatPlan, request_id: str) -> sse.FrameStream:
        """SSE frames. Text-only: first waits for the engine to accept the request (raising its refusal)."""
        if plan.images is not None:
            return sse.FrameStream(self._frames(plan, request_id, None))
        call = self._call(plan, await self._turns(plan, request_id), request_id)
        try:
            await call.accept()
        except BaseException:
            await call.aclose()
            raise
        return sse.FrameStream(self._frames(plan, request_id, call), call)

    async def _frames(self, plan: ChatPlan, request_id: str, accepted: EngineCall | None) -> AsyncIterator[str]:
        chunk = chunks.ChunkMaker(plan.entry.name, self._reasoning_field)
        include_reasoning = plan.request.include_reasoning
        yield chunk.delta({"role": "assistant", "content": ""})
        call = accepted
        try:
            if call is None:
                describing = asyncio.ensure_future(self._turns(plan, request_id))
                try:
                    async for comment in sse.keepalive_until_done(describing, self._keepalive_secs):
                        yield comment
                finally:
                    if not describing.done():  # the client left while images were being described
                        describing.cancel()
                generation_started = time.monotonic()
                call = self._call(plan, describing.result(), request_id)
            first = call.next_soon()
            async for comment in sse.keepalive_until_done(first, self._keepalive_secs):
                yield comment  # queued for a batch slot, or a long prefill
            event = first.result()
            if accepted is None:
                yield _timing_comment(plan, (time.monotonic() - generation_started) * 1000)
            self._metrics.ttft.labels(plan.entry.name).observe(time.monotonic() - plan.started)
            while True:
                if isinstance(event, TextDelta):
                    if event.text:
                        yield chunk.content(event.text)
                elif isinstance(event, ReasoningDelta):
                    if event.text and include_reasoning:
                        yield chunk.reasoning(event.text)
                elif isinstance(event, Finished):
                    finished = _check(event)
                    yield chunk.finish(finished.finish_reason)
                    if plan.request.stream_options and plan.request.stream_options.include_usage:
                        yield chunk.usage(chunks.usage(finished))
                    break
                event = await call.next()
        except ProxyVisionError as error:
            log.info("Stream failed after it started: %s", error.message)
            yield sse.event(error.to_openai())
        except Exception:  # a bug: the client still gets an error event and [DONE], the log the traceback
            log.exception("Stream failed unexpectedly")
            yield sse.event(InternalError("The server had an error while processing your request.").to_openai())
        finally:
            if call is not None:
                await call.aclose()
        yield sse.DONE


def _timing_comment(plan: ChatPlan, text_ttft_ms: float) -> str:
    """Where a multimodal request's time went, as an SSE comment (clients ignore comments; benchmarks read it)."""
    timings = plan.images.timings
    return f": timing fetch_ms={timings.fetch_ms:.1f} vision_ms={timings.vision_ms:.1f} text_ttft_ms={text_ttft_ms:.1f}\n\n"


# Request fields whose body name or form differs from the engine's (the rest are taken by name).
_RENAMED = {"max_tokens": lambda r: r.completion_limit, "stop": lambda r: r.stop_list}


def generation_params(request: ChatCompletionRequest) -> GenerationParams:
    """The engine's sampling parameters from a validated request, field by field."""
    return GenerationParams(**{f.name: _RENAMED[f.name](request) if f.name in _RENAMED else getattr(request, f.name)
                               for f in fields(GenerationParams)})  # fmt: skip


def _check(finished: Finished) -> Finished:
    if finished.finish_reason in ("error", "cancelled"):
        raise InternalError(f"Generation failed: {finished.error_message or finished.finish_reason}")
    return finished


def _refuse_unsupported(request: ChatCompletionRequest) -> None:
    """Say no to what we would otherwise silently ignore."""
    if request.n not in (None, 1):
        raise InvalidRequestError("Only n=1 is supported", param="n")
    if request.logprobs or request.top_logprobs:
        raise InvalidRequestError("logprobs are not supported", param="logprobs")
    if request.tools or request.tool_choice not in (None, "none"):
        raise InvalidRequestError("Tool calling is not supported", param="tools")
    if request.response_format is not None and request.response_format.type != "text":
        raise InvalidRequestError("Only response_format {'type': 'text'} is supported", param="response_format")
    for index, message in enumerate(request.messages):
        if message.role == "tool":
            raise InvalidRequestError("Messages with role 'tool' are not supported", param=f"messages[{index}].role")
