"""Protobuf <-> engine domain types. The only module of the text engine that knows both."""

from __future__ import annotations

from services.common.config import ResolvedSampling
from services.common.grpc_server import MODEL_STATE_TO_PB
from services.common.pb.proxyvision.v1 import common_pb2, text_engine_pb2 as pb

from .engine.engine import EngineInfo
from .engine.types import (Accepted, ChatTurn, Finished, FinishReason, GenerationEvent, GenerationRequest,
                           ReasoningDelta, SamplingRequest)  # fmt: skip

_FINISH = {
    FinishReason.STOP: pb.FINISH_REASON_STOP,
    FinishReason.LENGTH: pb.FINISH_REASON_LENGTH,
    FinishReason.CANCELLED: pb.FINISH_REASON_CANCELLED,
    FinishReason.ERROR: pb.FINISH_REASON_ERROR,
}


def _opt(message, field: str):
    return getattr(message, field) if message.HasField(field) else None


def request_from_pb(message: pb.GenerateRequest, request_id: str) -> GenerationRequest:
    """Build the domain request; unset optional fields stay None (model defaults apply). Sampling fields are
    mapped by name, so a new parameter is added to the proto and to `SamplingRequest`, nothing here."""
    s = message.sampling
    sampling = {f.name: tuple(getattr(s, f.name)) if f.is_repeated else _opt(s, f.name) for f in s.DESCRIPTOR.fields}
    return GenerationRequest(
        request_id=request_id,
        messages=tuple(ChatTurn(m.role, m.content, m.reasoning) for m in message.messages),
        sampling=SamplingRequest(**sampling),
    )


def event_to_pb(event: GenerationEvent) -> pb.GenerateResponse:
    """One stream message."""
    if isinstance(event, Finished):
        usage = pb.Usage(prompt_tokens=event.prompt_tokens, completion_tokens=event.completion_tokens,
                         reasoning_tokens=event.reasoning_tokens)  # fmt: skip
        return pb.GenerateResponse(
            finished=pb.Finished(finish_reason=_FINISH[event.reason], usage=usage, error_message=event.error_message)
        )
    if isinstance(event, Accepted):
        return pb.GenerateResponse(accepted=pb.Accepted(prompt_tokens=event.prompt_tokens))
    if isinstance(event, ReasoningDelta):
        return pb.GenerateResponse(reasoning=pb.ReasoningDelta(text=event.text))
    return pb.GenerateResponse(delta=pb.TextDelta(text=event.text))


def info_to_pb(info: EngineInfo) -> common_pb2.ModelInfo:
    """GetModelInfo's answer."""
    return common_pb2.ModelInfo(
        name=info.name,
        hf_id=info.source,
        max_context=info.max_context,
        state=MODEL_STATE_TO_PB[info.state],
        memory_budget_mib=info.memory_budget_mib,
        running=info.running,
        waiting=info.waiting,
        max_num_seqs=info.max_num_seqs,
        dtype=info.dtype,
        device=info.device,
        stand_in_for=info.stand_in_for,
        error=info.error,
        kv_cache_tokens=info.kv_cache_tokens,
        memory_budget_bytes=info.memory_budget_bytes,
        memory_used_bytes=info.memory_used_bytes,
        memory_free_bytes=max(0, info.memory_budget_bytes - info.memory_used_bytes),
        kv_cache_usage=info.kv_cache_usage,
        max_queue=info.max_queue,
        last_load_seconds=info.last_load_seconds,
        sampling_defaults=sampling_defaults_to_pb(info.sampling),
        quantization=info.quantization,
        status=info.status,
    )


def sampling_defaults_to_pb(sampling: ResolvedSampling | None) -> common_pb2.SamplingDefaults | None:
    """The effective defaults, field by field (the proto's fields are named as SamplingDefaults' are)."""
    if sampling is None:
        return None
    values = {k: v for k, v in sampling.values.model_dump().items() if v is not None}
    return common_pb2.SamplingDefaults(**values, sources=sampling.sources)
