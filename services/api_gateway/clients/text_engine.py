"""Typed async client of a TextEngine. Protobuf stays in here; gRPC errors become our errors here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, fields
from typing import Protocol

import grpc

from services.common.errors import EngineUnavailableError
from services.common.generation import (
    Accepted,
    ChatTurn,
    ContentPart,
    Finished,
    FinishReason,
    GenerationEvent,
    RawPrompt,
    ReasoningDelta,
    ResponseFormat,
    ResponseFormatType,
    SamplingParams,
    TextDelta,
    TextPart,
    TokenLogprob,
    Tool,
    ToolCallDelta,
    ToolChoice,
    TopLogprob,
)
from services.common.grpc_server import REQUEST_ID_KEY
from services.common.pb.proxyvision.v1 import text_engine_pb2 as pb, text_engine_pb2_grpc

from .base import EngineClient, EngineModelInfo
from .images import image_to_pb
from .routing import Routing


@dataclass(frozen=True)
class OutputOptions:
    """What the answer may or must be, beyond sampling: tools to call (`tool_choice` and `parallel_tool_calls` mean
    nothing without them) and the answer's format. None for `parallel_tool_calls` leaves the engine's default."""

    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = ToolChoice()
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat = ResponseFormat()


_FINISH = {
    pb.FINISH_REASON_STOP: FinishReason.STOP,
    pb.FINISH_REASON_LENGTH: FinishReason.LENGTH,
    pb.FINISH_REASON_TOOL_CALLS: FinishReason.TOOL_CALLS,
    pb.FINISH_REASON_CANCELLED: FinishReason.CANCELLED,
    pb.FINISH_REASON_ERROR: FinishReason.ERROR,
}


class TextEngine(Protocol):
    """What the serving layer needs from a text engine: `TextEngineClient`, or a hand-written fake in tests."""

    model: str

    def generate(
        self,
        messages: Sequence[ChatTurn],
        params: SamplingParams,
        *,
        request_id: str,
        timeout: float | None,
        options: OutputOptions = OutputOptions(),
        affinity_key: str = "",
        prompt: RawPrompt | None = None,
    ) -> AsyncIterator[GenerationEvent]: ...

    async def count_tokens(
        self,
        messages: Sequence[ChatTurn],
        options: OutputOptions = OutputOptions(),
        *,
        prompt: RawPrompt | None = None,
        request_id: str,
        timeout: float | None,
        affinity_key: str = "",
    ) -> int: ...

    async def model_info(self, timeout: float) -> EngineModelInfo: ...

    async def health(self, timeout: float) -> str: ...

    def abort_calls(self) -> int: ...


class TextEngineClient(EngineClient):
    """One text engine (one model), over one channel or routed over its replicas (clients/routing.py)."""

    def __init__(self, routing: Routing | grpc.aio.Channel, model: str) -> None:
        super().__init__(routing, model, text_engine_pb2_grpc.TextEngineStub)

    async def generate(
        self,
        messages: Sequence[ChatTurn],
        params: SamplingParams,
        *,
        request_id: str,
        timeout: float | None,
        options: OutputOptions = OutputOptions(),
        affinity_key: str = "",
        prompt: RawPrompt | None = None,
    ) -> AsyncIterator[GenerationEvent]:
        """Stream the engine's events: `Accepted`, deltas, then one `Finished`. Closing the iterator (aclose,
        or the consuming task being cancelled) cancels the call, so the engine frees the slot. gRPC
        failures are raised as `services.common.errors` classes. `affinity_key` names the conversation, for
        `routing.text: affinity` (its replica keeps the history in its prefix cache). With `prompt`, `messages`
        is empty and the engine completes the raw prompt (no tools: the engine refuses them)."""
        request = to_request(self.model, messages, params, options, request_id, prompt)
        metadata = ((REQUEST_ID_KEY, request_id),)
        responses = self.routed(
            affinity_key, lambda stub, left: stub.Generate(request, timeout=left, metadata=metadata), timeout
        )
        async with aclosing(responses):
            async for response in responses:
                event = to_event(response)
                if event is not None:
                    yield event

    async def count_tokens(
        self,
        messages: Sequence[ChatTurn],
        options: OutputOptions = OutputOptions(),
        *,
        prompt: RawPrompt | None = None,
        request_id: str,
        timeout: float | None,
        affinity_key: str = "",
    ) -> int:
        """The prompt tokens `generate` would be accepted with for the same messages, tools and raw prompt (the
        engine's chat template and tokenizer; nothing generated, an idle-unloaded model not loaded). Routed and
        failed over as `generate` is; errors are generate's (NotFound, InvalidRequest...)."""
        request = to_request(self.model, messages, SamplingParams(), options, request_id, prompt)
        metadata = ((REQUEST_ID_KEY, request_id),)

        def start(stub, left: float | None) -> _Unary:
            return _Unary(stub.CountTokens(request, timeout=left, metadata=metadata))

        answers = self.routed(affinity_key, start, timeout)
        async with aclosing(answers):
            async for answer in answers:
                return answer.prompt_tokens
        raise EngineUnavailableError("The engine ended CountTokens without an answer")


class _Unary:
    """A unary call in the shape `EngineClient.attempt` takes a streaming one: iterated for its one answer, and
    cancellable (a cancelled count ends like a cancelled stream)."""

    def __init__(self, call: grpc.aio.UnaryUnaryCall) -> None:
        self._call = call

    def cancel(self) -> bool:
        return self._call.cancel()

    async def __aiter__(self):
        yield await self._call


def to_event(response: pb.GenerateResponse) -> GenerationEvent | None:
    """Our event for one stream message; None for a kind this gateway does not know (a newer engine)."""
    kind = response.WhichOneof("event")
    if kind == "delta":
        return TextDelta(response.delta.text, tuple(_logprob(lp) for lp in response.delta.logprobs))
    if kind == "reasoning":
        return ReasoningDelta(response.reasoning.text)
    if kind == "tool_call":
        call = response.tool_call
        return ToolCallDelta(call.index, call.id, call.name, call.arguments)
    if kind == "accepted":
        return Accepted(response.accepted.prompt_tokens)
    if kind != "finished":
        return None
    f = response.finished
    return Finished(
        _FINISH.get(f.finish_reason, FinishReason.ERROR),
        f.usage.prompt_tokens,
        f.usage.completion_tokens,
        f.error_message,
        f.usage.reasoning_tokens,
        f.stop_sequence,
    )


def _logprob(lp: pb.TokenLogprob) -> TokenLogprob:
    return TokenLogprob(
        lp.token, lp.logprob, lp.bytes, tuple(TopLogprob(t.token, t.logprob, t.bytes) for t in lp.top_logprobs)
    )


def to_request(
    model: str,
    messages: Sequence[ChatTurn],
    params: SamplingParams,
    options: OutputOptions,
    request_id: str,
    prompt: RawPrompt | None = None,
) -> pb.GenerateRequest:
    """The GenerateRequest of one engine call (of Generate or CountTokens)."""
    # Mapped by name: a new parameter is a field of SamplingParams and of the proto, nothing here.
    sampling = pb.SamplingParams(
        **{f.name: getattr(params, f.name) for f in fields(SamplingParams) if getattr(params, f.name) is not None}
    )
    request = pb.GenerateRequest(
        request_id=request_id,
        model=model,
        sampling=sampling,
        messages=[_message(m) for m in messages],
        parallel_tool_calls=options.parallel_tool_calls,
    )
    if options.tools:  # tool_choice means nothing without tools; left unset, as is a text response_format
        request.tools.extend(
            pb.Tool(name=t.name, description=t.description, parameters=t.parameters, strict=t.strict)
            for t in options.tools
        )
        choice = options.tool_choice
        request.tool_choice.CopyFrom(
            pb.ToolChoice(mode=pb.ToolChoice.Mode.Value(f"TOOL_CHOICE_{choice.mode.name}"), name=choice.name)
        )
    fmt = options.response_format
    if fmt.type is not ResponseFormatType.TEXT:
        request.response_format.CopyFrom(
            pb.ResponseFormat(
                type=pb.ResponseFormat.Type.Value(f"RESPONSE_FORMAT_{fmt.type.name}"), schema=fmt.schema, name=fmt.name
            )
        )
    if prompt is not None:
        request.prompt.CopyFrom(pb.RawPrompt(text=prompt.text, token_ids=prompt.token_ids, suffix=prompt.suffix))
    return request


def _message(turn: ChatTurn) -> pb.ChatMessage:
    return pb.ChatMessage(
        role=turn.role,
        content=turn.content,
        reasoning=turn.reasoning,
        tool_call_id=turn.tool_call_id,
        name=turn.name,
        tool_calls=[pb.ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in turn.tool_calls],
        parts=[_part(p) for p in turn.parts],
    )


def _part(part: ContentPart) -> pb.ContentPart:
    return pb.ContentPart(text=part.text) if isinstance(part, TextPart) else pb.ContentPart(image=image_to_pb(part))
