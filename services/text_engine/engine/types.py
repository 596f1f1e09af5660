"""Domain types of one generation request and of the events it produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


@dataclass(frozen=True)
class ToolCall:
    """A function call in the conversation's history (an earlier answer's)."""

    id: str
    name: str
    arguments: str  # JSON text


class Detail(str, Enum):
    """How much of an image the model looks at (`detail` of an OpenAI image part)."""

    AUTO = "auto"
    LOW = "low"
    HIGH = "high"


@dataclass(frozen=True)
class TextPart:
    """Text of a message with content parts."""

    text: str


@dataclass(frozen=True)
class ImagePart:
    """An image a `vision_mode: native` model looks at itself: encoded bytes, decoded at admission."""

    data: bytes
    mime_type: str = ""
    detail: Detail = Detail.AUTO
    sha256: str = ""


ContentPart = TextPart | ImagePart


@dataclass(frozen=True)
class ChatTurn:
    """One chat message; an assistant turn may carry the reasoning and the tool calls its answer came with; a
    tool turn answers the call `tool_call_id`. A user turn with `parts` (text and images, in order) is rendered
    from them instead of `content`."""

    role: str
    content: str
    reasoning: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""
    name: str = ""
    parts: tuple[ContentPart, ...] = ()

    @property
    def images(self) -> tuple[ImagePart, ...]:
        """The turn's image parts, in order."""
        return tuple(part for part in self.parts if isinstance(part, ImagePart))


@dataclass(frozen=True)
class Tool:
    """A function the model may call."""

    name: str
    description: str = ""
    parameters: str = ""  # JSON Schema as JSON text; "" means any object
    strict: bool = False


class ToolChoiceMode(str, Enum):
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


class ResponseFormatType(str, Enum):
    """`response_format.type`."""

    TEXT = "text"
    JSON_OBJECT = "json_object"
    JSON_SCHEMA = "json_schema"


@dataclass(frozen=True)
class ResponseFormat:
    """The answer's format; a schema (JSON text) for JSON_SCHEMA."""

    type: ResponseFormatType = ResponseFormatType.TEXT
    schema: str = ""
    name: str = ""


@dataclass(frozen=True)
class SamplingRequest:
    """Sampling parameters as the client sent them; None means "use the model's default".

    Field names are the proto's `SamplingParams` names (convert.py maps them by name)."""

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
    top_logprobs: int | None = None  # set: return logprobs with this many alternatives


@dataclass(frozen=True)
class RawPrompt:
    """A prompt given as it is (legacy completions): `text` (tokenized with the tokenizer's defaults) or
    `token_ids` (used as given), and with `suffix` a fill-in-the-middle prompt (engine/prompt.py builds it)."""

    text: str = ""
    token_ids: tuple[int, ...] = ()
    suffix: str = ""


@dataclass(frozen=True)
class GenerationRequest:
    """A completion to generate: of a chat (`messages`), or of a raw prompt (`prompt`, `messages` empty: no chat
    template, and the output is not parsed for reasoning or tool calls)."""

    request_id: str
    messages: tuple[ChatTurn, ...]
    sampling: SamplingRequest = field(default_factory=SamplingRequest)
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = field(default_factory=ToolChoice)
    parallel_tool_calls: bool = True
    response_format: ResponseFormat = field(default_factory=ResponseFormat)
    prompt: RawPrompt | None = None

    @property
    def has_images(self) -> bool:
        """Whether any message carries an image part."""
        return any(turn.images for turn in self.messages)


class FinishReason(str, Enum):
    """Why a generation ended."""

    STOP = "stop"
    LENGTH = "length"
    CANCELLED = "cancelled"
    ERROR = "error"
    TOOL_CALLS = "tool_calls"


@dataclass(frozen=True)
class Accepted:
    """The first event of every request: it passed admission and waits for (or has) a batch slot."""

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
    """New answer text of one request (stop strings apply to it), with its tokens' logprobs when asked for."""

    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a tool call: the first of a call has its index, id and name; later ones argument fragments."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass(frozen=True)
class ReasoningDelta:
    """New reasoning text of one request (a reasoning model's thinking, markers removed)."""

    text: str


@dataclass(frozen=True)
class Finished:
    """The last event of one request."""

    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    error_message: str = ""
    reasoning_tokens: int = 0  # of completion_tokens
    stop_sequence: str = ""  # the stop string that ended the answer, if one did


GenerationEvent = Accepted | TextDelta | ReasoningDelta | ToolCallDelta | Finished
