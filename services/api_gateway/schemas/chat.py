"""OpenAI chat completion request and response models: the one copy the gateway uses.

Requests accept what the official SDK sends (string content or parts, `image_url` as object or plain
string, `max_completion_tokens`, vLLM's extra sampling parameters at the top level as `extra_body` puts
them), ignore unknown fields as OpenAI does, and reject values OpenAI would reject, so clients get a 400
that names the field instead of a surprise. Rules that tie two fields together are validators of the later
field (pydantic validates in declaration order), so the error names the field the client must change.
Tools and response formats are in `tools.py`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from services.common.generation import MAX_TOP_LOGPROBS, DetailName

from ..limits import check_chat_limits, check_request_json
from .sampling import UINT32, SamplingFields, min_tokens_within
from .tools import NamedToolChoice, ResponseFormat, Tool, ToolCall, ToolChoice, check_tool_choice
from .unsupported import unsupported


def _parsable_url(url: str) -> str:
    """An image URL the fetcher can take apart (brackets closed, a numeric port): a malformed one is the
    client's mistake and is named as such, before anything is fetched. data: URLs are decoded later."""
    stripped = url.strip()
    if stripped[:5].lower() == "data:":
        return url
    try:
        parts = urlsplit(stripped)
        parts.port  # noqa: B018 - parsing the port is the check (ValueError when it is not a number in range)
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc})") from None
    return url


ImageAddress = Annotated[str, Field(min_length=1), AfterValidator(_parsable_url)]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ImageURL(_Lenient):
    """The `image_url` object of an image part."""

    url: ImageAddress
    detail: DetailName = "auto"


class TextPart(_Lenient):
    """`{"type": "text", "text": ...}`."""

    type: Literal["text"]
    text: str


class ImagePart(_Lenient):
    """`{"type": "image_url", "image_url": {"url": ..., "detail": ...}}` (or a plain URL string)."""

    type: Literal["image_url"]
    image_url: ImageURL | ImageAddress

    @property
    def image(self) -> ImageURL:
        """The object form, whichever form the client sent."""
        return self.image_url if isinstance(self.image_url, ImageURL) else ImageURL(url=self.image_url)


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ChatMessage(_Lenient):
    """One message of the conversation.

    `content` is required, except for an assistant message that carries `tool_calls`; a `tool` message
    answers the call `tool_call_id`. (Fields are declared in the order their checks need.)"""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    name: str | None = None
    tool_calls: list[ToolCall] | None = Field(
        None, description="An assistant message's calls, as an answer returned them."
    )
    tool_call_id: str | None = Field(
        None, validate_default=True, description="A tool message: the call it answers (required)."
    )
    content: str | list[ContentPart] | None = Field(None, validate_default=True)
    # An earlier answer's reasoning, as this server (or vLLM: `reasoning`) returned it; assistant messages only.
    reasoning_content: str | None = None
    reasoning: str | None = None

    @field_validator("tool_calls")
    @classmethod
    def _only_assistants_call(cls, value, info: ValidationInfo):
        if value and info.data.get("role", "assistant") != "assistant":
            raise ValueError("only assistant messages have tool_calls")
        return value

    @field_validator("tool_call_id")
    @classmethod
    def _tool_messages_name_their_call(cls, value, info: ValidationInfo):
        if info.data.get("role") == "tool" and not value:
            raise PydanticCustomError("missing", "a tool message needs the tool_call_id of the call it answers")
        return value

    @field_validator("content")
    @classmethod
    def _content_unless_tool_calls(cls, value, info: ValidationInfo):
        role = info.data.get("role")
        if value is None and role is not None and not (role == "assistant" and info.data.get("tool_calls")):
            raise PydanticCustomError(
                "missing", "content is required (an assistant message may omit it only when it has tool_calls)"
            )
        return value

    @property
    def reasoning_text(self) -> str:
        """The reasoning sent back with an assistant message, under either name ('' for none)."""
        return (self.reasoning_content or self.reasoning or "") if self.role == "assistant" else ""

    def text(self) -> str:
        """The message's text parts joined (images are handled by the proxy-vision rewrite)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content if isinstance(p, TextPart))

    def images(self) -> list[ImageURL]:
        """The message's image parts, in order."""
        if not isinstance(self.content, list):
            return []
        return [p.image for p in self.content if isinstance(p, ImagePart)]


class StreamOptions(_Lenient):
    """`stream_options`."""

    include_usage: bool = False


