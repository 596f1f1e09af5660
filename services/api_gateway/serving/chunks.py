"""The pieces of OpenAI answers: `chat.completion.chunk` frames, the message, usage and ids.

Reasoning goes out under the name `gateway.reasoning_field` chooses (`reasoning_content`, `reasoning`, or
both): clients disagree on it, and one server has to serve them all.
"""

from __future__ import annotations

import json
import time
import uuid

from services.common.config import ReasoningField

from ..clients.text_engine import Finished
from . import sse


def completion_id() -> str:
    """A fresh `chatcmpl-...` id."""
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def usage(finished: Finished) -> dict:
    """OpenAI `usage`, with the reasoning tokens among the completion tokens."""
    return {"prompt_tokens": finished.prompt_tokens, "completion_tokens": finished.completion_tokens,
            "total_tokens": finished.prompt_tokens + finished.completion_tokens,
            "completion_tokens_details": {"reasoning_tokens": finished.reasoning_tokens}}  # fmt: skip


def reasoning_fields(field: ReasoningField, text: str) -> dict:
    """The reasoning under the configured name(s)."""
    names = ("reasoning_content", "reasoning") if field == "both" else (field,)
    return {name: text for name in names}


def message(content: str, reasoning: str | None, field: ReasoningField) -> dict:
    """The assistant message of a non-streamed answer (no reasoning key for models that did not reason)."""
    return {"role": "assistant", "content": content, **(reasoning_fields(field, reasoning) if reasoning else {})}


class ChunkMaker:
    """`chat.completion.chunk` frames sharing one id and timestamp.

    Content and reasoning chunks are the hot path (one per token): their JSON is a fixed prefix and suffix
    around the encoded text, built once per stream."""

    def __init__(self, model: str, reasoning_field: ReasoningField = "reasoning_content") -> None:
        self._base = {"id": completion_id(), "object": "chat.completion.chunk", "created": int(time.time()),
                      "model": model, "system_fingerprint": None}  # fmt: skip
        self._content = self._template({"content": self._MARKER})
        self._reasoning = self._template(reasoning_fields(reasoning_field, self._MARKER))

    _MARKER = "\x00TEXT\x00"

    def _template(self, delta: dict) -> list[str]:
        frame = self.delta(delta)
        return frame.split(json.dumps(self._MARKER, ensure_ascii=False))

    @staticmethod
    def _fill(template: list[str], text: str) -> str:
        return json.dumps(text, ensure_ascii=False).join(template)

    def content(self, text: str) -> str:
        """A chunk of answer text."""
        return self._fill(self._content, text)

    def reasoning(self, text: str) -> str:
        """A chunk of reasoning text."""
        return self._fill(self._reasoning, text)

    def delta(self, delta: dict) -> str:
        return sse.event({**self._base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]})

    def finish(self, reason: str) -> str:
        return sse.event({**self._base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}]})

    def usage(self, usage: dict) -> str:
        return sse.event({**self._base, "choices": [], "usage": usage})
