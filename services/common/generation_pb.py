"""The generation contract's one protobuf mapping, both ways.

The gateway's text engine client writes requests and reads events with it; the text engine reads requests and
writes events; both sides' image parts (Describe's images, a native model's content parts) go through it too.
Each correspondence (a finish reason and its proto enum, a message and its ChatMessage) is written once, so the
two sides cannot drift. Sampling parameters are mapped by field name: a new one is a field of `SamplingParams`
and of the proto's `SamplingParams`, nothing here.
"""

from __future__ import annotations

from dataclasses import fields

from .generation import (
    Accepted,
    ChatTurn,
    ContentPart,
    Detail,
    Finished,
    FinishReason,
    GenerationEvent,
    ImageBytes,
    RawPrompt,
    ReasoningDelta,
    ResponseFormat,
    ResponseFormatType,
    SamplingParams,
    TextDelta,
    TextPart,
    TokenLogprob,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolChoiceMode,
    TopLogprob,
)
from .pb.proxyvision.v1 import common_pb2, text_engine_pb2 as pb

# The enums by name: FinishReason.STOP <-> FINISH_REASON_STOP, and so on.
FINISH_TO_PB = {reason: pb.FinishReason.Value(f"FINISH_REASON_{reason.name}") for reason in FinishReason}
FINISH_FROM_PB = {value: reason for reason, value in FINISH_TO_PB.items()}
TOOL_CHOICE_TO_PB = {mode: pb.ToolChoice.Mode.Value(f"TOOL_CHOICE_{mode.name}") for mode in ToolChoiceMode}
TOOL_CHOICE_FROM_PB = {value: mode for mode, value in TOOL_CHOICE_TO_PB.items()}
RESPONSE_FORMAT_TO_PB = {
    kind: pb.ResponseFormat.Type.Value(f"RESPONSE_FORMAT_{kind.name}") for kind in ResponseFormatType
}
RESPONSE_FORMAT_FROM_PB = {value: kind for kind, value in RESPONSE_FORMAT_TO_PB.items()}
DETAIL_TO_PB = {detail: common_pb2.Detail.Value(f"DETAIL_{detail.name}") for detail in Detail}
# Unspecified (an older gateway) is auto, as is a value this side does not know.
DETAIL_FROM_PB = {common_pb2.DETAIL_UNSPECIFIED: Detail.AUTO} | {v: d for d, v in DETAIL_TO_PB.items()}


# Images ---------------------------------------------------------------------------------------------------
def image_to_pb(image: ImageBytes) -> common_pb2.ImageInput:
    """The proto `ImageInput` of one image."""
    return common_pb2.ImageInput(
        data=image.data, mime_type=image.mime_type, detail=DETAIL_TO_PB[image.detail], sha256=image.sha256
    )


def image_from_pb(image: common_pb2.ImageInput) -> ImageBytes:
    """One image of a request (a Describe's, or a native model's content part)."""
    return ImageBytes(image.data, image.mime_type, DETAIL_FROM_PB.get(image.detail, Detail.AUTO), image.sha256)


# Requests -------------------------------------------------------------------------------------------------
def sampling_to_pb(params: SamplingParams) -> pb.SamplingParams:
    """The set parameters (None leaves the model's default: the proto field stays unset)."""
    values = {f.name: getattr(params, f.name) for f in fields(SamplingParams)}
    return pb.SamplingParams(**{name: value for name, value in values.items() if value is not None})


def sampling_from_pb(message: pb.SamplingParams) -> SamplingParams:
    """Unset optional fields stay None; a map becomes a dict, a repeated field a tuple."""
    values = {}
    for f in message.DESCRIPTOR.fields:
        value = getattr(message, f.name)
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            values[f.name] = dict(value)
        elif f.is_repeated:
            values[f.name] = tuple(value)
        else:
            values[f.name] = value if message.HasField(f.name) else None
    return SamplingParams(**values)


def turn_to_pb(turn: ChatTurn) -> pb.ChatMessage:
    """One message of the conversation."""
    return pb.ChatMessage(
        role=turn.role,
        content=turn.content,
        reasoning=turn.reasoning,
        tool_call_id=turn.tool_call_id,
        name=turn.name,
        tool_calls=[pb.ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in turn.tool_calls],
        parts=[_part_to_pb(p) for p in turn.parts],
    )


def turn_from_pb(message: pb.ChatMessage) -> ChatTurn:
    """One message of the conversation; a part with neither text nor image is empty text."""
    return ChatTurn(
        message.role,
        message.content,
        message.reasoning,
        tuple(ToolCall(c.id, c.name, c.arguments) for c in message.tool_calls),
        message.tool_call_id,
        message.name,
        tuple(_part_from_pb(p) for p in message.parts),
    )


