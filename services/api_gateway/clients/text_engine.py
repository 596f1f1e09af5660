"""Typed async client of a TextEngine. Protobuf stays in here; gRPC errors become our errors here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass

import grpc

from services.common.errors import EngineUnavailableError
from services.common.generation import (
    ChatTurn,
    GenerationEvent,
    RawPrompt,
    ResponseFormat,
    ResponseFormatType,
    SamplingParams,
    Tool,
    ToolChoice,
)
from services.common.generation_pb import (
    event_from_pb,
    raw_prompt_to_pb,
    response_format_to_pb,
    sampling_to_pb,
    tool_choice_to_pb,
    tool_to_pb,
    turn_to_pb,
)
from services.common.grpc_server import REQUEST_ID_KEY
from services.common.pb.proxyvision.v1 import text_engine_pb2 as pb, text_engine_pb2_grpc

from .base import EngineClient
from .routing import Routing


@dataclass(frozen=True)
class OutputOptions:
    """What the answer may or must be, beyond sampling: tools to call (`tool_choice` and `parallel_tool_calls` mean
    nothing without them) and the answer's format. None for `parallel_tool_calls` leaves the engine's default."""

    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = ToolChoice()
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat = ResponseFormat()


class TextEngineClient(EngineClient):
    """One text engine (one model), over one channel or routed over its replicas (clients/routing.py).

    The serving layer needs only this class's public methods: the gateway's unit tests give it a hand-written fake
    with the same ones (tests/unit/gateway/fakes.py)."""

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
                event = event_from_pb(response)
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


def to_request(
    model: str,
    messages: Sequence[ChatTurn],
    params: SamplingParams,
    options: OutputOptions,
    request_id: str,
    prompt: RawPrompt | None = None,
) -> pb.GenerateRequest:
    """The GenerateRequest of one engine call (of Generate or CountTokens)."""
    request = pb.GenerateRequest(
        request_id=request_id,
        model=model,
        sampling=sampling_to_pb(params),
        messages=[turn_to_pb(m) for m in messages],
        parallel_tool_calls=options.parallel_tool_calls,
    )
    if options.tools:  # tool_choice means nothing without tools; left unset, as is a text response_format
        request.tools.extend(tool_to_pb(t) for t in options.tools)
        request.tool_choice.CopyFrom(tool_choice_to_pb(options.tool_choice))
    if options.response_format.type is not ResponseFormatType.TEXT:
        request.response_format.CopyFrom(response_format_to_pb(options.response_format))
    if prompt is not None:
        request.prompt.CopyFrom(raw_prompt_to_pb(prompt))
    return request
