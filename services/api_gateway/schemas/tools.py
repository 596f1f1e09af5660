"""OpenAI function calling and structured output: `tools`, `tool_choice`, `response_format`, and the tool
calls of answers (in a request's history and in responses).

Validated as OpenAI validates them, so a client gets a 400 naming the field: a function name is 1-64 of
`[a-zA-Z0-9_-]`, `parameters` and `schema` are JSON objects, only `type: "function"` tools exist.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FUNCTION_NAME = r"^[a-zA-Z0-9_-]{1,64}$"


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class FunctionDefinition(_Lenient):
    """`tools[].function`."""

    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="JSON Schema of the arguments; absent: any object.")
    strict: bool | None = Field(None, description="Constrain the arguments to `parameters` even with tool_choice auto.")


class Tool(_Lenient):
    """One entry of `tools`."""

    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Lenient):
    """`tool_choice.function`."""

    name: str = Field(pattern=FUNCTION_NAME)


class NamedToolChoice(_Lenient):
    """`{"type": "function", "function": {"name": ...}}`: the model must call this tool."""

    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class TextFormat(_Lenient):
    """`{"type": "text"}`."""

    type: Literal["text"]


class JsonObjectFormat(_Lenient):
    """`{"type": "json_object"}`: any JSON object."""

    type: Literal["json_object"]


class JsonSchema(_Lenient):
    """`response_format.json_schema`."""

    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    # `schema` shadows a BaseModel attribute: the field is `schema_` under its JSON name.
    schema_: dict[str, Any] | None = Field(
        None, alias="schema", description="JSON Schema of the answer; absent: any object."
    )
    strict: bool | None = None

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class JsonSchemaFormat(_Lenient):
    """`{"type": "json_schema", "json_schema": {...}}`: JSON valid against the schema."""

    type: Literal["json_schema"]
    json_schema: JsonSchema


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]


class FunctionCall(BaseModel):
    """`tool_calls[].function`: the name and the arguments as JSON text."""

    name: str
    arguments: str


class ToolCall(BaseModel):
    """A call the model made: in a response, or in an assistant message of a request's history."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: FunctionCall


def check_tool_choice(named: str | None, tool_names: list[str]) -> None:
    """The rule both OpenAI APIs apply to a `tool_choice` other than none/auto: it needs tools, and a named
    function (`named`) must be one of them. ValueError names what is wrong."""
    if not tool_names:
        raise ValueError("tool_choice other than 'none' or 'auto' requires tools")
    if named is not None and named not in tool_names:
        raise ValueError(f"function {named!r} is not one of the tools")
