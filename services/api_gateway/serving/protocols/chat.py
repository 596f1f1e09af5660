"""OpenAI Chat Completions over the request core: the request as a `Conversation`, the core's events as a
`chat.completion` or a stream of `chat.completion.chunk` events.

A stream opens with each choice's role chunk at once, writes keep-alives as SSE comments, and after the first byte
an error as an SSE error event followed by [DONE]. With `gateway.show_captions`, what the text model was told about
each image goes out as `proxy_vision`: at the top level of a `chat.completion`, and in one chunk of a stream, the
one sent as soon as the captions exist (an empty delta for choice 0). Each chunk carries one choice; usage counts
the prompt once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

from services.common.config import ReasoningField
from services.common.generation import (
    Detail,
    Finished,
    ReasoningDelta,
    ResponseFormat,
    SamplingParams,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolChoiceMode,
)

from ...clients.text_engine import OutputOptions
from ...schemas.chat import ChatCompletionRequest, ChatMessage, TextPart
from ...schemas.tools import JsonSchemaFormat, NamedToolChoice
from .. import chunks, sse
from ..conversation import Conversation, ImageInput, Message, Part
from ..core import CaptionsMade, FirstToken, GenerationCore, KeepAlive, LiveGeneration, Output
from ..params import response_format, sampling_params, tool_spec
from .plan import ProtocolPlan

log = logging.getLogger(__name__)


def generation_params(request: ChatCompletionRequest) -> SamplingParams:
    """The engine's sampling parameters from a validated request."""
    return sampling_params(
        request,
        max_tokens=request.completion_limit,
        min_tokens=request.min_tokens,
        # The engine returns logprobs when top_logprobs is set: logprobs true alone means 0 alternatives.
        top_logprobs=(request.top_logprobs or 0) if request.logprobs else None,
    )


def output_options(request: ChatCompletionRequest) -> OutputOptions:
    """Tools, tool_choice, parallel_tool_calls and response_format for the engine."""
    tools = tuple(
        tool_spec(t.function.name, t.function.description, t.function.parameters, t.function.strict)
        for t in request.tools or ()
    )
    choice = request.tool_choice or "auto"
    fmt = request.response_format
    return OutputOptions(
        tools=tools,
        tool_choice=ToolChoice(ToolChoiceMode.NAMED, choice.function.name)
        if isinstance(choice, NamedToolChoice)
        else ToolChoice(ToolChoiceMode(choice)),
        parallel_tool_calls=request.parallel_tool_calls,
        response_format=response_format(fmt.type, fmt.json_schema if isinstance(fmt, JsonSchemaFormat) else None)
        if fmt is not None
        else ResponseFormat(),
    )


def chat_message(message: ChatMessage, index: int) -> Message:
    """One chat message, its parts in order (an image part names where it is, for a 400 about it)."""
    if message.content is None:
        parts: tuple[Part, ...] = ()
    elif isinstance(message.content, str):
        parts = (message.content,)
    else:
        parts = tuple(
            p.text
            if isinstance(p, TextPart)
            else ImageInput(p.image.url, Detail(p.image.detail), f"messages[{index}].content[{j}].image_url")
            for j, p in enumerate(message.content)
        )
    return Message(
        message.role,
        parts,
        message.reasoning_text,
        tool_calls=tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or ()),
        tool_call_id=message.tool_call_id or "",
        name=message.name or "",
    )


def chat_conversation(request: ChatCompletionRequest) -> Conversation:
    """A validated chat request as the core's conversation."""
    return Conversation(
        request.model,
        tuple(chat_message(m, i) for i, m in enumerate(request.messages)),
        generation_params(request),
        output_options(request),
        n=request.n or 1,
        user=request.user,
    )


ChatPlan = ProtocolPlan[ChatCompletionRequest]


class ChatCompletions:
    """`POST /v1/chat/completions` over the request core."""

    def __init__(self, core: GenerationCore, reasoning_field: ReasoningField = "reasoning_content") -> None:
        self.core = core
        self._reasoning_field = reasoning_field

    async def plan(self, request: ChatCompletionRequest, client_timeout: float | None = None) -> ChatPlan:
        """The request planned by the core (every refusal before a response starts)."""
        return ChatPlan(request, await self.core.plan(chat_conversation(request), client_timeout))

    async def complete(self, plan: ChatPlan, request_id: str) -> dict:
        """A non-streamed `chat.completion` (with `proxy_vision` when its images were captioned)."""
        outcome = await self.core.complete(plan.core, request_id)
        request = plan.request
        return {
            "id": chunks.completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": plan.entry.name,
            "system_fingerprint": None,
            "choices": [
                answer.choice(
                    i,
                    outcome.finished[i],
                    include_reasoning=request.include_reasoning,
                    reasoning_field=self._reasoning_field,
                    logprobs=bool(request.logprobs),
                )
                for i, answer in enumerate(outcome.answers)
            ],
            "usage": chunks.usage(outcome.finished),
            **({"proxy_vision": outcome.proxy_vision} if outcome.proxy_vision is not None else {}),
        }

    async def stream(self, plan: ChatPlan, request_id: str) -> sse.FrameStream:
        """SSE frames. Text-only: first waits for the engine to accept the request (raising its refusal)."""
        live = await self.core.stream(plan.core, request_id)
        return sse.FrameStream(sse.ending_with_done(self._frames(plan, live), live), live)

    async def _frames(self, plan: ChatPlan, live: LiveGeneration) -> AsyncIterator[str]:
        chunk = chunks.ChunkMaker(plan.entry.name, self._reasoning_field)
        include_reasoning = plan.request.include_reasoning
        with_logprobs = bool(plan.request.logprobs)
        for index in range(plan.n):
            yield chunk.delta({"role": "assistant", "content": ""}, index)
        finished: dict[int, Finished] = {}
        async for item in live:
            if isinstance(item, KeepAlive):
                yield sse.KEEPALIVE
            elif isinstance(item, CaptionsMade):
                # Its own chunk, so the per-token frames stay prebuilt (chunks.ChunkMaker).
                yield chunk.annotation({"proxy_vision": item.proxy_vision})
            elif isinstance(item, FirstToken):
                if item.timings is not None:
                    yield sse.timing_comment(item.timings, item.text_ttft_ms)
            elif isinstance(item, Output):
                for frame in self._output_frames(chunk, item, include_reasoning, with_logprobs, finished):
                    yield frame
        if plan.request.stream_options and plan.request.stream_options.include_usage:
            yield chunk.usage(chunks.usage([finished[i] for i in range(plan.n)]))

    @staticmethod
    def _output_frames(
        chunk: chunks.ChunkMaker,
        item: Output,
        include_reasoning: bool,
        with_logprobs: bool,
        finished: dict[int, Finished],
    ) -> list[str]:
        index, event = item.index, item.event
        if isinstance(event, TextDelta):
            if event.text or (with_logprobs and event.logprobs):
                return [chunk.content(event.text, index, event.logprobs if with_logprobs else None)]
        elif isinstance(event, ReasoningDelta):
            if event.text and include_reasoning:
                return [chunk.reasoning(event.text, index)]
        elif isinstance(event, ToolCallDelta):
            return chunk.tool_call(event, index)
        elif isinstance(event, Finished):
            finished[index] = event
            return [chunk.finish(event.reason, index)]
        return []
