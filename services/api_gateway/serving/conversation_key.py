"""The key a chat request's Generate calls are routed by under `routing.text: affinity` (clients/routing.py).

A conversation should land on the replica whose prefix cache holds its history. Every turn of a chat re-sends
the whole history, so what identifies a conversation across its turns is how it began: the key is the request's
`user` when the client sends one (an explicit "this is one user's session"), else a hash of its first messages:
the system (or developer) messages it opens with and the first user message, each as its role and content
(text as is, an image by its URL: a data: URL is the image's bytes, so the same picture gives the same key).
Turn N re-sends those same messages, so it gets the same key as turn 1; two conversations that begin
alike share a key, and also a prefix worth caching together.
"""

from __future__ import annotations

import hashlib

from ..schemas.chat import ChatCompletionRequest, ChatMessage, TextPart

_OPENING_ROLES = ("system", "developer")


def conversation_key(request: ChatCompletionRequest) -> str:
    """`user:<user>`, or `conv:<hash of the opening messages>`; the same for every turn of a conversation."""
    if request.user:
        return f"user:{request.user}"
    digest = hashlib.blake2b(digest_size=16)
    for message in opening_messages(request.messages):
        digest.update(_message_bytes(message))
    return f"conv:{digest.hexdigest()}"


def opening_messages(messages: list[ChatMessage]) -> list[ChatMessage]:
    """The system/developer messages a conversation starts with, and its first user message."""
    opening: list[ChatMessage] = []
    for message in messages:
        if message.role in _OPENING_ROLES:
            opening.append(message)
            continue
        if message.role == "user":
            opening.append(message)
            break
    return opening


def _message_bytes(message: ChatMessage) -> bytes:
    """Role and content, each piece length-prefixed (no two different messages serialize alike)."""
    pieces = [message.role]
    content = message.content
    if isinstance(content, str):
        pieces.append(f"t{content}")
    elif content is not None:
        for part in content:
            pieces.append(f"t{part.text}" if isinstance(part, TextPart) else f"i{part.image.url}")
    return b"".join(len(p.encode()).to_bytes(8, "big") + p.encode() for p in pieces)
