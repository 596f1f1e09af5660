"""OpenAI's legacy Completions over the request core: each prompt of the request as a `Conversation` with a raw
prompt (no chat template), the core's events as a `text_completion` or a stream of `text_completion` chunks.

A batch of prompts is one plan per prompt, all planned (and, streamed, all accepted by the engine) before anything
is sent, so every refusal is still an HTTP status; their generations then run together. Choice `index` is
prompt index x n + choice, as OpenAI numbers them; usage counts every prompt once and every choice's tokens.
A stream carries one choice's new text per chunk, then its finish chunk; keep-alives are SSE comments, and after
the first byte an error is an SSE error event followed by [DONE], as for chat. The engine parses nothing out of a
raw completion: a reasoning model's think markers are part of the text.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from services.common.config import ModelEntry
from services.common.errors import InvalidRequestError
from services.common.generation import Finished, RawPrompt, TextDelta, TokenLogprob

from ...schemas.completions import CompletionRequest, PromptItem
from .. import chunks, sse
from ..conversation import Conversation
from ..core import CoreEvent, GenerationCore, KeepAlive, LiveGeneration, Output, Plan
from ..params import sampling_params

log = logging.getLogger(__name__)
T = TypeVar("T")


def completion_conversation(request: CompletionRequest, prompt: PromptItem) -> Conversation:
    """One prompt of a validated request as the core's conversation (no messages: the prompt goes as it is)."""
    text, token_ids = (prompt, ()) if isinstance(prompt, str) else ("", prompt)
    params = sampling_params(
        request, max_tokens=request.max_tokens, min_tokens=request.min_tokens, top_logprobs=request.logprobs
    )
    return Conversation(
        request.model,
        (),
        params,
        n=request.n or 1,
        user=request.user,
        messages_param="prompt",
        prompt=RawPrompt(text, token_ids, request.suffix or ""),
    )


class LegacyLogprobs:
    """One choice's logprobs in the legacy shape, built as its tokens arrive (a stream's chunks continue where the
    last one stopped): each token's text and logprob, its alternatives with the token itself among them (up to
    `logprobs` + 1 entries, as OpenAI documents), and `text_offset`, where it starts in the choice's text.

    Offsets count the characters the earlier tokens' bytes decode to: a character split over two tokens is one
    character, not the two replacement characters the tokens' own texts show."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._chars = 0

    def add(self, entries: Sequence[TokenLogprob]) -> dict:
        """The legacy `logprobs` object of these tokens, the next ones of this choice."""
        out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for entry in entries:
            top = {t.token: _finite(t.logprob) for t in entry.top_logprobs}
            top.setdefault(entry.token, _finite(entry.logprob))
            out["tokens"].append(entry.token)
            out["token_logprobs"].append(_finite(entry.logprob))
            out["top_logprobs"].append(top)
            out["text_offset"].append(self._chars)
            self._chars += len(self._decoder.decode(entry.bytes or entry.token.encode("utf-8")))
        return out


def _finite(logprob: float) -> float:
    return logprob if logprob >= chunks.MASKED_LOGPROB else chunks.MASKED_LOGPROB  # -inf and NaN are not JSON


def usage(finished: Sequence[Sequence[Finished]]) -> dict:
    """`usage` of a batch (each prompt's choices' `Finished`): each prompt counted once, every choice's tokens."""
    prompt = sum(choices[0].prompt_tokens for choices in finished)
    completion = sum(f.completion_tokens for choices in finished for f in choices)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


