"""OpenAI chat completion request and response models: the one copy the gateway uses.

Requests accept what the official SDK sends (string content or parts, `image_url` as object or plain
string, `max_completion_tokens`), ignore unknown fields as OpenAI does, and reject values OpenAI would
reject, so clients get a 400 that names the field instead of a surprise.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ImageURL(_Lenient):
    """The `image_url` object of an image part."""

    url: str = Field(min_length=1)
    detail: Literal["low", "high", "auto"] = "auto"


class TextPart(_Lenient):
    """`{"type": "text", "text": ...}`."""

    type: Literal["text"]
    text: str


class ImagePart(_Lenient):
    """`{"type": "image_url", "image_url": {"url": ..., "detail": ...}}` (or a plain URL string)."""

    type: Literal["image_url"]
    image_url: ImageURL | str

    @property
    def image(self) -> ImageURL:
        """The object form, whichever form the client sent."""
        return self.image_url if isinstance(self.image_url, ImageURL) else ImageURL(url=self.image_url)


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ChatMessage(_Lenient):
    """One message of the conversation."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    # An earlier answer's reasoning, as this server (or vLLM: `reasoning`) returned it; assistant messages only.
    reasoning_content: str | None = None
    reasoning: str | None = None

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


class ResponseFormat(_Lenient):
    """`response_format`; only plain text is produced."""

    type: str


class ChatCompletionRequest(_Lenient):
    """`POST /v1/chat/completions` body."""

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    n: int | None = Field(None, ge=1)
    user: str | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: ResponseFormat | None = None
    tools: list[dict] | None = None
    tool_choice: str | dict | None = None
    include_reasoning: bool = Field(True, description="False drops a reasoning model's reasoning from the answer "
                                    "(it is still generated and counted in usage).")

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, value):
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        return value

    @property
    def stop_list(self) -> tuple[str, ...]:
        """`stop` as a tuple of non-empty strings."""
        if self.stop is None:
            return ()
        return tuple(s for s in ([self.stop] if isinstance(self.stop, str) else self.stop) if s)

    @property
    def completion_limit(self) -> int | None:
        """`max_completion_tokens` (the current name) or `max_tokens` (the legacy one)."""
        return self.max_completion_tokens or self.max_tokens


class ChatCompletionMessage(BaseModel):
    """The assistant's message in a non-streamed answer."""

    role: Literal["assistant"] = "assistant"
    content: str
    reasoning_content: str | None = Field(None, description="A reasoning model's reasoning (the name is "
                                          "`gateway.reasoning_field`: reasoning_content, reasoning, or both).")


class Choice(BaseModel):
    """One choice (always one: n=1)."""

    index: int = 0
    message: ChatCompletionMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class CompletionTokensDetails(BaseModel):
    """Breakdown of `completion_tokens`."""

    reasoning_tokens: int = 0


class Usage(BaseModel):
    """Token counts."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails = CompletionTokensDetails()


class ChatCompletion(BaseModel):
    """A non-streamed answer (`object: chat.completion`)."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None
