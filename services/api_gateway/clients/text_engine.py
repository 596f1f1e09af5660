"""Typed async client of a TextEngine. Protobuf stays in here; gRPC errors become our errors here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, fields
from typing import Protocol

import grpc

from services.common.errors import EngineUnavailableError
from services.common.grpc_server import REQUEST_ID_KEY
from services.common.pb.proxyvision.v1 import text_engine_pb2 as pb, text_engine_pb2_grpc

from .base import EngineClient, EngineModelInfo
from .images import ImageBytes, image_to_pb
from .routing import Routing


@dataclass(frozen=True)
class ToolCall:
    """A call an earlier answer made (in the history sent back to the model)."""

    id: str
    name: str
    arguments: str  # JSON text


@dataclass(frozen=True)
class ChatTurn:
    """One message; an assistant turn may carry the reasoning and the tool calls its answer came with; a tool
    turn answers the call `tool_call_id` (and may name its function).

    A user turn for a natively seeing model (`vision_mode: native`) may carry `parts` instead of `content`: its
    text pieces (str) and images in the order the user sent them. Every other turn is text only."""

    role: str
    content: str
    reasoning: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""
    name: str = ""
    parts: tuple[str | ImageBytes, ...] = ()


@dataclass(frozen=True)
class GenerationParams:
    """Sampling parameters, named as in the proto's `SamplingParams` (validated in the request schema,
    once); None leaves the model's default. Mapped to the proto by name: a new parameter is a field here
    and there (a dict maps to a proto map, a tuple to a repeated field)."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    min_p: float | None = None
    min_tokens: int | None = None
    logit_bias: dict[int, float] | None = None
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool | None = None
    top_logprobs: int | None = None  # set (0..20): return logprobs, with this many alternatives


@dataclass(frozen=True)
class ToolSpec:
    """A function the model may call; `parameters` is its JSON Schema as JSON text ('' for any object)."""

    name: str
    description: str = ""
    parameters: str = ""
    strict: bool = False


@dataclass(frozen=True)
class OutputOptions:
    """What the answer may or must be, beyond sampling: tools to call and the answer's format.

    `tool_choice` is "auto", "none", "required" or "named" (then `tool_name` says which); `response_format`
    is "text", "json_object" or "json_schema" (then `schema` is the JSON Schema as JSON text)."""

    tools: tuple[ToolSpec, ...] = ()
    tool_choice: str = "auto"
    tool_name: str = ""
    parallel_tool_calls: bool | None = None
    response_format: str = "text"
    schema: str = ""
    schema_name: str = ""


@dataclass(frozen=True)
class RawPrompt:
    """A prompt sent as it is, instead of a conversation (legacy /v1/completions): `text` (the engine tokenizes it
    with the tokenizer's defaults) or `token_ids` (used as given), not both; a `suffix` asks for fill-in-the-middle
    (models with FIM tokens only). The engine applies no chat template and parses no reasoning or tool calls out of
    the answer: it is all `TextDelta`s."""

    text: str = ""
    token_ids: tuple[int, ...] = ()
    suffix: str = ""


@dataclass(frozen=True)
class Accepted:
    """The engine admitted the request (always its first event): the HTTP response may start."""

    prompt_tokens: int


@dataclass(frozen=True)
class TopLogprob:
    """An alternative at one position."""

    token: str
    logprob: float
    bytes: bytes


@dataclass(frozen=True)
class TokenLogprob:
    """One answer token's log-probability and its most likely alternatives."""

    token: str
    logprob: float
    bytes: bytes
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class TextDelta:
    """New answer text; with logprobs requested, one entry per token it came from."""

    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class ReasoningDelta:
    """New reasoning text."""

    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of tool call `index`: its first piece carries the id and the name, later ones fragments of
    the arguments' JSON text."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass(frozen=True)
class Finished:
    """End of a generation."""

    finish_reason: str  # "stop" | "length" | "tool_calls" | "cancelled" | "error"
    prompt_tokens: int
    completion_tokens: int
    error_message: str = ""
    reasoning_tokens: int = 0  # of completion_tokens
    stop_sequence: str = ""  # the stop string that ended the answer ("" when none did)


EngineEvent = Accepted | TextDelta | ReasoningDelta | ToolCallDelta | Finished


_FINISH = {
    pb.FINISH_REASON_STOP: "stop",
    pb.FINISH_REASON_LENGTH: "length",
    pb.FINISH_REASON_TOOL_CALLS: "tool_calls",
    pb.FINISH_REASON_CANCELLED: "cancelled",
    pb.FINISH_REASON_ERROR: "error",
}


class TextEngine(Protocol):
    """What the serving layer needs from a text engine: `TextEngineClient`, or a hand-written fake in tests."""

    model: str

    def generate(
        self,
        messages: Sequence[ChatTurn],
        params: GenerationParams,
        *,
        request_id: str,
        timeout: float | None,
        options: OutputOptions = OutputOptions(),
        affinity_key: str = "",
        prompt: RawPrompt | None = None,
    ) -> AsyncIterator[EngineEvent]: ...

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
        params: GenerationParams,
        *,
        request_id: str,
        timeout: float | None,
        options: OutputOptions = OutputOptions(),
        affinity_key: str = "",
        prompt: RawPrompt | None = None,
    ) -> AsyncIterator[EngineEvent]:
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
        request = to_request(self.model, messages, GenerationParams(), options, request_id, prompt)
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


def to_event(response: pb.GenerateResponse) -> EngineEvent | None:
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
        _FINISH.get(f.finish_reason, "error"),
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
    params: GenerationParams,
    options: OutputOptions,
    request_id: str,
    prompt: RawPrompt | None = None,
) -> pb.GenerateRequest:
    """The GenerateRequest of one engine call (of Generate or CountTokens)."""
    # Mapped by name: a new parameter is a field of GenerationParams and of the proto, nothing here.
    sampling = pb.SamplingParams(
        **{f.name: getattr(params, f.name) for f in fields(GenerationParams) if getattr(params, f.name) is not None}
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
        request.tool_choice.CopyFrom(
            pb.ToolChoice(
                mode=pb.ToolChoice.Mode.Value(f"TOOL_CHOICE_{options.tool_choice.upper()}"), name=options.tool_name
            )
        )
    if options.response_format != "text":
        request.response_format.CopyFrom(
            pb.ResponseFormat(
                type=pb.ResponseFormat.Type.Value(f"RESPONSE_FORMAT_{options.response_format.upper()}"),
                schema=options.schema,
                name=options.schema_name,
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


def _part(part: str | ImageBytes) -> pb.ContentPart:
    return pb.ContentPart(text=part) if isinstance(part, str) else pb.ContentPart(image=image_to_pb(part))
