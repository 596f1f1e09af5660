"""A request's tools checked once at admission, before its prompt is rendered or a grammar is built.

Engines are called directly too (grpcurl), so they check what the gateway may already have checked; each
error names the request field it is about (`param`), as OpenAI's do.
"""

from __future__ import annotations

import json

from services.common.errors import InvalidRequestError
from services.common.generation import Tool, ToolChoiceMode

from ..types import GenerationRequest
from .parsers import is_function_name

# A tool without parameters takes an object with anything in it (OpenAI: "omitting parameters defines a
# function with an empty parameter list"; an empty object is what the models are shown).
ANY_OBJECT = {"type": "object", "properties": {}}


def parameters_schema(tool: Tool) -> dict:
    """The tool's parameters as a JSON Schema object (its JSON text parsed; "" is `ANY_OBJECT`)."""
    if not tool.parameters:
        return dict(ANY_OBJECT)
    try:
        schema = json.loads(tool.parameters)
    except ValueError as exc:
        raise InvalidRequestError(
            f"tools: the parameters of function {tool.name!r} are not valid JSON: {exc}", param="tools"
        ) from exc
    if not isinstance(schema, dict):
        raise InvalidRequestError(
            f"tools: the parameters of function {tool.name!r} must be a JSON Schema object, "
            f"got {type(schema).__name__}",
            param="tools",
        )
    if schema.get("type", "object") != "object":
        raise InvalidRequestError(
            f"tools: the parameters of function {tool.name!r} must describe an object "
            f'("type": "object"), got type {schema["type"]!r}',
            param="tools",
        )
    return schema


def calls_tools(request: GenerationRequest) -> bool:
    """Whether the model may call the request's tools: tools are offered and tool_choice is not `none`
    (then tool calls are read out of the answer)."""
    return bool(request.tools) and request.tool_choice.mode is not ToolChoiceMode.NONE


def validate_tools(request: GenerationRequest, tool_format: str) -> None:
    """Refuse a request whose tools or tool_choice cannot be served by this model (`tool_format` is the
    model's `ParserSpec.tools`: "mistral", "hermes" or "none")."""
    mode = request.tool_choice.mode
    if mode in (ToolChoiceMode.REQUIRED, ToolChoiceMode.NAMED) and not request.tools:
        raise InvalidRequestError(
            f"tool_choice {_choice(request)} needs tools, and the request has none", param="tool_choice"
        )
    if not request.tools:
        return
    if tool_format == "none":
        raise InvalidRequestError(
            "This model has no tool-call format (tool_call_parser is 'none' or none was "
            "detected), so it cannot be given tools",
            param="tools",
        )
    names = [tool.name for tool in request.tools]
    for tool in request.tools:
        if not is_function_name(tool.name):
            raise InvalidRequestError(
                f"tools: {tool.name!r} is not a function name (1 to 64 letters, digits, underscores, dashes or dots)",
                param="tools",
            )
        if names.count(tool.name) > 1:
            raise InvalidRequestError(f"tools: the function name {tool.name!r} is given twice", param="tools")
        parameters_schema(tool)
    if mode is ToolChoiceMode.NAMED and request.tool_choice.name not in names:
        raise InvalidRequestError(
            f"tool_choice names the function {request.tool_choice.name!r}, which is not in tools ({', '.join(names)})",
            param="tool_choice",
        )


def _choice(request: GenerationRequest) -> str:
    choice = request.tool_choice
    return f"naming {choice.name!r}" if choice.mode is ToolChoiceMode.NAMED else f"{choice.mode.value!r}"
