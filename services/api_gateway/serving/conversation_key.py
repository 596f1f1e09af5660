"""The key a chat request's Generate calls are routed by under `routing.text: affinity` (clients/routing.py).

A conversation should land on the replica whose prefix cache holds its history. Every turn of a chat re-sends
the whole history, so what identifies a conversation across its turns is how it began: the key is the request's
`user` when the client sends one (an explicit "this is one user's session"), else a hash of its first messages:
the system (or developer) messages it opens with and the first user message, each as its role and content
(text as is, an image by its URL: a data: URL is the image's bytes, so the same picture gives the same key); for
a raw prompt (legacy completions), its first `PROMPT_OPENING` characters.
Turn N re-sends those same messages, so it gets the same key as turn 1; two conversations that begin
alike share a key, and also a prefix worth caching together.
"""

from __future__ import annotations

import hashlib

from .conversation import Conversation, ImageInput, Message

_OPENING_ROLES = ("system", "developer")
PROMPT_OPENING = 1024  # characters of a raw prompt that make its key


def conversation_key(conversation: Conversation) -> str:
    """`user:<user>`, or `conv:<hash of the opening messages>`; the same for every turn of a conversation, whichever
    protocol carries it."""
    if conversation.user:
        return f"user:{conversation.user}"
    digest = hashlib.blake2b(digest_size=16)
    if conversation.prompt is not None:
        # A raw prompt (an editor's completions): its opening, which the next keystroke's prompt shares.
        prompt = conversation.prompt
        opening = (
            prompt.text[:PROMPT_OPENING] if prompt.text else ",".join(map(str, prompt.token_ids[: PROMPT_OPENING // 4]))
        )
        digest.update(opening.encode())
    for message in opening_messages(conversation.messages):
        digest.update(_message_bytes(message))
    return f"conv:{digest.hexdigest()}"


def opening_messages(messages: tuple[Message, ...]) -> list[Message]:
    """The system/developer messages a conversation starts with, and its first user message."""
    opening: list[Message] = []
    for message in messages:
        if message.role in _OPENING_ROLES:
            opening.append(message)
            continue
        if message.role == "user":
            opening.append(message)
            break
    return opening


def _message_bytes(message: Message) -> bytes:
    """Role and content, each piece length-prefixed (no two different messages serialize alike)."""
    pieces = [message.role]
    for part in message.parts:
        pieces.append(f"i{part.url}" if isinstance(part, ImageInput) else f"t{part}")
    return b"".join(len(p.encode()).to_bytes(8, "big") + p.encode() for p in pieces)