class ChatCompletionRequest(SamplingFields):
    """`POST /v1/chat/completions` body."""

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, lt=UINT32, description="At most gateway.limits.max_completion_tokens.")
    max_completion_tokens: int | None = Field(
        None, ge=1, lt=UINT32, description="At most gateway.limits.max_completion_tokens."
    )
    min_tokens: int | None = Field(
        None,
        ge=0,
        lt=UINT32,
        description="vLLM extra: no end of sequence before this many tokens (at most max_tokens).",
    )
    n: int | None = Field(None, ge=1, description="Choices to generate: at most `gateway.max_n` (default 8).")
    user: str | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(
        None, ge=0, le=MAX_TOP_LOGPROBS, description="Alternatives per token; needs logprobs true."
    )
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = Field(
        None, description="A choice other than none/auto needs tools; a named function must be one of them."
    )
    parallel_tool_calls: bool | None = Field(
        None, description="Whether one answer may hold several calls (default true)."
    )
    include_reasoning: bool = Field(
        True,
        description="False drops a reasoning model's reasoning from the answer "
        "(it is still generated and counted in usage).",
    )
    # Refused with a 400 rather than silently ignored: a client sending them expects what they do.
    functions: list[Any] | None = Field(None, deprecated=True, description="Not supported: use tools.")
    function_call: Any = Field(None, deprecated=True, description="Not supported: use tool_choice.")
    audio: Any = Field(None, description="Not supported (text only).")
    modalities: list[Literal["text"]] | None = Field(None, description='Only ["text"].')

    @model_validator(mode="before")
    @classmethod
    def _within_limits_and_carriable(cls, data):
        check_request_json(data, check_chat_limits)
        return data

    @field_validator("min_tokens")
    @classmethod
    def _min_tokens_within_max(cls, value, info: ValidationInfo):
        return min_tokens_within(value, info.data.get("max_completion_tokens") or info.data.get("max_tokens"))

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs_need_logprobs(cls, value, info: ValidationInfo):
        if value and not info.data.get("logprobs"):
            raise ValueError("top_logprobs requires logprobs to be true")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _tool_choice_within_tools(cls, value, info: ValidationInfo):
        if value in (None, "none", "auto") or "tools" not in info.data:  # no tools field: it failed on its own
            return value
        named = value.function.name if isinstance(value, NamedToolChoice) else None
        check_tool_choice(named, [t.function.name for t in info.data["tools"] or ()])
        return value

    _no_legacy_functions = unsupported(
        "functions", "function_call", why="the legacy {field} parameter is not supported: use tools and tool_choice"
    )
    _no_audio = unsupported("audio", why="audio output is not supported")

    @property
    def completion_limit(self) -> int | None:
        """`max_completion_tokens` (the current name) or `max_tokens` (the legacy one)."""
        return self.max_completion_tokens or self.max_tokens


class ChatCompletionMessage(BaseModel):
    """The assistant's message in a non-streamed answer."""

    role: Literal["assistant"] = "assistant"
    content: str | None = Field(description="The answer; null when the answer is only tool calls.")
    tool_calls: list[ToolCall] | None = Field(None, description="The calls the model made, with their full arguments.")
    reasoning_content: str | None = Field(
        None,
        description="A reasoning model's reasoning (the name is "
        "`gateway.reasoning_field`: reasoning_content, reasoning, or both).",
    )
    reasoning: str | None = Field(
        None, description="The same reasoning, under vLLM's newer name (see reasoning_content)."
    )


class TopLogprob(BaseModel):
    """One alternative at a position."""

    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    """One answer token: its log-probability and the most likely alternatives (`top_logprobs` of them)."""

    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    """`choices[].logprobs` (with `logprobs: true`)."""

    content: list[TokenLogprob] | None
    refusal: None = None


class Choice(BaseModel):
    """One of the `n` choices."""

    index: int = 0
    message: ChatCompletionMessage
    finish_reason: Literal["stop", "length", "tool_calls"]
    logprobs: ChoiceLogprobs | None = None


class CompletionTokensDetails(BaseModel):
    """Breakdown of `completion_tokens`."""

    reasoning_tokens: int = 0


class Usage(BaseModel):
    """Token counts: the prompt once, the completion tokens of all choices summed."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails = CompletionTokensDetails()


class ImageCaption(BaseModel):
    """What the text model was told about one image of the request."""

    message: int = Field(description="Index of the message the image is in (in `messages`).")
    index: int = Field(
        description="Index of the image among that message's images, from 0 (the caption stands in "
        "the text the model read as `Image <index + 1>: <caption>`)."
    )
    caption: str = Field(description="The vision model's caption, as the text model read it.")
    cached: bool = Field(description="Whether the caption came from the caption cache (no vision model work).")
    ms: float = Field(description="The vision engine's time for this caption, in milliseconds (0 when cached).")


class ProxyVision(BaseModel):
    """The captions of a request whose images were described by the proxy vision model."""

    images: list[ImageCaption] = Field(description="One entry per image, in the order of the request.")


class ChatCompletion(BaseModel):
    """A non-streamed answer (`object: chat.completion`)."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None
    proxy_vision: ProxyVision | None = Field(
        None,
        description="Only for a request whose images were captioned by the proxy vision model (and with "
        "gateway.show_captions on, the default): what the text model was told about each image. A stream carries "
        "it in one chunk, the one right after the captions are made (its delta is empty). Absent for text-only "
        "requests and for models that see images natively.",
    )