def _part_to_pb(part: ContentPart) -> pb.ContentPart:
    return pb.ContentPart(text=part.text) if isinstance(part, TextPart) else pb.ContentPart(image=image_to_pb(part))


def _part_from_pb(part: pb.ContentPart) -> ContentPart:
    return image_from_pb(part.image) if part.WhichOneof("part") == "image" else TextPart(part.text)


def tool_to_pb(tool: Tool) -> pb.Tool:
    """A function the model may call."""
    return pb.Tool(name=tool.name, description=tool.description, parameters=tool.parameters, strict=tool.strict)


def tool_from_pb(tool: pb.Tool) -> Tool:
    """A function the model may call."""
    return Tool(tool.name, tool.description, tool.parameters, tool.strict)


def tool_choice_to_pb(choice: ToolChoice) -> pb.ToolChoice:
    """`tool_choice`."""
    return pb.ToolChoice(mode=TOOL_CHOICE_TO_PB[choice.mode], name=choice.name)


def tool_choice_from_pb(choice: pb.ToolChoice) -> ToolChoice:
    """`tool_choice` (unset: auto)."""
    return ToolChoice(TOOL_CHOICE_FROM_PB[choice.mode], choice.name)


def response_format_to_pb(fmt: ResponseFormat) -> pb.ResponseFormat:
    """The answer's format."""
    return pb.ResponseFormat(type=RESPONSE_FORMAT_TO_PB[fmt.type], schema=fmt.schema, name=fmt.name)


def response_format_from_pb(fmt: pb.ResponseFormat) -> ResponseFormat:
    """The answer's format (unset: text)."""
    return ResponseFormat(RESPONSE_FORMAT_FROM_PB[fmt.type], fmt.schema, fmt.name)


def raw_prompt_to_pb(prompt: RawPrompt) -> pb.RawPrompt:
    """A raw prompt (legacy completions)."""
    return pb.RawPrompt(text=prompt.text, token_ids=prompt.token_ids, suffix=prompt.suffix)


def raw_prompt_from_pb(prompt: pb.RawPrompt) -> RawPrompt:
    """A raw prompt (legacy completions)."""
    return RawPrompt(prompt.text, tuple(prompt.token_ids), prompt.suffix)


# Events ---------------------------------------------------------------------------------------------------
def event_to_pb(event: GenerationEvent) -> pb.GenerateResponse:
    """One stream message."""
    if isinstance(event, Finished):
        usage = pb.Usage(
            prompt_tokens=event.prompt_tokens,
            completion_tokens=event.completion_tokens,
            reasoning_tokens=event.reasoning_tokens,
        )
        finished = pb.Finished(
            finish_reason=FINISH_TO_PB[event.reason],
            usage=usage,
            error_message=event.error_message,
            stop_sequence=event.stop_sequence,
        )
        return pb.GenerateResponse(finished=finished)
    if isinstance(event, Accepted):
        return pb.GenerateResponse(accepted=pb.Accepted(prompt_tokens=event.prompt_tokens))
    if isinstance(event, ReasoningDelta):
        return pb.GenerateResponse(reasoning=pb.ReasoningDelta(text=event.text))
    if isinstance(event, ToolCallDelta):
        call = pb.ToolCallDelta(index=event.index, id=event.id, name=event.name, arguments=event.arguments)
        return pb.GenerateResponse(tool_call=call)
    assert isinstance(event, TextDelta)
    return pb.GenerateResponse(
        delta=pb.TextDelta(text=event.text, logprobs=[_logprob_to_pb(t) for t in event.logprobs])
    )


def event_from_pb(response: pb.GenerateResponse) -> GenerationEvent | None:
    """Our event for one stream message; None for a kind this side does not know (a newer engine). A finish
    reason it does not know is an error."""
    kind = response.WhichOneof("event")
    if kind == "delta":
        return TextDelta(response.delta.text, tuple(_logprob_from_pb(t) for t in response.delta.logprobs))
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
        FINISH_FROM_PB.get(f.finish_reason, FinishReason.ERROR),
        f.usage.prompt_tokens,
        f.usage.completion_tokens,
        f.error_message,
        f.usage.reasoning_tokens,
        f.stop_sequence,
    )


def _logprob_to_pb(token: TokenLogprob) -> pb.TokenLogprob:
    return pb.TokenLogprob(
        token=token.token,
        logprob=token.logprob,
        bytes=token.bytes,
        top_logprobs=[pb.TopLogprob(token=t.token, logprob=t.logprob, bytes=t.bytes) for t in token.top_logprobs],
    )


def _logprob_from_pb(token: pb.TokenLogprob) -> TokenLogprob:
    top = tuple(TopLogprob(t.token, t.logprob, t.bytes) for t in token.top_logprobs)
    return TokenLogprob(token.token, token.logprob, token.bytes, top)
