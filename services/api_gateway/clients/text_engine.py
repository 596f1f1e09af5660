"""Typed async client of a TextEngine. Protobuf stays in here; gRPC errors become our errors here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, fields
from typing import Protocol

import grpc

from services.common.grpc_server import REQUEST_ID_KEY
from services.common.pb.proxyvision.v1 import text_engine_pb2 as pb, text_engine_pb2_grpc

from .base import EngineClient, EngineModelInfo


@dataclass(frozen=True)
class ChatTurn:
    """One text-only message; an assistant turn may carry the reasoning its answer came with."""

    role: str
    content: str
    reasoning: str = ""


@dataclass(frozen=True)
class GenerationParams:
    """Sampling parameters, named as in the proto's `SamplingParams` and the request body (validated there,
    once); None leaves the model's default."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


@dataclass(frozen=True)
class Accepted:
    """The engine admitted the request (always its first event): the HTTP response may start."""

    prompt_tokens: int


@dataclass(frozen=True)
class TextDelta:
    """New answer text."""

    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    """New reasoning text."""

    text: str


@dataclass(frozen=True)
class Finished:
    """End of a generation."""

    finish_reason: str  # "stop" | "length" | "cancelled" | "error"
    prompt_tokens: int
    completion_tokens: int
    error_message: str = ""
    reasoning_tokens: int = 0  # of completion_tokens


EngineEvent = Accepted | TextDelta | ReasoningDelta | Finished


_FINISH = {pb.FINISH_REASON_STOP: "stop", pb.FINISH_REASON_LENGTH: "length",
           pb.FINISH_REASON_CANCELLED: "cancelled", pb.FINISH_REASON_ERROR: "error"}  # fmt: skip


class TextEngine(Protocol):
    """What the serving layer needs from a text engine: `TextEngineClient`, or a hand-written fake in tests."""

    model: str

    def generate(self, messages: Sequence[ChatTurn], params: GenerationParams, *, request_id: str,
                 timeout: float | None) -> AsyncIterator[EngineEvent]: ...  # fmt: skip

    async def model_info(self, timeout: float) -> EngineModelInfo: ...

    async def health(self, timeout: float) -> str: ...

    def abort_calls(self) -> int: ...


class TextEngineClient(EngineClient):
    """One text engine (one model)."""

    def __init__(self, channel: grpc.aio.Channel, model: str) -> None:
        super().__init__(channel, model, text_engine_pb2_grpc.TextEngineStub(channel))

    async def generate(self, messages: Sequence[ChatTurn], params: GenerationParams, *, request_id: str,
                       timeout: float | None) -> AsyncIterator[EngineEvent]:  # fmt: skip
        """Stream the engine's events: `Accepted`, deltas, then one `Finished`. Closing the iterator (aclose,
        or the consuming task being cancelled) cancels the call, so the engine frees the slot. gRPC
        failures are raised as `services.common.errors` classes."""
        call = self._stub.Generate(_request(self.model, messages, params, request_id), timeout=timeout,
                                   metadata=((REQUEST_ID_KEY, request_id),))  # fmt: skip
        async with self.tracked(call):
            async for response in call:
                event = _event(response)
                if event is not None:
                    yield event


def _event(response: pb.GenerateResponse) -> EngineEvent | None:
    """Our event for one stream message; None for a kind this gateway does not know (a newer engine)."""
    kind = response.WhichOneof("event")
    if kind == "delta":
        return TextDelta(response.delta.text)
    if kind == "reasoning":
        return ReasoningDelta(response.reasoning.text)
    if kind == "accepted":
        return Accepted(response.accepted.prompt_tokens)
    if kind != "finished":
        return None
    f = response.finished
    return Finished(_FINISH.get(f.finish_reason, "error"), f.usage.prompt_tokens, f.usage.completion_tokens,
                    f.error_message, f.usage.reasoning_tokens)  # fmt: skip


def _request(model: str, messages: Sequence[ChatTurn], params: GenerationParams, request_id: str) -> pb.GenerateRequest:
    # Mapped by name: a new parameter is a field of GenerationParams and of the proto, nothing here.
    sampling = pb.SamplingParams(**{f.name: getattr(params, f.name) for f in fields(GenerationParams)
                                    if getattr(params, f.name) is not None})  # fmt: skip
    return pb.GenerateRequest(
        request_id=request_id, model=model, sampling=sampling,
        messages=[pb.ChatMessage(role=m.role, content=m.content, reasoning=m.reasoning) for m in messages],
    )  # fmt: skip
