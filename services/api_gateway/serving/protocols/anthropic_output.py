"""The core's events as Anthropic's answer: a whole `message` (`content_blocks`, `stop_reason`), or its stream.

A stream's frames are Anthropic's named SSE events: each frame is `event: <type>` and `data: <json>` of that type. The stream opens with `message_start` (the message
with no content yet) at once, then writes each content block as `content_block_start`, its deltas
(`thinking_delta` and a `signature_delta`, `text_delta`, `input_json_delta` with the call's arguments as they come)
and `content_block_stop`, with increasing `index`; then `message_delta` (`stop_reason`, `stop_sequence`, usage) and
`message_stop`. Keep-alives are `ping` events. After the first byte an error is an `error` event, the last frame.

`message_start`'s `usage.input_tokens` is the engine's count of a text-only request's prompt (it accepted the request
before the stream started); a request with images to caption starts its stream before the text engine is called,
so there it is 0. `message_delta`'s usage always carries the count (usage on a message_delta is cumulative: the
SDK's accumulated message takes its input_tokens).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator

from services.common.errors import InternalError, ProxyVisionError
from services.common.generation import Finished, ReasoningDelta, TextDelta, ToolCallDelta

from ...errors import anthropic_error
from .. import sse
from ..answers import ChoiceAnswer
from ..core import CaptionsMade, FirstToken, KeepAlive, LiveGeneration, Output

log = logging.getLogger(__name__)

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def message_id() -> str:
    """A fresh `msg_...` id."""
    return f"msg_{uuid.uuid4().hex[:24]}"


def stop_reason(finished: Finished) -> tuple[str, str | None]:
    """Anthropic's `stop_reason` and `stop_sequence` of an engine's `Finished`."""
    if finished.reason == "stop" and finished.stop_sequence:
        return "stop_sequence", finished.stop_sequence
    return STOP_REASONS.get(finished.reason, "end_turn"), None


def tool_input(arguments: str) -> dict:
    """A call's arguments as the `input` object of a `tool_use` block. Constrained calls (tool_choice any/tool,
    strict tools) are valid JSON by construction; anything else the model wrote that is not an object is
    returned as {} (and logged), since Anthropic's `input` is always an object."""
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        value = None
    if not isinstance(value, dict):
        log.warning("A tool call's arguments are not a JSON object; sent as {}: %.200s", arguments)
        return {}
    return value


def content_blocks(answer: ChoiceAnswer, shows_thinking: bool) -> list[dict]:
    """A whole answer's content: its thinking (when shown), its text, its tool calls."""
    blocks = []
    thinking = "".join(answer.reasoning)
    if shows_thinking and thinking:
        blocks.append({"type": "thinking", "thinking": thinking, "signature": ""})
    if text := "".join(answer.text):
        blocks.append({"type": "text", "text": text})
    blocks.extend(
        {"type": "tool_use", "id": call.id, "name": call.name, "input": tool_input("".join(call.arguments))}
        for _, call in sorted(answer.calls.items())
    )
    return blocks


def frame(kind: str, payload: dict) -> str:
    """One named SSE event; its data carries its type, as Anthropic's do."""
    return (
        f"event: {kind}\ndata: {json.dumps({'type': kind, **payload}, separators=(',', ':'), ensure_ascii=False)}\n\n"
    )


PING = frame("ping", {})


class BlockWriter:
    """The content blocks of one answer, opened and closed as the engine's deltas change kind."""

    def __init__(self, shows_thinking: bool) -> None:
        self._shows_thinking = shows_thinking
        self._index = -1
        self._open: str | None = None  # the open block's type

    def frames(self, event: TextDelta | ReasoningDelta | ToolCallDelta) -> list[str]:
        """The frames of one delta: a block closed and one opened when its kind changes, then the delta."""
        if isinstance(event, ReasoningDelta):
            if not (event.text and self._shows_thinking):
                return []
            return [
                *self._switch("thinking", {"type": "thinking", "thinking": "", "signature": ""}),
                self._delta({"type": "thinking_delta", "thinking": event.text}),
            ]
        if isinstance(event, TextDelta):
            if not event.text:
                return []
            return [
                *self._switch("text", {"type": "text", "text": ""}),
                self._delta({"type": "text_delta", "text": event.text}),
            ]
        out = []
        if event.id or event.name:  # a call's first piece: a block of its own
            out += self._close()
            out += self._start("tool_use", {"type": "tool_use", "id": event.id, "name": event.name, "input": {}})
        if event.arguments:
            out.append(self._delta({"type": "input_json_delta", "partial_json": event.arguments}))
        return out

    def close(self) -> list[str]:
        """The frames that end the open block, if any."""
        return self._close()

    def _switch(self, kind: str, block: dict) -> list[str]:
        if self._open == kind:
            return []
        return [*self._close(), *self._start(kind, block)]

    def _start(self, kind: str, block: dict) -> list[str]:
        self._index += 1
        self._open = kind
        return [frame("content_block_start", {"index": self._index, "content_block": block})]

    def _delta(self, delta: dict) -> str:
        return frame("content_block_delta", {"index": self._index, "delta": delta})

    def _close(self) -> list[str]:
        if self._open is None:
            return []
        out = []
        if self._open == "thinking":  # Anthropic signs every thinking block before it stops; ours are unsigned
            out.append(self._delta({"type": "signature_delta", "signature": ""}))
        out.append(frame("content_block_stop", {"index": self._index}))
        self._open = None
        return out


async def message_frames(live: LiveGeneration, model: str, shows_thinking: bool) -> AsyncIterator[str]:
    """The frames of one streamed message, answered as `model` (the name the request used)."""
    message = {
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": live.prompt_tokens or 0, "output_tokens": 0},
    }
    yield frame("message_start", {"message": message})
    blocks = BlockWriter(shows_thinking)
    proxy_vision = None
    try:
        async for item in live:
            if isinstance(item, KeepAlive):
                yield PING
            elif isinstance(item, CaptionsMade):
                proxy_vision = item.proxy_vision  # sent with message_delta: no Anthropic event carries it sooner
            elif isinstance(item, FirstToken):
                if item.timings is not None:
                    yield sse.timing_comment(item.timings, item.text_ttft_ms)
            elif isinstance(item, Output) and isinstance(item.event, Finished):
                for text in blocks.close():
                    yield text
                yield _message_delta(item.event, proxy_vision)
                yield frame("message_stop", {})
            elif isinstance(item, Output):
                for text in blocks.frames(item.event):
                    yield text
    except ProxyVisionError as error:
        log.info("Stream failed after it started: %s", error.message)
        yield frame("error", {"error": anthropic_error(error)[1]["error"]})
    except Exception:  # a bug: the client still gets an error event, the log the traceback
        log.exception("Stream failed unexpectedly")
        failure = InternalError("The server had an error while processing your request.")
        yield frame("error", {"error": anthropic_error(failure)[1]["error"]})
    finally:
        await live.aclose()


def _message_delta(finished: Finished, proxy_vision: dict | None) -> str:
    reason, sequence = stop_reason(finished)
    usage = {"input_tokens": finished.prompt_tokens, "output_tokens": finished.completion_tokens}
    extra = {"proxy_vision": proxy_vision} if proxy_vision is not None else {}
    return frame(
        "message_delta", {"delta": {"stop_reason": reason, "stop_sequence": sequence}, "usage": usage, **extra}
    )
