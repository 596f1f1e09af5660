"""The prompt: a conversation rendered through the model's own chat template into token ids.

The engine owns the template, so clients never see model formats. An earlier assistant answer's reasoning
goes back to the template the way that template takes thinking (see `ParserSpec.thinking_in_content_chunks`):
as a `thinking` content chunk before the answer text (Mistral), or as the message's `reasoning_content`
key (`<think>` templates such as Qwen3's).
"""

from __future__ import annotations

from services.common.errors import InvalidRequestError

from .output import ParserSpec
from .types import ChatTurn, GenerationRequest

_ROLE_ALIASES = {"developer": "system"}


def template_message(turn: ChatTurn, parser: ParserSpec) -> dict:
    """One message as chat templates expect it."""
    message: dict = {"role": _ROLE_ALIASES.get(turn.role, turn.role), "content": turn.content}
    if turn.role == "assistant" and turn.reasoning:
        if parser.thinking_in_content_chunks:
            message["content"] = [{"type": "thinking", "thinking": turn.reasoning}, {"type": "text", "text": turn.content}]
        else:
            message["reasoning_content"] = turn.reasoning
    return message


def render_prompt(tokenizer, request: GenerationRequest, parser: ParserSpec = ParserSpec("none")) -> list[int]:
    """Apply the model's chat template; a conversation the template refuses is a 400 that says why."""
    if not request.messages:
        raise InvalidRequestError("messages must not be empty", param="messages")
    messages = [template_message(m, parser) for m in request.messages]
    try:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    except Exception as exc:  # noqa: BLE001 - templates raise jinja's own exceptions for bad conversations
        raise InvalidRequestError(f"The model's chat template rejected these messages: {exc}", param="messages") from exc
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return list(ids)
