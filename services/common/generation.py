"""The domain types of one generation, defined once for the gateway (clients/, serving/) and the text engine
(engine/): what to generate from (chat turns with their text and images, or a raw prompt), how to sample, what the
answer may be (tools, response format), and the events a generation streams back.

Protobuf stays at the edges: the gateway's `clients/text_engine.py` and the engine's `convert.py` are the only
modules that map these to and from the proto. The enums are `StrEnum`s: a member compares, hashes, formats and
serializes as its value ("stop", "low"...), so string comparisons and JSON output read the same as plain strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

MAX_TOP_LOGPROBS = 20  # alternatives per token: OpenAI's bound (Chat, Responses), vLLM's default max_logprobs


class Detail(StrEnum):
    """How much of an image the model looks at (`detail` of an OpenAI image part)."""

    LOW = "low"
    HIGH = "high"
    AUTO = "auto"


# The request schemas' type of `detail`: validated (and described in the OpenAPI document) as plain strings.
DetailName = Literal[tuple(d.value for d in Detail)]


@dataclass(frozen=True)
class ImageBytes:
    """An image's encoded bytes (checked by the gateway: fetched or decoded from a data URL, sniffed, size-checked;
    decoded by the engine that looks at it), with its sniffed type, its `detail` and the hex sha256 of `data`."""

    data: bytes
    mime_type: str = ""
    detail: Detail = Detail.AUTO
    sha256: str = ""


@dataclass(frozen=True)
class TextPart:
    """Text of a message with content parts."""

    text: str


ContentPart = TextPart | ImageBytes


@dataclass(frozen=True)
class ToolCall:
    """A function call in the conversation's history (an earlier answer's)."""

    id: str
    name: str
    arguments: str  # JSON text


@dataclass(frozen=True)
class ChatTurn:
    """One chat message; an assistant turn may carry the reasoning and the tool calls its answer came with; a tool
    turn answers the call `tool_call_id` (and may name its function).

    A user turn for a natively seeing model (`vision_mode: native`) may carry `parts` instead of `content`: its text
    and images in the order the user sent them (the chat template renders them). Every other turn is text only."""

    role: str
    content: str
    reasoning: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""
    name: str = ""
    parts: tuple[ContentPart, ...] = ()

    @property
    def images(self) -> tuple[ImageBytes, ...]:
        """The turn's image parts, in order."""
        return tuple(part for part in self.parts if isinstance(part, ImageBytes))


@dataclass(frozen=True)
class Tool:
    """A function the model may call."""

    name: str
    description: str = ""
    parameters: str = ""  # JSON Schema as JSON text; "" means any object
    strict: bool = False


class ToolChoiceMode(StrEnum):
    """Whether and which tool the model must call."""

    AUTO = "auto"
    NONE = "none"
    REQUIRED = "required"
    NAMED = "named"


@dataclass(frozen=True)
class ToolChoice:
    """`tool_choice`: a mode, and the function's name for NAMED."""

    mode: ToolChoiceMode = ToolChoiceMode.AUTO
    name: str = ""


class ResponseFormatType(StrEnum):
    """`response_format.type`."""

    TEXT = "text"
    JSON_OBJECT = "json_object"
    JSON_SCHEMA = "json_schema"


@dataclass(frozen=True)
class ResponseFormat:
    """The answer's format; for JSON_SCHEMA, the schema (JSON text) and its name."""

    type: ResponseFormatType = ResponseFormatType.TEXT
    schema: str = ""
    name: str = ""


@dataclass(frozen=True)
class SamplingParams:
    """Sampling parameters as the client sent them (the gateway validated them); None leaves the model's default.

    Named as the proto's `SamplingParams` fields and mapped to and from it by name (a dict is a proto map, a tuple
    a repeated field): a new parameter is a field here and in the proto, nothing in the mappers."""

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
    logit_bias: dict[int, float] = field(default_factory=dict)
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool | None = None
    top_logprobs: int | None = None  # set (0..MAX_TOP_LOGPROBS): return logprobs, with this many alternatives


@dataclass(frozen=True)
class RawPrompt:
    """A prompt sent as it is, instead of a conversation (legacy /v1/completions): `text` (the engine tokenizes it
    with the tokenizer's defaults) or `token_ids` (used as given), not both; a `suffix` asks for fill-in-the-middle
    (models with FIM tokens only; engine/prompt.py builds it). The engine applies no chat template and parses no
    reasoning or tool calls out of the answer: it is all `TextDelta`s."""

    text: str = ""
    token_ids: tuple[int, ...] = ()
    suffix: str = ""


class FinishReason(StrEnum):
    """Why a generation ended."""

    STOP = "stop"
    LENGTH = "length"
    CANCELLED = "cancelled"
    ERROR = "error"
    TOOL_CALLS = "tool_calls"


@dataclass(frozen=True)
class Accepted:
    """The first event of every request: it passed admission and waits for (or has) a batch slot, so the HTTP
    response may start."""

    prompt_tokens: int


@dataclass(frozen=True)
class TopLogprob:
    """One alternative at a position: a token's text, its log-probability, its bytes."""

    token: str
    logprob: float
    bytes: bytes


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's log-probability, with the most likely alternatives at its position."""

    token: str
    logprob: float
    bytes: bytes
    top_logprobs: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class TextDelta:
    """New answer text (stop strings apply to it); with logprobs requested, one entry per token it came from."""

    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class ReasoningDelta:
    """New reasoning text (a reasoning model's thinking, markers removed)."""

    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of tool call `index`: its first piece carries the id and the name, later ones fragments of the
    arguments' JSON text."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass(frozen=True)
class Finished:
    """The last event of a generation, with its usage."""

    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    error_message: str = ""
    reasoning_tokens: int = 0  # of completion_tokens
    stop_sequence: str = ""  # the stop string that ended the answer ("" when none did)


GenerationEvent = Accepted | TextDelta | ReasoningDelta | ToolCallDelta | Finished
