"""Protobuf <-> engine domain types. The only module of the text engine that knows both; the generation
contract's own mapping (messages, sampling, events) is services/common/generation_pb.py, shared with the gateway."""

from __future__ import annotations

from services.common.config import ResolvedSampling
from services.common.generation_pb import (
    event_to_pb,
    raw_prompt_from_pb,
    response_format_from_pb,
    sampling_from_pb,
    tool_choice_from_pb,
    tool_from_pb,
    turn_from_pb,
)
from services.common.model_info import model_info_to_pb
from services.common.pb.proxyvision.v1 import common_pb2, text_engine_pb2 as pb

from .engine.engine import EngineInfo
from .engine.types import GenerationRequest


def request_from_pb(message: pb.GenerateRequest, request_id: str) -> GenerationRequest:
    """Build the domain request; unset optional fields stay None (model defaults apply)."""
    return GenerationRequest(
        request_id=request_id,
        messages=tuple(turn_from_pb(m) for m in message.messages),
        sampling=sampling_from_pb(message.sampling),
        tools=tuple(tool_from_pb(t) for t in message.tools),
        tool_choice=tool_choice_from_pb(message.tool_choice),
        parallel_tool_calls=True if not message.HasField("parallel_tool_calls") else message.parallel_tool_calls,
        response_format=response_format_from_pb(message.response_format),
        prompt=raw_prompt_from_pb(message.prompt) if message.HasField("prompt") else None,
    )


def info_to_pb(info: EngineInfo) -> common_pb2.ModelInfo:
    """GetModelInfo's answer."""
    return model_info_to_pb(
        info,
        kv_cache_tokens=info.kv_cache_tokens,
        kv_cache_usage=info.kv_cache_usage,
        sampling_defaults=sampling_defaults_to_pb(info.sampling),
        quantization=info.quantization,
        vision_mode=info.vision_mode,
    )


def sampling_defaults_to_pb(sampling: ResolvedSampling | None) -> common_pb2.SamplingDefaults | None:
    """The effective defaults, field by field (the proto's fields are named as SamplingDefaults' are)."""
    if sampling is None:
        return None
    values = {k: v for k, v in sampling.values.model_dump().items() if v is not None}
    return common_pb2.SamplingDefaults(**values, sources=sampling.sources)


__all__ = ["event_to_pb", "info_to_pb", "request_from_pb", "sampling_defaults_to_pb"]
