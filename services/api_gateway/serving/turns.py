"""Request messages as the engine's turns: text-only turns, tool data included (the proxy-vision rewrite passes
its captioned text; text-only requests pass none), or a natively seeing model's user turns with images."""

from __future__ import annotations

from ..clients.images import ImageBytes
from ..clients.text_engine import ChatTurn, ToolCall
from ..schemas.chat import ChatMessage, TextPart


def chat_turn(message: ChatMessage, text: str | None = None) -> ChatTurn:
    """One message as a `ChatTurn`; `text` replaces the message's own text (images described)."""
    return ChatTurn(
        message.role, message.text() if text is None else text, message.reasoning_text,
        tool_calls=tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or ()),
        tool_call_id=(message.tool_call_id or "") if message.role == "tool" else "",
        name=(message.name or "") if message.role == "tool" else "",  # a user's `name` is not the engine's business
    )  # fmt: skip


def native_turn(message: ChatMessage, images: list[ImageBytes]) -> ChatTurn:
    """A user message with images for a natively seeing model: its text parts and `images` (checked, in the
    order of its image parts) as `parts`, in the order the user sent them."""
    pending = iter(images)
    parts = tuple(part.text if isinstance(part, TextPart) else next(pending) for part in message.content)
    return ChatTurn(message.role, "", parts=parts)
