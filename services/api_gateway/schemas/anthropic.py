"""Anthropic Messages request and response models (`POST /v1/messages`, `POST /v1/messages/count_tokens`).

Requests accept what the official `anthropic` SDK and Claude Code send and ignore unknown fields (`cache_control`,
`service_tier`, `output_config.effort`, ...), as Anthropic's API does; what Anthropic validates is validated here
too, so a client gets a 400 that names the field: `max_tokens` is required, `temperature` is in [0, 1], a
`thinking` budget is at least 1024 and below `max_tokens`, a message's blocks fit its role. What this server
cannot honour is refused, never dropped: server tools (`web_search_...`), block types other than text, image,
tool_use, tool_result and thinking, and a final assistant message (a prefill; Anthropic refuses it too for models
that do not support it). The request limits (gateway.limits) apply as to chat requests.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ..limits import check_chat_limits, check_request_json
from .chat import ImageAddress, ProxyVision
from .sampling import UINT32, sampling_bounds

TOOL_NAME = r"^[a-zA-Z0-9_-]{1,128}$"  # Anthropic's rule: wider than OpenAI's 64 (Claude Code's MCP tool names)
MAX_STOP_SEQUENCES = 16  # Anthropic documents none; the engine matches each against every delta, so bound them


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextBlock(_Lenient):
    """`{"type": "text", "text": ...}`."""

    type: Literal["text"]
    text: str


class Base64Source(_Lenient):
    """An inline image: its bytes as base64 and its type."""

    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str = Field(min_length=1)


class UrlSource(_Lenient):
    """An image by URL (fetched by the gateway, under gateway.images' rules)."""

    type: Literal["url"]
    url: ImageAddress


class ImageBlock(_Lenient):
    """`{"type": "image", "source": {...}}`."""

    type: Literal["image"]
    source: Annotated[Base64Source | UrlSource, Field(discriminator="type")]

    @property
    def url(self) -> str:
        """The image as the core takes it: its URL, or its bytes as a data: URL."""
        source = self.source
        return f"data:{source.media_type};base64,{source.data}" if isinstance(source, Base64Source) else source.url


class ToolUseBlock(_Lenient):
    """An earlier answer's call: `{"type": "tool_use", "id", "name", "input": {...}}`."""

    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any]


class ToolResultBlock(_Lenient):
    """The result of call `tool_use_id`: text, or text and images (a screenshot)."""

    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: str | list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]] | None = None
    is_error: bool | None = None


class ThinkingBlock(_Lenient):
    """An earlier answer's thinking (its text becomes that turn's reasoning; the signature is not checked)."""

    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(_Lenient):
    """Thinking Anthropic encrypted: nothing a model here can read (dropped)."""

    type: Literal["redacted_thinking"]
    data: str = ""


ContentBlock = Annotated[
    TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock,
    Field(discriminator="type"),
]
BLOCKS_OF_ROLE = {
    "user": {"text", "image", "tool_result"},
    "assistant": {"text", "tool_use", "thinking", "redacted_thinking"},
}


class InputMessage(_Lenient):
    """One turn: a string, or blocks that fit its role."""

    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]

    @field_validator("content")
    @classmethod
    def _blocks_fit_the_role(cls, value, info: ValidationInfo):
        role = info.data.get("role")
        if isinstance(value, list) and role in BLOCKS_OF_ROLE:
            for index, block in enumerate(value):
                if block.type not in BLOCKS_OF_ROLE[role]:
                    raise ValueError(f"content[{index}] is a {block.type} block, which a {role} message cannot have")
        return value


class ToolDefinition(_Lenient):
    """A client tool: the model may call it, the client runs it."""

    type: str | None = Field(None, description="'custom' or absent; server tools (web_search_...) are refused.")
    name: str = Field(pattern=TOOL_NAME)
    description: str | None = None
    input_schema: dict[str, Any] = Field(description="JSON Schema of the tool's input.")
    strict: bool | None = Field(None, description="Constrain the input to `input_schema` even with tool_choice auto.")

    @field_validator("type")
    @classmethod
    def _client_tools_only(cls, value):
        if value not in (None, "custom"):
            raise ValueError(f"server tools ({value}) are not supported here: only client tools (type 'custom')")
        return value


class ToolChoice(_Lenient):
    """`auto` (default), `any` (some tool), `tool` (the one named), `none`."""

    type: Literal["auto", "any", "tool", "none"]
    name: str | None = Field(None, description="With type 'tool': which one.")
    disable_parallel_tool_use: bool | None = Field(None, description="At most one call per answer.")


class ThinkingConfig(_Lenient):
    """Whether the answer shows the model's thinking (a reasoning model may think either way)."""

    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = Field(None, ge=1024, description="Required with 'enabled'; below max_tokens.")
    display: Literal["summarized", "omitted"] | None = Field(None, description="'omitted': no thinking blocks.")

    @property
    def shown(self) -> bool:
        """Whether thinking blocks are returned."""
        return self.type != "disabled" and self.display != "omitted"


class JsonOutputFormat(_Lenient):
    """`output_config.format`: the answer is JSON valid against `schema` (constrained decoding)."""

    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class OutputConfig(_Lenient):
    """`output_config` (`effort` is ignored)."""

    format: JsonOutputFormat | None = None


class Metadata(_Lenient):
    """`metadata`: `user_id` identifies the end user (routing affinity)."""

    user_id: str | None = None


