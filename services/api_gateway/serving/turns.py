"""Conversation messages as the engine's turns: text-only turns, tool data included (the proxy-vision rewrite passes
its captioned text; text-only requests pass none), or a natively seeing model's turns with images."""

from __future__ import annotations

from services.common.generation import ChatTurn, ContentPart, ImageBytes, TextPart

from .conversation import ImageInput, Message


def engine_turn(message: Message, text: str | None = None, parts: tuple[ContentPart, ...] = ()) -> ChatTurn:
    """One message as a `ChatTurn`; `text` replaces the message's own text (images described), `parts` carries a
    native model's text and images in order."""
    is_tool = message.role == "tool"
    return ChatTurn(
        message.role,
        "" if parts else message.text() if text is None else text,
        message.reasoning if message.role == "assistant" else "",
        tool_calls=message.tool_calls if message.role == "assistant" else (),
        tool_call_id=message.tool_call_id if is_tool else "",
        name=message.name if is_tool else "",  # a user's `name` is not the engine's business
        parts=parts,
    )


def native_turn(message: Message, images: list[ImageBytes]) -> ChatTurn:
    """A message with images for a natively seeing model: its text parts and `images` (checked, in the order of its
    image parts) as `parts`, in the order the client sent them."""
    pending = iter(images)
    return engine_turn(
        message, parts=tuple(next(pending) if isinstance(p, ImageInput) else TextPart(p) for p in message.parts)
    )
