"""The chat flow: validate what we cannot serve, resolve the model, rewrite images into text, generate.

`ChatService.plan()` does everything that can fail with a clean HTTP status before a response starts
(unsupported parameters, unknown model, image download and decoding). `complete()` returns a
`chat.completion`; `stream()` returns SSE frames. A text-only stream starts only once the engine has sent
`Accepted` (it has templated the request, checked it against the context and the KV budget, and queued
it), so every refusal (context too long, bad parameters, a full queue) is still a proper HTTP status,
however long an idle model takes to reload: no timer decides. An accepted request gets its role chunk at
once, and keep-alive comments every `keepalive_secs` until its first token. Once the first byte is out,
errors become an SSE error event followed by [DONE].

A stream with images to caption starts before the text engine is called (captions take seconds; the client
gets its role chunk and keep-alives meanwhile). With `gateway.show_captions`, what the text model was told
about each image goes out as `proxy_vision`: at the top level of a `chat.completion`, and in one chunk of a
stream, the one sent as soon as the captions exist (an empty delta for choice 0). A native model's images
need no caption: its stream starts as a text one does. If the vision or the text engine's queue is then full, the request has
produced nothing yet and the client can no longer be told to retry: the gateway waits for capacity itself
(`described_turns`, `admitted_calls`: an engine's RESOURCE_EXHAUSTED says "nothing was done, try again"), with
backoff, until the request's deadline.

`n` choices are `n` engine calls (`ChoiceCalls`), started together: a stream interleaves their chunks as
they come (each chunk carries one choice), finishes each choice on its own, and counts usage once for
the prompt; any choice failing after the first byte ends the stream with the error event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from services.common.config import ModelEntry, ReasoningField
from services.common.errors import (
    DeadlineExceededError,
    InternalError,
    InvalidRequestError,
    OverloadedError,
    ProxyVisionError,  # fmt: skip
)

from ..clients.text_engine import (
    ChatTurn,
    Finished,
    GenerationParams,
    OutputOptions,
    ReasoningDelta,
    TextDelta,
    TextEngine,  # fmt: skip
    ToolCallDelta,
)
from ..metrics import GatewayMetrics
from ..schemas.chat import ChatCompletionRequest
from . import chunks, sse
from .answers import ChoiceAnswer
from .choices import ChoiceCalls
from .conversation_key import conversation_key
from .engine_call import EngineCall
from .image_policy import ImagePolicies
from .params import choice_params, generation_params, output_options
from .registry import EngineRegistry
from .vision_rewrite import PendingImages

log = logging.getLogger(__name__)


@dataclass
class ChatPlan:
    """A validated request, ready to run."""

    request: ChatCompletionRequest
    entry: ModelEntry
    client: TextEngine
    params: GenerationParams
    options: OutputOptions
    turns: list[ChatTurn] | None  # the engine's conversation, when it is ready before the engine is called
    images: PendingImages | None  # else the images the proxy still has to caption
    started: float  # time.monotonic() when the request was planned (for time to first token)
    timeout: float  # deadline of each engine call of this request, in seconds
    affinity_key: str = ""  # the conversation's key, for routing.text: affinity (conversation_key.py)

    @property
    def n(self) -> int:
        """How many choices (engine calls)."""
        return self.request.n or 1


class ChatService:
    """Runs chat completions against the engines."""

    KEEPALIVE_SECS = 10.0
    MAX_N = 8
    # A started stream whose engine is at capacity asks again after this, doubling up to the cap.
    ADMISSION_RETRY_SECS = 0.1
    ADMISSION_RETRY_MAX_SECS = 2.0

    def __init__(self, registry: EngineRegistry, images: ImagePolicies, timeout: float,
                 keepalive_secs: float = KEEPALIVE_SECS, metrics: GatewayMetrics | None = None,
                 reasoning_field: ReasoningField = "reasoning_content", max_n: int = MAX_N,
                 show_captions: bool = True) -> None:  # fmt: skip
        self._registry = registry
        self._max_n = max_n
        self._metrics = metrics or GatewayMetrics()
        self._images = images
        self._timeout = timeout
        self._keepalive_secs = keepalive_secs
        self._reasoning_field = reasoning_field
        self._show_captions = show_captions

    async def plan(self, request: ChatCompletionRequest, client_timeout: float | None = None) -> ChatPlan:
        """Refuse what we cannot serve, resolve the model, fetch and check images. Engine calls get the
        configured deadline, or the client's own timeout when that is shorter (nobody waits for the rest)."""
        started = time.monotonic()
        timeout = min(self._timeout, client_timeout) if client_timeout else self._timeout
        if request.n is not None and request.n > self._max_n:
            raise InvalidRequestError(f"n must be at most {self._max_n} on this server (gateway.max_n)", param="n")
        entry, client = self._registry.text_client(request.model)
        params, options = generation_params(request), output_options(request)
        prepared = await self._images.prepare(entry.name, request.messages, timeout)
        images = prepared if isinstance(prepared, PendingImages) else None
        turns = None if images is not None else prepared
        return ChatPlan(request, entry, client, params, options, turns, images, started, timeout,
                        affinity_key=conversation_key(request))  # fmt: skip

    async def _turns(self, plan: ChatPlan, request_id: str) -> list[ChatTurn]:
        if plan.images is None:
            return plan.turns
        return await plan.images.describe(request_id)

    def _calls(
        self, plan: ChatPlan, turns: list[ChatTurn], request_id: str, timeout: float | None = None
    ) -> ChoiceCalls:
        """One engine call per choice, all started now (choice i samples with seed + i)."""
        timeout = plan.timeout if timeout is None else timeout
        return ChoiceCalls([EngineCall(plan.client.generate(turns, choice_params(plan.params, i), options=plan.options,
                                                            request_id=request_id, timeout=timeout,
                                                            affinity_key=plan.affinity_key))
                            for i in range(plan.n)])  # fmt: skip

    async def admitted_calls(self, plan: ChatPlan, turns: list[ChatTurn], request_id: str) -> ChoiceCalls:
        """The engine calls of a stream that has already started, once the engine admitted them all (a full
        queue is waited out: `_at_capacity_retried`). Each attempt's calls get the time left."""

        async def attempt(time_left: float) -> ChoiceCalls:
            calls = self._calls(plan, turns, request_id, timeout=time_left)
            try:
                await calls.accept()
            except BaseException:
                await calls.aclose()
                raise
            return calls

        return await self._at_capacity_retried(plan, attempt, f"text engine of {plan.entry.name}")

    async def described_turns(self, plan: ChatPlan, request_id: str) -> list[ChatTurn]:
        """The captioned conversation of a stream that has already started: a vision engine whose queue is full
        is waited out as the text engine's is (captions are made again from the start; the cache keeps any
        that were done)."""
        return await self._at_capacity_retried(plan, lambda _: self._turns(plan, request_id), "vision engine")

    async def _at_capacity_retried(self, plan: ChatPlan, attempt, what: str):
        """`attempt(time_left)` until it is not refused for capacity. A full queue (OverloadedError: refused at
        admission, nothing done) is waited out with backoff until the request's deadline, which then ends it
        with a 504-type error; any other refusal is raised at once. Once a stream has answered 200 the client
        cannot be told to retry, so the gateway does it."""
        deadline = plan.started + plan.timeout
        delay, refusals = self.ADMISSION_RETRY_SECS, 0
        while True:
            try:
                result = await attempt(max(0.001, deadline - time.monotonic()))
            except OverloadedError as error:
                refusals += 1
                if time.monotonic() + delay >= deadline:
                    raise DeadlineExceededError(f"The {what} stayed at capacity for the request's whole deadline "
                                                f"({plan.timeout:.0f}s): {error.message}") from None  # fmt: skip
                if refusals == 1:
                    log.info("The %s is at capacity after the stream started; waiting for a slot", what)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.ADMISSION_RETRY_MAX_SECS)
                continue
            if refusals:
                log.info("The %s took the request after %d refusal(s) at capacity", what, refusals)
            return result

    def _proxy_vision(self, plan: ChatPlan) -> dict:
        """`{"proxy_vision": ...}` for an answer whose images were captioned (with `gateway.show_captions`), else
        nothing."""
        if plan.images is None or not self._show_captions:
            return {}
        return {"proxy_vision": plan.images.proxy_vision()}

    async def complete(self, plan: ChatPlan, request_id: str) -> dict:
        """A non-streamed `chat.completion` (with `proxy_vision` when its images were captioned)."""
        calls = self._calls(plan, await self._turns(plan, request_id), request_id)
        answers = [ChoiceAnswer() for _ in range(plan.n)]
        finished: dict[int, Finished] = {}
        try:
            while (item := await calls.next()) is not None:
                index, event = item
                if isinstance(event, Finished):
                    finished[index] = _check(event)
                else:
                    answers[index].add(event)
        finally:
            await calls.aclose()
        done = [finished[i] for i in range(plan.n)]
        return {
            "id": chunks.completion_id(), "object": "chat.completion", "created": int(time.time()),
            "model": plan.entry.name, "system_fingerprint": None,
            "choices": [answer.choice(i, done[i], include_reasoning=plan.request.include_reasoning,
                                      reasoning_field=self._reasoning_field, logprobs=bool(plan.request.logprobs))
                        for i, answer in enumerate(answers)],
            "usage": chunks.usage(done),
            **self._proxy_vision(plan),
        }  # fmt: skip

    async def stream(self, plan: ChatPlan, request_id: str) -> sse.FrameStream:
        """SSE frames. Text-only: first waits for the engine to accept the request (raising its refusal)."""
        if plan.images is not None:
            return sse.FrameStream(self._frames(plan, request_id, None))
        calls = self._calls(plan, await self._turns(plan, request_id), request_id)
        try:
            await calls.accept()
        except BaseException:
            await calls.aclose()
            raise
        return sse.FrameStream(self._frames(plan, request_id, calls), calls)

    async def _frames(self, plan: ChatPlan, request_id: str, accepted: ChoiceCalls | None) -> AsyncIterator[str]:
        chunk = chunks.ChunkMaker(plan.entry.name, self._reasoning_field)
        include_reasoning = plan.request.include_reasoning
        with_logprobs = bool(plan.request.logprobs)
        for index in range(plan.n):
            yield chunk.delta({"role": "assistant", "content": ""}, index)
        calls = accepted
        try:
            if calls is None:
                describing = asyncio.ensure_future(self.described_turns(plan, request_id))
                try:
                    async for comment in sse.keepalive_until_done(describing, self._keepalive_secs):
                        yield comment
                finally:
                    if not describing.done():  # the client left while images were being described
                        describing.cancel()
                if captions := self._proxy_vision(plan):
                    # One chunk, as soon as the captions exist (a UI shows them while the answer is generated);
                    # its own chunk, so the per-token frames stay prebuilt (chunks.ChunkMaker).
                    yield chunk.annotation(captions)
                generation_started = time.monotonic()
                admitting = asyncio.ensure_future(self.admitted_calls(plan, describing.result(), request_id))
                try:
                    async for comment in sse.keepalive_until_done(admitting, self._keepalive_secs):
                        yield comment  # the engine at capacity: we wait for it, the client waits with us
                    calls = admitting.result()
                finally:
                    if not admitting.done():
                        admitting.cancel()
                        await asyncio.gather(admitting, return_exceptions=True)
                    elif calls is None and not admitting.cancelled() and admitting.exception() is None:
                        await admitting.result().aclose()  # the client left just as the engine admitted it
            first = calls.next_soon()
            async for comment in sse.keepalive_until_done(first, self._keepalive_secs):
                yield comment  # queued for a batch slot, or a long prefill
            item = first.result()
            if accepted is None:
                yield _timing_comment(plan, (time.monotonic() - generation_started) * 1000)
            self._metrics.ttft.labels(plan.entry.name).observe(time.monotonic() - plan.started)
            finished: dict[int, Finished] = {}
            while item is not None:
                index, event = item
                if isinstance(event, TextDelta):
                    if event.text or (with_logprobs and event.logprobs):
                        yield chunk.content(event.text, index, event.logprobs if with_logprobs else None)
                elif isinstance(event, ReasoningDelta):
                    if event.text and include_reasoning:
                        yield chunk.reasoning(event.text, index)
                elif isinstance(event, ToolCallDelta):
                    for frame in chunk.tool_call(event, index):
                        yield frame
                elif isinstance(event, Finished):
                    finished[index] = _check(event)
                    yield chunk.finish(event.finish_reason, index)
                item = await calls.next()
            if plan.request.stream_options and plan.request.stream_options.include_usage:
                yield chunk.usage(chunks.usage([finished[i] for i in range(plan.n)]))
        except ProxyVisionError as error:
            log.info("Stream failed after it started: %s", error.message)
            yield sse.event(error.to_openai())
        except Exception:  # a bug: the client still gets an error event and [DONE], the log the traceback
            log.exception("Stream failed unexpectedly")
            yield sse.event(InternalError("The server had an error while processing your request.").to_openai())
        finally:
            if calls is not None:
                await calls.aclose()
        yield sse.DONE


def _timing_comment(plan: ChatPlan, text_ttft_ms: float) -> str:
    """Where a multimodal request's time went, as an SSE comment (clients ignore comments; benchmarks read it)."""
    timings = plan.images.timings
    return f": timing fetch_ms={timings.fetch_ms:.1f} vision_ms={timings.vision_ms:.1f} text_ttft_ms={text_ttft_ms:.1f}\n\n"


def _check(finished: Finished) -> Finished:
    if finished.finish_reason in ("error", "cancelled"):
        raise InternalError(f"Generation failed: {finished.error_message or finished.finish_reason}")
    return finished
