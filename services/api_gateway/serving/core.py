"""The request core: one flow for every protocol, from a `Conversation` to engine events.

Each protocol (protocols/) translates its body into a `Conversation` and the core's events into its own answer.
`GenerationCore.plan()` does everything that can fail with a clean HTTP status before a response starts (unknown
model, `n` over the limit, image download and decoding, the image policy). `complete()` collects every choice's
answer (`Outcome`); `stream()` returns the live events (`LiveGeneration`). A text-only stream starts only once
the engine has sent `Accepted` (it has templated the request, checked it against the context and the KV budget,
and queued it), so every refusal (context too long, bad parameters, a full queue) is still a proper HTTP status,
however long an idle model takes to reload: no timer decides. Until the first token, the events carry a
`KeepAlive` every `keepalive_secs`, which each protocol writes its own way.

A stream with images to caption starts before the text engine is called (captions take seconds; the client
gets its opening frames and keep-alives meanwhile). With `gateway.show_captions`, what the text model was told
about each image is a `CaptionsMade` event, sent as soon as the captions exist, and part of the `Outcome`. A native
model's images need no caption: its stream starts as a text one does. If the vision or the text engine's queue is
then full, the request has produced nothing yet and the client can no longer be told to retry: the core waits for
capacity itself (`described_turns`, `admitted_calls`: an engine's RESOURCE_EXHAUSTED says "nothing was done, try
again"), with backoff, until the request's deadline.

`n` choices are `n` engine calls (`ChoiceCalls`), started together: their events come interleaved as they
arrive, each tagged with its choice; any choice failing raises its error from the events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from services.common.config import GatewaySettings, ModelEntry
from services.common.errors import DeadlineExceededError, InternalError, InvalidRequestError, OverloadedError
from services.common.generation import ChatTurn, Finished, ReasoningDelta, TextDelta, ToolCallDelta

from ..clients.text_engine import TextEngineClient
from ..metrics import GatewayMetrics
from .answers import ChoiceAnswer
from .choices import ChoiceCalls
from .conversation import Conversation
from .conversation_key import conversation_key
from .engine_call import EngineCall
from .image_policy import ImagePolicies
from .owned_stream import OwnedStream
from .params import choice_params
from .registry import EngineRegistry
from .vision_rewrite import PendingImages, Timings

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """A validated conversation, ready to run."""

    conversation: Conversation
    entry: ModelEntry
    client: TextEngineClient
    turns: list[ChatTurn] | None  # the engine's conversation, when it is ready before the engine is called
    images: PendingImages | None  # else the images the proxy still has to caption
    started: float  # time.monotonic() when the request was planned (for time to first token)
    timeout: float  # deadline of each engine call of this request, in seconds
    affinity_key: str = ""  # the conversation's key, for routing.text: affinity (conversation_key.py)

    @property
    def n(self) -> int:
        """How many choices (engine calls)."""
        return self.conversation.n


@dataclass(frozen=True)
class KeepAlive:
    """Nothing to send yet (images being described, or the wait for the first token): the protocol writes its
    keep-alive so proxies do not close the connection."""


@dataclass(frozen=True)
class CaptionsMade:
    """The proxy vision model's captions exist (with `gateway.show_captions`): `proxy_vision` is what the text model
    was told about each image."""

    proxy_vision: dict


@dataclass(frozen=True)
class FirstToken:
    """The first output is ready; for a request whose images were captioned, where its time went."""

    timings: Timings | None
    text_ttft_ms: float


@dataclass(frozen=True)
class Output:
    """An engine event (a delta, or a choice's `Finished`) of choice `index`."""

    index: int
    event: TextDelta | ReasoningDelta | ToolCallDelta | Finished


CoreEvent = KeepAlive | CaptionsMade | FirstToken | Output


@dataclass
class Outcome:
    """A finished request: every choice's answer and end, and the captions (with `gateway.show_captions`)."""

    answers: list[ChoiceAnswer]
    finished: list[Finished]
    proxy_vision: dict | None


class LiveGeneration(OwnedStream[CoreEvent]):
    """A started stream's events (iterate it), owning the engine calls behind them."""

    def __init__(self, events: AsyncGenerator[CoreEvent, None], calls: ChoiceCalls | None) -> None:
        super().__init__(events, calls)
        self._calls = calls

    @property
    def prompt_tokens(self) -> int | None:
        """The prompt's tokens as the engine counted them, when it accepted the calls before the stream started
        (text-only requests); None when the stream starts first (images to caption) and in the events."""
        return self._calls.calls[0].prompt_tokens if self._calls is not None else None


class GenerationCore:
    """Runs conversations against the engines, for every protocol."""

    KEEPALIVE_SECS = 10.0
    # A started stream whose engine is at capacity asks again after this, doubling up to the cap.
    ADMISSION_RETRY_SECS = 0.1
    ADMISSION_RETRY_MAX_SECS = 2.0

    def __init__(
        self,
        registry: EngineRegistry,
        images: ImagePolicies,
        timeout: float,
        keepalive_secs: float = KEEPALIVE_SECS,
        metrics: GatewayMetrics | None = None,
        max_n: int = GatewaySettings.model_fields["max_n"].default,  # gateway.max_n's default: one definition
        show_captions: bool = True,
    ) -> None:
        self.registry = registry
        self._max_n = max_n
        self._metrics = metrics or GatewayMetrics()
        self._images = images
        self._timeout = timeout
        self._keepalive_secs = keepalive_secs
        self._show_captions = show_captions

    async def plan(self, conversation: Conversation, client_timeout: float | None = None) -> Plan:
        """Refuse what we cannot serve, resolve the model, fetch and check images. Engine calls get the
        configured deadline, or the client's own timeout when that is shorter (nobody waits for the rest)."""
        started = time.monotonic()
        timeout = min(self._timeout, client_timeout) if client_timeout else self._timeout
        if conversation.n > self._max_n:
            raise InvalidRequestError(f"n must be at most {self._max_n} on this server (gateway.max_n)", param="n")
        entry, client = self.registry.text_client(conversation.model)
        prepared = await self._images.prepare(entry.name, conversation, timeout)
        images = prepared if isinstance(prepared, PendingImages) else None
        turns = None if images is not None else prepared
        return Plan(
            conversation, entry, client, turns, images, started, timeout, affinity_key=conversation_key(conversation)
        )

    async def _turns(self, plan: Plan, request_id: str) -> list[ChatTurn]:
        if plan.images is None:
            return plan.turns
        return await plan.images.describe(request_id)

    def _calls(self, plan: Plan, turns: list[ChatTurn], request_id: str, timeout: float | None = None) -> ChoiceCalls:
        """One engine call per choice, all started now (choice i samples with seed + i)."""
        timeout = plan.timeout if timeout is None else timeout
        conversation = plan.conversation
        return ChoiceCalls(
            [
                EngineCall(
                    plan.client.generate(
                        turns,
                        choice_params(conversation.params, i),
                        options=conversation.options,
                        prompt=conversation.prompt,
                        request_id=request_id,
                        timeout=timeout,
                        affinity_key=plan.affinity_key,
                    )
                )
                for i in range(plan.n)
            ]
        )

    async def admitted_calls(self, plan: Plan, turns: list[ChatTurn], request_id: str) -> ChoiceCalls:
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

    async def described_turns(self, plan: Plan, request_id: str) -> list[ChatTurn]:
        """The captioned conversation of a stream that has already started: a vision engine whose queue is full
        is waited out as the text engine's is (captions are made again from the start; the cache keeps any
        that were done)."""
        return await self._at_capacity_retried(plan, lambda _: self._turns(plan, request_id), "vision engine")

    async def _at_capacity_retried(self, plan: Plan, attempt, what: str):
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
                    raise DeadlineExceededError(
                        f"The {what} stayed at capacity for the request's whole deadline "
                        f"({plan.timeout:.0f}s): {error.message}"
                    ) from None
                if refusals == 1:
                    log.info("The %s is at capacity after the stream started; waiting for a slot", what)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.ADMISSION_RETRY_MAX_SECS)
                continue
            if refusals:
                log.info("The %s took the request after %d refusal(s) at capacity", what, refusals)
            return result

    def _proxy_vision(self, plan: Plan) -> dict | None:
        """What the text model was told about the images, when they were captioned (and `gateway.show_captions`)."""
        if plan.images is None or not self._show_captions:
            return None
        return plan.images.proxy_vision()

    async def complete(self, plan: Plan, request_id: str) -> Outcome:
        """Every choice's whole answer."""
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
        return Outcome(answers, [finished[i] for i in range(plan.n)], self._proxy_vision(plan))

    async def count_tokens(self, plan: Plan, request_id: str) -> int:
        """The prompt tokens the planned conversation would be accepted with, as its `Finished.prompt_tokens` would
        say: its images are described first, as for a real request (the vision engine caches the captions, so the
        request that usually follows a count does not describe them again)."""
        turns = await self._turns(plan, request_id)
        return await plan.client.count_tokens(
            turns,
            plan.conversation.options,
            prompt=plan.conversation.prompt,
            request_id=request_id,
            timeout=plan.timeout,
            affinity_key=plan.affinity_key,
        )

    async def stream(self, plan: Plan, request_id: str) -> LiveGeneration:
        """The live events. Text-only: first waits for the engine to accept the request (raising its refusal)."""
        if plan.images is not None:
            return LiveGeneration(self._events(plan, request_id, None), None)
        calls = self._calls(plan, await self._turns(plan, request_id), request_id)
        try:
            await calls.accept()
        except BaseException:
            await calls.aclose()
            raise
        return LiveGeneration(self._events(plan, request_id, calls), calls)

    async def _events(
        self, plan: Plan, request_id: str, accepted: ChoiceCalls | None
    ) -> AsyncGenerator[CoreEvent, None]:
        calls = accepted
        generation_started = plan.started
        try:
            if calls is None:
                describing = asyncio.ensure_future(self.described_turns(plan, request_id))
                try:
                    async for _ in ticks_until_done(describing, self._keepalive_secs):
                        yield KeepAlive()
                finally:
                    if not describing.done():  # the client left while images were being described
                        describing.cancel()
                if (captions := self._proxy_vision(plan)) is not None:
                    yield CaptionsMade(captions)  # a UI shows them while the answer is generated
                generation_started = time.monotonic()
                admitting = asyncio.ensure_future(self.admitted_calls(plan, describing.result(), request_id))
                try:
                    async for _ in ticks_until_done(admitting, self._keepalive_secs):
                        yield KeepAlive()  # the engine at capacity: we wait for it, the client waits with us
                    calls = admitting.result()
                finally:
                    if not admitting.done():
                        admitting.cancel()
                        await asyncio.gather(admitting, return_exceptions=True)
                    elif calls is None and not admitting.cancelled() and admitting.exception() is None:
                        await admitting.result().aclose()  # the client left just as the engine admitted it
            first = calls.next_soon()
            async for _ in ticks_until_done(first, self._keepalive_secs):
                yield KeepAlive()  # queued for a batch slot, or a long prefill
            item = first.result()
            self._metrics.ttft.labels(plan.entry.name).observe(time.monotonic() - plan.started)
            timings = plan.images.timings if plan.images is not None else None
            yield FirstToken(timings, (time.monotonic() - generation_started) * 1000)
            while item is not None:
                index, event = item
                if isinstance(event, Finished):
                    _check(event)
                yield Output(index, event)
                item = await calls.next()
        finally:
            if calls is not None:
                await calls.aclose()


async def ticks_until_done(work: asyncio.Future, interval: float):
    """One item every `interval` seconds until `work` is done (it is not awaited here: the caller takes its result
    or exception)."""
    while not work.done():
        await asyncio.wait({work}, timeout=interval)
        if not work.done():
            yield None


def _check(finished: Finished) -> Finished:
    if finished.reason in ("error", "cancelled"):
        raise InternalError(f"Generation failed: {finished.error_message or finished.reason}")
    return finished
