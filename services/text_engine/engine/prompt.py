"""The prompt: a conversation rendered through the model's own chat template into token ids.

The engine owns the template, so clients never see model formats. An earlier assistant answer's reasoning
goes back to the template the way that template takes thinking (see `ParserSpec.thinking_in_content_chunks`):
as a `thinking` content chunk before the answer text (Mistral), or as the message's `reasoning_content`
key (`<think>` templates such as Qwen3's).

Tools go to the template as `tools=[{"type": "function", "function": {name, description, parameters}}]`,
also when tool_choice is `none` (vLLM's default, without --exclude-tools-when-tool-choice-none: the model
still knows the tools, it is just not asked to call them and its calls are not read). Earlier tool calls
travel the way Hugging Face chat templates take them (vLLM does the same): an assistant message's
`tool_calls` with `arguments` as a dict (Qwen's templates `tojson` it; Mistral's take a dict or a string),
and `tool` messages with `tool_call_id` and `name`.

A message with content parts (native vision) goes to the template as Hugging Face chat templates take
multimodal content: a list of `{"type": "text", "text": ...}` and `{"type": "image"}` in the order sent; the
template writes its placeholder per image (`[IMG]`, `<|vision_start|><|image_pad|><|vision_end|>`), which
admission expands with the image's own tokens (images.py). Parts without an image are joined into one text
(by newlines, as vLLM joins text parts), so text-only templates keep their string content.
"""

from __future__ import annotations

import json

from services.common.errors import InvalidRequestError

from .output import ParserSpec
from .tools.validation import parameters_schema
from .types import ChatTurn, GenerationRequest, ImagePart, TextPart, Tool, ToolCall

_ROLE_ALIASES = {"developer": "system"}


def template_message(turn: ChatTurn, parser: ParserSpec, call_names: dict[str, str] | None = None) -> dict:
    """One message as chat templates expect it; `call_names` (earlier calls' id -> function name) names a
    tool result whose turn does not."""
    message: dict = {"role": _ROLE_ALIASES.get(turn.role, turn.role), "content": content_of(turn)}
    if turn.role == "assistant" and turn.reasoning:
        if parser.thinking_in_content_chunks:
            message["content"] = [
                {"type": "thinking", "thinking": turn.reasoning},
                {"type": "text", "text": turn.content},
            ]
        else:
            message["reasoning_content"] = turn.reasoning
    if turn.role == "assistant" and turn.tool_calls:
        message["tool_calls"] = [template_tool_call(call) for call in turn.tool_calls]
    if turn.role == "tool":
        message["tool_call_id"] = turn.tool_call_id
        name = turn.name or (call_names or {}).get(turn.tool_call_id, "")
        if name:
            message["name"] = name
    return message


def content_of(turn: ChatTurn) -> str | list[dict]:
    """The message's content: its text, or its parts as content chunks when it has an image."""
    if not turn.parts:
        return turn.content
    if not turn.images:
        return "\n".join(part.text for part in turn.parts if isinstance(part, TextPart))
    return [
        {"type": "image"} if isinstance(part, ImagePart) else {"type": "text", "text": part.text} for part in turn.parts
    ]


def template_tool_call(call: ToolCall) -> dict:
    """An earlier call; its arguments as a dict when they are a JSON object, else the text as it was (a
    malformed call the model made stays what it made)."""
    try:
        arguments = json.loads(call.arguments) if call.arguments else {}
    except ValueError:
        arguments = call.arguments
    if not isinstance(arguments, dict):
        arguments = call.arguments
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": arguments}}


def template_tool(tool: Tool) -> dict:
    """A tool as chat templates take it (OpenAI's shape, parameters as a dict)."""
    function: dict = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    function["parameters"] = parameters_schema(tool)
    return {"type": "function", "function": function}


def render_prompt(tokenizer, request: GenerationRequest, parser: ParserSpec = ParserSpec("none")) -> list[int]:
    """Apply the model's chat template; a conversation the template refuses is a 400 that says why."""
    if not request.messages:
        raise InvalidRequestError("messages must not be empty", param="messages")
    call_names = {call.id: call.name for turn in request.messages for call in turn.tool_calls}
    messages = [template_message(m, parser, call_names) for m in request.messages]
    extra = {"tools": [template_tool(tool) for tool in request.tools]} if request.tools else {}
    try:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False,
                                            **extra)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - templates raise jinja's own exceptions for bad conversations
        raise InvalidRequestError(
            f"The model's chat template rejected these messages: {exc}", param="messages"
        ) from exc
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return list(ids)
