"""The pieces of OpenAI answers: `chat.completion.chunk` frames, the message, logprobs, usage and ids.

Reasoning goes out under the name `gateway.reasoning_field` chooses (`reasoning_content`, `reasoning`, or
both): clients disagree on it, and one server has to serve them all. Tool calls stream as OpenAI streams
them: a call's first chunk has its index, id, type and name with empty arguments, the next ones only
its index and a fragment of the arguments.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence

from services.common.config import ReasoningField
from services.common.generation import Finished, TokenLogprob, ToolCallDelta

from . import sse


def completion_id() -> str:
    """A fresh `chatcmpl-...` id."""
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def usage(finished: Sequence[Finished]) -> dict:
    """OpenAI `usage` of the choices' generations: the prompt once (every choice has the same), their
    completion tokens (reasoning tokens among them) summed, as vLLM counts n > 1."""
    prompt = finished[0].prompt_tokens
    completion = sum(f.completion_tokens for f in finished)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "completion_tokens_details": {"reasoning_tokens": sum(f.reasoning_tokens for f in finished)},
    }


def reasoning_fields(field: ReasoningField, text: str) -> dict:
    """The reasoning under the configured name(s)."""
    names = ("reasoning_content", "reasoning") if field == "both" else (field,)
    return {name: text for name in names}


def message(content: str, reasoning: str | None, field: ReasoningField, tool_calls: Sequence[dict] = ()) -> dict:
    """The assistant message of a non-streamed answer (no reasoning key for models that did not reason; with
    tool calls, `content` is null when the model said nothing else, as OpenAI answers)."""
    body = {"role": "assistant", "content": content if content or not tool_calls else None}
    if tool_calls:
        body["tool_calls"] = list(tool_calls)
    return {**body, **(reasoning_fields(field, reasoning) if reasoning else {})}


# What a token the engine masked out (logprob -inf) is reported with: JSON has no infinity (vLLM does the same).
MASKED_LOGPROB = -9999.0


def token_logprobs(entries: Sequence[TokenLogprob]) -> list[dict]:
    """OpenAI `logprobs.content` entries (`bytes` as a list of ints; the token's UTF-8 if the engine sent none)."""
    return [
        {
            "token": e.token,
            "logprob": _finite(e.logprob),
            "bytes": _bytes(e.token, e.bytes),
            "top_logprobs": [
                {"token": t.token, "logprob": _finite(t.logprob), "bytes": _bytes(t.token, t.bytes)}
                for t in e.top_logprobs
            ],
        }
        for e in entries
    ]


def _finite(logprob: float) -> float:
    return logprob if logprob >= MASKED_LOGPROB else MASKED_LOGPROB  # -inf and NaN alike


def _bytes(token: str, raw: bytes) -> list[int]:
    return list(raw or token.encode("utf-8"))


def choice_logprobs(entries: Sequence[TokenLogprob]) -> dict:
    """`choices[].logprobs` for these tokens."""
    return {"content": token_logprobs(entries), "refusal": None}


class ChunkMaker:
    """`chat.completion.chunk` frames sharing one id and timestamp; each frame carries one choice.

    Content and reasoning chunks are the hot path (one per token): their JSON is a fixed prefix and suffix
    around the encoded text, built once per stream and choice."""

    def __init__(self, model: str, reasoning_field: ReasoningField = "reasoning_content") -> None:
        self._base = {
            "id": completion_id(),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": None,
        }
        self._reasoning_field = reasoning_field
        self._templates: dict[int, tuple[list[str], list[str]]] = {}  # choice index -> (content, reasoning)

    _MARKER = "\x00TEXT\x00"

    def _templates_of(self, index: int) -> tuple[list[str], list[str]]:
        if index not in self._templates:
            self._templates[index] = (
                self._template({"content": self._MARKER}, index),
                self._template(reasoning_fields(self._reasoning_field, self._MARKER), index),
            )
        return self._templates[index]

    def _template(self, delta: dict, index: int) -> list[str]:
        frame = self.delta(delta, index)
        return frame.split(json.dumps(self._MARKER, ensure_ascii=False))

    @staticmethod
    def _fill(template: list[str], text: str) -> str:
        return json.dumps(text, ensure_ascii=False).join(template)

    def content(self, text: str, index: int = 0, logprobs: Sequence[TokenLogprob] | None = None) -> str:
        """A chunk of answer text, with its tokens' logprobs when they were asked for."""
        if logprobs is not None:
            return self.delta({"content": text}, index, choice_logprobs(logprobs))
        return self._fill(self._templates_of(index)[0], text)

    def reasoning(self, text: str, index: int = 0) -> str:
        """A chunk of reasoning text."""
        return self._fill(self._templates_of(index)[1], text)

    def tool_call(self, piece: ToolCallDelta, index: int = 0) -> list[str]:
        """The chunks of one engine tool-call delta: the call's opening chunk if it names the call, then its
        arguments fragment if any."""
        frames = []
        if piece.id or piece.name:
            opening = {
                "index": piece.index,
                "id": piece.id,
                "type": "function",
                "function": {"name": piece.name, "arguments": ""},
            }
            frames.append(self.delta({"tool_calls": [opening]}, index))
        if piece.arguments:
            fragment = {"index": piece.index, "function": {"arguments": piece.arguments}}
            frames.append(self.delta({"tool_calls": [fragment]}, index))
        return frames

    def delta(self, delta: dict, index: int = 0, logprobs: dict | None = None) -> str:
        return sse.event(
            {**self._base, "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": None}]}
        )

    def finish(self, reason: str, index: int = 0) -> str:
        return sse.event(
            {**self._base, "choices": [{"index": index, "delta": {}, "logprobs": None, "finish_reason": reason}]}
        )

    def annotation(self, fields: dict) -> str:
        """A chunk that carries `fields` at the top level (e.g. `proxy_vision`) and an empty delta for choice 0:
        a client that reads `chunk.choices[0]` of every chunk finds one, with nothing to add to the answer."""
        return sse.event(
            {**self._base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": None}], **fields}
        )

    def usage(self, usage: dict) -> str:
        return sse.event({**self._base, "choices": [], "usage": usage})
