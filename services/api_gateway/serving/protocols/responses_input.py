"""Responses API input as the core's `Conversation`: `instructions`, the stored conversation a
`previous_response_id` continues, and the request's own items.

Items fold into chat-shaped messages: an assistant's reasoning, text and function calls that follow each other are
one assistant message (its reasoning, content and tool calls, as the chat template takes them); a
`function_call_output` is a tool message (its name found from the call it answers), and may carry images.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.common.errors import InvalidRequestError
from services.common.generation import Detail, ResponseFormat, SamplingParams, ToolCall, ToolChoice, ToolChoiceMode

from ...clients.text_engine import OutputOptions
from ...schemas.responses import (
    FunctionCallItem,
    FunctionCallOutputItem,
    InputImage,
    InputItem,
    MessageItem,
    NamedFunction,
    ReasoningItem,
    ResponsesRequest,
)
from ..conversation import Conversation, ImageInput, Message, Part
from ..params import response_format, sampling_params, tool_spec


@dataclass
class _Assistant:
    """An assistant turn being assembled from consecutive items."""

    reasoning: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)

    def message(self) -> Message:
        return Message(
            "assistant",
            ("".join(self.text),) if self.text else (),
            "\n".join(self.reasoning),
            tool_calls=tuple(self.calls),
        )


def _parts(content, where: str) -> tuple[Part, ...]:
    if isinstance(content, str):
        return (content,)
    parts: list[Part] = []
    for j, part in enumerate(content):
        if isinstance(part, InputImage):
            parts.append(ImageInput(part.image_url, Detail(part.detail), f"{where}[{j}].image_url"))
        else:
            parts.append(part.refusal if part.type == "refusal" else part.text)
    return tuple(parts)


def input_messages(items: list[InputItem], history: int = 0) -> list[Message]:
    """The items as messages, in order; the first `history` items are a stored conversation's (an error about one
    of them names `previous_response_id`), the rest the request's `input`."""
    messages: list[Message] = []
    assistant: _Assistant | None = None
    names: dict[str, str] = {}  # call id -> function name, for the tool messages that answer them

    def flush() -> None:
        nonlocal assistant
        if assistant is not None:
            messages.append(assistant.message())
            assistant = None

    for i, item in enumerate(items, start=-history):
        where = f"input[{i}]" if i >= 0 else "previous_response_id"
        if isinstance(item, ReasoningItem):
            flush()
            assistant = _Assistant()
            assistant.reasoning += [c.text for c in (item.content or item.summary)]
        elif isinstance(item, FunctionCallItem):
            assistant = assistant or _Assistant()
            assistant.calls.append(ToolCall(item.call_id, item.name, item.arguments))
            names[item.call_id] = item.name
        elif isinstance(item, MessageItem) and item.role == "assistant":
            if assistant is None or assistant.calls or assistant.text:
                flush()
                assistant = _Assistant()
            assistant.text.append("".join(p for p in _parts(item.content, f"{where}.content") if isinstance(p, str)))
        elif isinstance(item, FunctionCallOutputItem):
            flush()
            messages.append(
                Message(
                    "tool",
                    _parts(item.output, f"{where}.output"),
                    tool_call_id=item.call_id,
                    name=names.get(item.call_id, ""),
                )
            )
        else:
            flush()
            messages.append(Message(item.role, _parts(item.content, f"{where}.content")))
    flush()
    return messages


def request_items(request: ResponsesRequest) -> list[InputItem]:
    """The request's `input` as items (a string is one user message)."""
    if isinstance(request.input, str):
        return [MessageItem(role="user", content=request.input)]
    return list(request.input)


def output_options(request: ResponsesRequest) -> OutputOptions:
    """Tools, tool_choice and `text.format` for the engine."""
    choice = request.tool_choice or "auto"
    fmt = request.text.format if request.text is not None else None
    return OutputOptions(
        tools=tuple(tool_spec(t.name, t.description, t.parameters, t.strict) for t in request.tools or ()),
        tool_choice=ToolChoice(ToolChoiceMode.NAMED, choice.name)
        if isinstance(choice, NamedFunction)
        else ToolChoice(ToolChoiceMode(choice)),
        parallel_tool_calls=request.parallel_tool_calls,
        response_format=response_format(fmt.type, fmt.json_schema()) if fmt is not None else ResponseFormat(),
    )


def generation_params(request: ResponsesRequest) -> SamplingParams:
    """Sampling: OpenAI's Responses API has temperature and top_p; the other sampling fields are vLLM's extras."""
    return sampling_params(
        request,
        max_tokens=request.max_output_tokens,
        top_logprobs=(request.top_logprobs or 0) if request.wants_logprobs else None,
    )


def responses_conversation(request: ResponsesRequest, history: list[InputItem]) -> Conversation:
    """The conversation: instructions first, then the continued conversation's items, then the request's."""
    messages = [Message("system", (request.instructions,))] if request.instructions else []
    messages += input_messages([*history, *request_items(request)], history=len(history))
    if not any(m.role in ("user", "tool") for m in messages):
        raise InvalidRequestError("input has no user message or function call output to answer", param="input")
    return Conversation(
        request.model,
        tuple(messages),
        generation_params(request),
        output_options(request),
        user=request.user,
        messages_param="input",
    )
