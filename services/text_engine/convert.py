"""Protobuf <-> engine domain types. The only module of the text engine that knows both."""

from __future__ import annotations

from services.common.config import ResolvedSampling
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
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolChoiceMode,
)
from services.common.grpc_server import MODEL_STATE_TO_PB, image_from_pb
from services.common.pb.proxyvision.v1 import common_pb2, text_engine_pb2 as pb

from .engine.engine import EngineInfo
from .engine.types import GenerationRequest

_FINISH = {
    FinishReason.STOP: pb.FINISH_REASON_STOP,
    FinishReason.LENGTH: pb.FINISH_REASON_LENGTH,
    FinishReason.CANCELLED: pb.FINISH_REASON_CANCELLED,
    FinishReason.ERROR: pb.FINISH_REASON_ERROR,
    FinishReason.TOOL_CALLS: pb.FINISH_REASON_TOOL_CALLS,
}
_TOOL_CHOICE = {
    pb.ToolChoice.TOOL_CHOICE_AUTO: ToolChoiceMode.AUTO,
    pb.ToolChoice.TOOL_CHOICE_NONE: ToolChoiceMode.NONE,
    pb.ToolChoice.TOOL_CHOICE_REQUIRED: ToolChoiceMode.REQUIRED,
    pb.ToolChoice.TOOL_CHOICE_NAMED: ToolChoiceMode.NAMED,
}
_RESPONSE_FORMAT = {
    pb.ResponseFormat.RESPONSE_FORMAT_TEXT: ResponseFormatType.TEXT,
    pb.ResponseFormat.RESPONSE_FORMAT_JSON_OBJECT: ResponseFormatType.JSON_OBJECT,
    pb.ResponseFormat.RESPONSE_FORMAT_JSON_SCHEMA: ResponseFormatType.JSON_SCHEMA,
}


def part_from_pb(part: pb.ContentPart) -> ContentPart:
    """One content part; a part with neither text nor image is empty text."""
    return image_from_pb(part.image) if part.WhichOneof("part") == "image" else TextPart(part.text)


def _opt(message, field: str):
    return getattr(message, field) if message.HasField(field) else None


def _field_value(message, f):
    """A field as a plain value: a map as a dict, a repeated field as a tuple, an unset optional as None."""
    if f.message_type is not None and f.message_type.GetOptions().map_entry:
        return dict(getattr(message, f.name))
    return tuple(getattr(message, f.name)) if f.is_repeated else _opt(message, f.name)


def request_from_pb(message: pb.GenerateRequest, request_id: str) -> GenerationRequest:
    """Build the domain request; unset optional fields stay None (model defaults apply). Sampling fields are
    mapped by name, so a new parameter is added to the proto and to `SamplingParams`, nothing here."""
    s = message.sampling
    sampling = {f.name: _field_value(s, f) for f in s.DESCRIPTOR.fields}
    fmt = message.response_format
    return GenerationRequest(
        request_id=request_id,
        messages=tuple(
            ChatTurn(
                m.role,
                m.content,
                m.reasoning,
                tuple(ToolCall(c.id, c.name, c.arguments) for c in m.tool_calls),
                m.tool_call_id,
                m.name,
                tuple(part_from_pb(p) for p in m.parts),
            )
            for m in message.messages
        ),
        sampling=SamplingParams(**sampling),
        tools=tuple(Tool(t.name, t.description, t.parameters, t.strict) for t in message.tools),
        tool_choice=ToolChoice(_TOOL_CHOICE[message.tool_choice.mode], message.tool_choice.name),
        parallel_tool_calls=True if not message.HasField("parallel_tool_calls") else message.parallel_tool_calls,
        response_format=ResponseFormat(_RESPONSE_FORMAT[fmt.type], fmt.schema, fmt.name),
        prompt=raw_prompt_from_pb(message.prompt) if message.HasField("prompt") else None,
    )


def raw_prompt_from_pb(prompt: pb.RawPrompt) -> RawPrompt:
    """A raw prompt (legacy completions)."""
    return RawPrompt(prompt.text, tuple(prompt.token_ids), prompt.suffix)


def event_to_pb(event: GenerationEvent) -> pb.GenerateResponse:
    """One stream message."""
    if isinstance(event, Finished):
        usage = pb.Usage(
            prompt_tokens=event.prompt_tokens,
            completion_tokens=event.completion_tokens,
            reasoning_tokens=event.reasoning_tokens,
        )
        return pb.GenerateResponse(
            finished=pb.Finished(
                finish_reason=_FINISH[event.reason],
                usage=usage,
                error_message=event.error_message,
                stop_sequence=event.stop_sequence,
            )
        )
    if isinstance(event, Accepted):
        return pb.GenerateResponse(accepted=pb.Accepted(prompt_tokens=event.prompt_tokens))
    if isinstance(event, ReasoningDelta):
        return pb.GenerateResponse(reasoning=pb.ReasoningDelta(text=event.text))
    if isinstance(event, ToolCallDelta):
        return pb.GenerateResponse(
            tool_call=pb.ToolCallDelta(index=event.index, id=event.id, name=event.name, arguments=event.arguments)
        )
    assert isinstance(event, TextDelta)
    logprobs = [
        pb.TokenLogprob(
            token=t.token,
            logprob=t.logprob,
            bytes=t.bytes,
            top_logprobs=[pb.TopLogprob(token=a.token, logprob=a.logprob, bytes=a.bytes) for a in t.top_logprobs],
        )
        for t in event.logprobs
    ]
    return pb.GenerateResponse(delta=pb.TextDelta(text=event.text, logprobs=logprobs))


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
        vision_mode=info.vision_mode,
        backend=info.backend,
    )


def sampling_defaults_to_pb(sampling: ResolvedSampling | None) -> common_pb2.SamplingDefaults | None:
    """The effective defaults, field by field (the proto's fields are named as SamplingDefaults' are)."""
    if sampling is None:
        return None
    values = {k: v for k, v in sampling.values.model_dump().items() if v is not None}
    return common_pb2.SamplingDefaults(**values, sources=sampling.sources)