@dataclass
class CompletionsPlan:
    """A validated request, its prompts, and one planned conversation per prompt."""

    request: CompletionRequest
    prompts: list[PromptItem]
    cores: list[Plan]

    @property
    def entry(self) -> ModelEntry:
        """The model that answers."""
        return self.cores[0].entry

    @property
    def n(self) -> int:
        """Choices per prompt."""
        return self.cores[0].n

    def echoed(self, index: int) -> str:
        """What goes before choice `index`'s completion: its prompt with `echo` (text prompts only: the schema)."""
        prompt = self.prompts[index // self.n]
        return prompt if self.request.echo and isinstance(prompt, str) else ""


class Completions:
    """`POST /v1/completions` over the request core. `max_n` (gateway.max_n) bounds the engine calls of one
    request: prompts x n."""

    def __init__(self, core: GenerationCore, max_n: int) -> None:
        self.core = core
        self._max_n = max_n

    async def plan(self, request: CompletionRequest, client_timeout: float | None = None) -> CompletionsPlan:
        """Every prompt planned by the core (every refusal before a response starts)."""
        prompts, n = request.prompts, request.n or 1
        if len(prompts) > 1 and len(prompts) * n > self._max_n:
            raise InvalidRequestError(
                f"{len(prompts)} prompts x n={n} is {len(prompts) * n} completions; this server "
                f"generates at most {self._max_n} per request (gateway.max_n): send fewer "
                "prompts per request",
                param="prompt",
            )
        cores = [await self.core.plan(completion_conversation(request, p), client_timeout) for p in prompts]
        return CompletionsPlan(request, prompts, cores)

    async def complete(self, plan: CompletionsPlan, request_id: str) -> dict:
        """A non-streamed `text_completion`, every prompt's generations run together."""
        outcomes = await _together(self.core.complete(core, request_id) for core in plan.cores)
        with_logprobs = plan.request.logprobs is not None
        choices = []
        for p, outcome in enumerate(outcomes):
            for c, (answer, finished) in enumerate(zip(outcome.answers, outcome.finished, strict=True)):
                index = p * plan.n + c
                choices.append(
                    {
                        "index": index,
                        "text": plan.echoed(index) + "".join(answer.text),
                        "logprobs": LegacyLogprobs().add(answer.logprobs) if with_logprobs else None,
                        "finish_reason": finished.reason,
                    }
                )
        return {
            "id": completion_id(),
            "object": "text_completion",
            "created": int(time.time()),
            "model": plan.entry.name,
            "choices": choices,
            "usage": usage([outcome.finished for outcome in outcomes]),
        }

    async def stream(self, plan: CompletionsPlan, request_id: str) -> sse.FrameStream:
        """SSE frames, once the engine has accepted every prompt's generations (raising the first refusal)."""
        batch = _Batch(await _together(self.core.stream(core, request_id) for core in plan.cores), plan.n)
        return sse.FrameStream(sse.ending_with_done(self._frames(plan, batch), batch), batch)

    async def _frames(self, plan: CompletionsPlan, batch: _Batch) -> AsyncIterator[str]:
        chunk = _ChunkMaker(plan.entry.name)
        total = len(plan.prompts) * plan.n
        logprobs = [LegacyLogprobs() for _ in range(total)] if plan.request.logprobs is not None else None
        if plan.request.echo:
            for index in range(total):
                yield chunk.text(plan.echoed(index), index)
        finished: dict[int, Finished] = {}
        async for item in batch.events():
            if isinstance(item, KeepAlive):
                yield sse.KEEPALIVE
            elif isinstance(item, Output):  # (FirstToken and CaptionsMade say nothing to a raw prompt's client)
                index, event = item.index, item.event
                if isinstance(event, TextDelta) and (event.text or (logprobs and event.logprobs)):
                    yield chunk.text(event.text, index, logprobs[index].add(event.logprobs) if logprobs else None)
                elif isinstance(event, Finished):
                    finished[index] = event
                    yield chunk.finish(event.reason, index)
        options = plan.request.stream_options
        if options is not None and options.include_usage:
            per_prompt = [[finished[p * plan.n + c] for c in range(plan.n)] for p in range(len(plan.prompts))]
            yield chunk.usage(usage(per_prompt))


def completion_id() -> str:
    """A fresh `cmpl-...` id."""
    return f"cmpl-{uuid.uuid4().hex[:24]}"


class _ChunkMaker:
    """`text_completion` chunks sharing one id and timestamp; each carries one choice."""

    def __init__(self, model: str) -> None:
        self._base = {"id": completion_id(), "object": "text_completion", "created": int(time.time()), "model": model}

    def text(self, text: str, index: int, logprobs: dict | None = None) -> str:
        return self._choice({"index": index, "text": text, "logprobs": logprobs, "finish_reason": None})

    def finish(self, reason: str, index: int) -> str:
        return self._choice({"index": index, "text": "", "logprobs": None, "finish_reason": reason})

    def usage(self, usage: dict) -> str:
        return sse.event({**self._base, "choices": [], "usage": usage})

    def _choice(self, choice: dict) -> str:
        return sse.event({**self._base, "choices": [choice]})


async def _together(work: Iterable[Awaitable[T]]) -> list[T]:
    """Run every awaitable at once; the first failure (or our cancellation) cancels the rest, and closes what the
    finished ones opened (a started stream's engine calls), before it is raised."""
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if hasattr(result, "aclose"):
                await result.aclose()
        raise


_END = object()


class _Batch:
    """The live generations of a batch's prompts as one stream of events, each output's choice index shifted to its
    place in the batch (prompt p's choice c is p x n + c); owns their engine calls (`aclose`)."""

    def __init__(self, lives: list[LiveGeneration], n: int) -> None:
        self._lives = lives
        self._n = n

    async def events(self) -> AsyncIterator[CoreEvent]:
        """Every prompt's events as they come; the first failure of any prompt is raised."""
        if len(self._lives) == 1:  # the common case: no tasks, no queue
            async for event in self._lives[0]:
                yield event
            return
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(prompt: int, live: LiveGeneration) -> None:
            try:
                async for event in live:
                    queue.put_nowait((prompt, event))
            except Exception as error:  # noqa: BLE001 - handed to the reader, which raises it
                queue.put_nowait((prompt, error))
            finally:
                queue.put_nowait((prompt, _END))

        pumps = [asyncio.ensure_future(pump(p, live)) for p, live in enumerate(self._lives)]
        try:
            running = len(pumps)
            while running:
                prompt, event = await queue.get()
                if event is _END:
                    running -= 1
                elif isinstance(event, Exception):
                    raise event
                elif isinstance(event, Output):
                    yield Output(prompt * self._n + event.index, event.event)
                else:
                    yield event
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def aclose(self) -> None:
        """Stop every prompt's events and cancel its engine calls (no-ops once finished)."""
        for live in self._lives:
            await live.aclose()
