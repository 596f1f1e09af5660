"""OpenAI Responses API request models (`POST /v1/responses`): the one copy the gateway uses.

Lenient as OpenAI is with fields it does not know; strict where serving a field wrongly would surprise: a tool
type other than `function`, `background`, a `conversation` object, image `file_id`s and `item_reference`s are a 400
that names the field, never silently ignored. An input message may omit `type` (the SDK's "easy input message").
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationInfo, field_validator, model_validator

from services.common.config import RequestLimits
from services.common.generation import MAX_TOP_LOGPROBS, DetailName

from ..limits import check_chat_limits, check_request_json
from .chat import ImageAddress
from .sampling import UINT32, SamplingFields
from .tools import FUNCTION_NAME, JsonSchema, check_tool_choice
from .unsupported import unsupported

LOGPROBS_INCLUDE = "message.output_text.logprobs"


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class InputText(_Lenient):
    """`{"type": "input_text", "text": ...}` (an assistant's earlier `output_text` is read the same way)."""

    type: Literal["input_text", "output_text"]
    text: str


class InputImage(_Lenient):
    """`{"type": "input_image", "image_url": ..., "detail": ...}`: an http(s) or data: URL."""

    type: Literal["input_image"]
    image_url: ImageAddress | None = None
    file_id: str | None = Field(None, description="Not supported (no Files API here): send image_url.")
    detail: DetailName = "auto"

    @model_validator(mode="after")
    def _an_image_url(self):
        if self.file_id is not None:
            raise ValueError("file_id is not supported on this server (it has no Files API): send image_url")
        if self.image_url is None:
            raise ValueError("image_url is required")
        return self


class Refusal(_Lenient):
    """An earlier answer's `refusal` part (kept as text)."""

    type: Literal["refusal"]
    refusal: str


def _by_type(*models: type[BaseModel]):
    """A union chosen by `type`, tagged by class name: an error's location then reads `input[0].content[1].text`
    (errors.field_path drops capitalized labels), not `input[0].message.content[1].input_text.text`."""
    names = {value: m.__name__ for m in models for value in m.model_fields["type"].annotation.__args__}

    def tag(value):
        kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
        return names.get(kind)

    return Annotated[Union[tuple(Annotated[m, Tag(m.__name__)] for m in models)], Discriminator(tag)]  # noqa: UP007


ContentPart = _by_type(InputText, InputImage, Refusal)


class MessageItem(_Lenient):
    """A message of the conversation: `{"role", "content"}`, with or without `"type": "message"`."""

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]


class FunctionCallItem(_Lenient):
    """A call an earlier answer made."""

    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str
    arguments: str


class FunctionCallOutputItem(_Lenient):
    """The result of a call, sent back: text, or text and images (a screenshot)."""

    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[_by_type(InputText, InputImage)]


class ReasoningText(_Lenient):
    """A piece of an earlier answer's reasoning (`reasoning_text` content, or a `summary_text`)."""

    type: Literal["reasoning_text", "summary_text"]
    text: str


class ReasoningItem(_Lenient):
    """An earlier answer's reasoning, given back to the model with the turn it came with."""

    type: Literal["reasoning"]
    id: str | None = None
    summary: list[ReasoningText] = []
    content: list[ReasoningText] | None = None
    encrypted_content: str | None = None


def _message_unless_typed(value: Any) -> Any:
    if isinstance(value, dict) and "type" not in value and "role" in value:
        return {**value, "type": "message"}
    return value


InputItem = _by_type(MessageItem, FunctionCallItem, FunctionCallOutputItem, ReasoningItem)


class FunctionTool(_Lenient):
    """`{"type": "function", "name", "description", "parameters", "strict"}` (flat, unlike Chat Completions)."""

    type: Literal["function"]
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedFunction(_Lenient):
    """`{"type": "function", "name": ...}`: the model must call this function."""

    type: Literal["function"]
    name: str = Field(pattern=FUNCTION_NAME)


class TextFormat(_Lenient):
    """`text.format`: text, any JSON object, or JSON valid against a schema (`name`, `schema` flat)."""

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(None, pattern=FUNCTION_NAME)
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    description: str | None = None
    strict: bool | None = None

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    def json_schema(self) -> JsonSchema | None:
        """The schema format as Chat Completions spells it (one definition for the engine options)."""
        if self.type != "json_schema":
            return None
        return JsonSchema(name=self.name or "response", schema=self.schema_, strict=self.strict)


class TextConfig(_Lenient):
    """`text`: the answer's format."""

    format: TextFormat | None = None


class ReasoningConfig(_Lenient):
    """`reasoning`: accepted; the reasoning model reasons as its template says (effort is not a knob it has)."""

    effort: str | None = None
    summary: str | None = None


def _check_limits(body: dict, limits: RequestLimits) -> None:
    items = body.get("input")
    check_chat_limits(
        {
            "input": items if isinstance(items, list) else [{"content": items}],
            "max_output_tokens": body.get("max_output_tokens"),
        },
        limits,
        messages_field="input",
        token_fields=("max_output_tokens",),
    )


class ResponsesRequest(SamplingFields):
    """`POST /v1/responses` body."""

    model: str = Field(min_length=1)
    input: str | list[InputItem] = Field(description="A user message, or the conversation's items.")
    instructions: str | None = Field(None, description="A system message first (not carried to a follow-up).")
    previous_response_id: str | None = Field(None, description="Continue a stored response's conversation.")
    store: bool = Field(True, description="Keep the response for GET and previous_response_id (gateway.responses).")
    stream: bool = False
    max_output_tokens: int | None = Field(None, ge=1, lt=UINT32)
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    include: list[str] | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    truncation: Literal["auto", "disabled"] | None = None
    background: bool | None = Field(None, description="Not supported: only foreground responses.")
    conversation: Any = Field(None, description="Not supported: use previous_response_id.")

    @model_validator(mode="before")
    @classmethod
    def _within_limits_and_typed(cls, data):
        check_request_json(data, _check_limits)
        if isinstance(data, dict) and isinstance(data.get("input"), list):
            data = {**data, "input": [_message_unless_typed(item) for item in data["input"]]}
        return data

    @field_validator("input")
    @classmethod
    def _some_input(cls, value):
        if isinstance(value, list) and not value:
            raise ValueError("input must not be empty")
        return value

    @field_validator("tools", mode="before")
    @classmethod
    def _only_function_tools(cls, value):
        if not isinstance(value, list):
            return value  # not a list: the field's own type check answers it
        for index, tool in enumerate(value):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind != "function":
                raise ValueError(f"tools[{index}]: only function tools are supported on this server, not {kind!r}")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _tool_choice_within_tools(cls, value, info: ValidationInfo):
        if value in (None, "none", "auto") or "tools" not in info.data:
            return value
        check_tool_choice(
            value.name if isinstance(value, NamedFunction) else None, [t.name for t in info.data["tools"] or ()]
        )
        return value

    _foreground_only = unsupported("background", why="background responses are not supported on this server", sent=bool)
    _no_conversations = unsupported(
        "conversation", why="conversations are not supported on this server: use previous_response_id"
    )

    @property
    def wants_logprobs(self) -> bool:
        """Whether the answer's text carries logprobs (`include` names them, or `top_logprobs` is set)."""
        return self.top_logprobs is not None or LOGPROBS_INCLUDE in (self.include or ())