class _Prompt(_Lenient):
    """What both bodies share: the prompt, its tools and output format. `thinking` is each body's own, declared
    where its check can see `max_tokens` (fields are validated in declaration order)."""

    model: str = Field(min_length=1)
    messages: list[InputMessage] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoice | None = Field(None, description="'any' and 'tool' need tools; 'tool' names one of them.")
    output_config: OutputConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _within_limits_and_carriable(cls, data):
        check_request_json(data, lambda body, limits: check_chat_limits(_as_chat(body), limits))
        return data

    @field_validator("messages")
    @classmethod
    def _no_prefill(cls, value):
        if value and value[-1].role == "assistant":
            raise ValueError(
                "the last message must be a user message: continuing a final assistant message "
                "(prefill) is not supported"
            )
        return value

    @field_validator("thinking", check_fields=False)
    @classmethod
    def _budget_when_enabled(cls, value, info: ValidationInfo):
        if value is None or value.type != "enabled":
            return value
        if value.budget_tokens is None:
            raise ValueError("thinking.budget_tokens is required when thinking is enabled")
        limit = info.data.get("max_tokens")
        if limit is not None and value.budget_tokens >= limit:
            raise ValueError(f"thinking.budget_tokens ({value.budget_tokens}) must be less than max_tokens ({limit})")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _tool_choice_within_tools(cls, value, info: ValidationInfo):
        if value is None or value.type in ("auto", "none") or "tools" not in info.data:
            return value  # no tools field: it failed on its own
        names = [t.name for t in info.data["tools"] or ()]
        if not names:
            raise ValueError(f"tool_choice '{value.type}' requires tools")
        if value.type == "tool" and value.name not in names:
            raise ValueError(f"tool_choice names {value.name!r}, which is not one of the tools")
        return value

    @property
    def system_text(self) -> str:
        """The system prompt's text ('' for none); text blocks are joined by newlines."""
        if isinstance(self.system, list):
            return "\n".join(block.text for block in self.system)
        return self.system or ""

    @property
    def shows_thinking(self) -> bool:
        """Whether the answer carries thinking blocks (`thinking` enabled or adaptive, not omitted)."""
        thinking: ThinkingConfig | None = getattr(self, "thinking", None)
        return thinking is not None and thinking.shown


class CountTokensRequest(_Prompt):
    """`POST /v1/messages/count_tokens` body: what the prompt is made of."""

    thinking: ThinkingConfig | None = None


class MessagesRequest(_Prompt):
    """`POST /v1/messages` body."""

    max_tokens: int = Field(ge=1, lt=UINT32, description="Required. At most gateway.limits.max_completion_tokens.")
    thinking: ThinkingConfig | None = None  # after max_tokens: a budget must be below it
    stop_sequences: list[str] | None = Field(None, max_length=MAX_STOP_SEQUENCES)
    temperature: float | None = Field(None, ge=0.0, le=1.0)
    top_p: float | None = Field(None, **sampling_bounds("top_p"))
    top_k: int | None = Field(None, **sampling_bounds("top_k"))
    stream: bool = False
    metadata: Metadata | None = None


def _as_chat(data: dict) -> dict:
    """The body as `check_chat_limits` reads a chat request: each message with all its text (text, thinking, tool
    inputs and results) as its content, the system prompt counted with the first. Anything of the wrong shape
    is left out: the schema's validation reports it."""
    messages = data.get("messages")
    view = {"max_tokens": data.get("max_tokens")}
    if not isinstance(messages, list):
        return view
    texts = [_text_of(m.get("content")) if isinstance(m, dict) else "" for m in messages]
    if texts:
        texts[0] += _text_of(data.get("system"))
    return {**view, "messages": [{"content": text} for text in texts]}


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    pieces = []
    for block in content:
        if isinstance(block, dict):
            pieces.extend(v for k in ("text", "thinking") if isinstance(v := block.get(k), str))
            if isinstance(block.get("input"), dict):
                pieces.append(str(block["input"]))  # about its JSON's length; cheaper than dumping it
            if block.get("type") == "tool_result":
                pieces.append(_text_of(block.get("content")))
    return "".join(pieces)


# --- answers (for the OpenAPI document: the protocol builds them as dicts) ---------------------------------
class TextOut(BaseModel):
    """Answer text."""

    type: Literal["text"] = "text"
    text: str


class ThinkingOut(BaseModel):
    """A reasoning model's thinking (with `thinking` enabled or adaptive); the signature is always empty."""

    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str = ""


class ToolUseOut(BaseModel):
    """A call of one of the request's tools; `input` is the arguments the model wrote, parsed."""

    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


class MessageUsage(BaseModel):
    """Token counts: the prompt (as count_tokens counts it) and everything generated, thinking included."""

    input_tokens: int
    output_tokens: int


class AnthropicMessage(BaseModel):
    """A non-streamed answer (`type: message`)."""

    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str = Field(description="The model as the request named it.")
    content: list[Annotated[ThinkingOut | TextOut | ToolUseOut, Field(discriminator="type")]]
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"] | None
    stop_sequence: str | None = Field(None, description="The stop sequence that ended the answer, if one did.")
    usage: MessageUsage
    proxy_vision: ProxyVision | None = Field(None, description="As in ChatCompletion: the captions of the images.")


class CountTokensResponse(BaseModel):
    """How many input tokens the same request to `/v1/messages` would report."""

    input_tokens: int


class AnthropicErrorDetail(BaseModel):
    """`error` of an Anthropic error body."""

    type: str = Field(
        description="invalid_request_error, authentication_error, not_found_error, request_too_large, "
        "api_error, overloaded_error, timeout_error, ..."
    )
    message: str


class AnthropicErrorResponse(BaseModel):
    """`{"type": "error", "error": {...}}`, returned with every 4xx/5xx under /v1/messages."""

    type: Literal["error"] = "error"
    error: AnthropicErrorDetail
