"""Responses API output: the `response` object, its output items, and the typed stream events that build them.

Output items come in the order the model produced them: a `reasoning` item (a reasoning model's thinking, as
`reasoning_text` content), a `message` item (its `output_text`), then one `function_call` item per call. A stream
announces each item (`response.output_item.added`, and a content part for text and reasoning), sends its deltas,
and closes it (`...done` events) before the next one opens; every event carries the next `sequence_number`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence

from services.common.generation import Finished, TokenLogprob, ToolCallDelta

from ...schemas.responses import ResponsesRequest
from ..answers import ChoiceAnswer
from ..chunks import token_logprobs


def new_id(prefix: str) -> str:
    """A fresh id: `resp_...`, `msg_...`, `rs_...`, `fc_...`."""
    return f"{prefix}_{uuid.uuid4().hex}"


def usage(finished: Finished) -> dict:
    """The Responses API's `usage`."""
    return {
        "input_tokens": finished.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": finished.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": finished.reasoning_tokens},
        "total_tokens": finished.prompt_tokens + finished.completion_tokens,
    }


def reasoning_item(item_id: str, text: str, status: str = "completed") -> dict:
    return {
        "id": item_id,
        "type": "reasoning",
        "summary": [],
        "status": status,
        "content": [{"type": "reasoning_text", "text": text}] if status == "completed" else [],
    }


def text_part(text: str, logprobs: list[dict] | None = None) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs or []}


def message_item(item_id: str, text: str | None, logprobs: list[dict] | None = None, status: str = "completed") -> dict:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [text_part(text, logprobs)] if text is not None else [],
    }


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def output_items(answer: ChoiceAnswer, finished: Finished, with_logprobs: bool) -> list[dict]:
    """A whole answer's output items."""
    items = []
    if answer.reasoning:
        items.append(reasoning_item(new_id("rs"), "".join(answer.reasoning)))
    text = "".join(answer.text)
    if text or not answer.calls:
        status = "incomplete" if finished.reason == "length" else "completed"
        logprobs = token_logprobs(answer.logprobs) if with_logprobs else None
        items.append(message_item(new_id("msg"), text, logprobs, status))
    for _, call in sorted(answer.calls.items()):
        items.append(call_item(new_id("fc"), call.id, call.name, "".join(call.arguments)))
    return items


def response_object(
    response_id: str,
    request: ResponsesRequest,
    model: str,
    *,
    created_at: int,
    status: str,
    output: list[dict],
    finished: Finished | None = None,
    error: dict | None = None,
    extra: dict | None = None,
) -> dict:
    """The `response` object: what was asked (echoed as OpenAI echoes it) and what came of it."""
    incomplete = status == "incomplete"
    fmt = request.text.format if request.text is not None and request.text.format is not None else None
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "completed_at": int(time.time()) if status in ("completed", "incomplete", "failed") else None,
        "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "model": model,
        "output": output,
        "parallel_tool_calls": request.parallel_tool_calls is not False,
        "previous_response_id": request.previous_response_id,
        "reasoning": request.reasoning.model_dump() if request.reasoning is not None else None,
        "store": request.store,
        "temperature": request.temperature,
        "text": {"format": fmt.model_dump(by_alias=True, exclude_none=True) if fmt is not None else {"type": "text"}},
        "tool_choice": _tool_choice(request),
        "tools": [t.model_dump(exclude_none=True) for t in request.tools or ()],
        "top_p": request.top_p,
        "top_logprobs": request.top_logprobs,
        "truncation": request.truncation or "disabled",
        "usage": usage(finished) if finished is not None else None,
        "user": request.user,
        "metadata": request.metadata or {},
        **(extra or {}),
    }


def _tool_choice(request: ResponsesRequest):
    choice = request.tool_choice or "auto"
    return choice if isinstance(choice, str) else choice.model_dump()


def status_of(finished: Finished) -> str:
    """`incomplete` when the answer was cut by max_output_tokens, else `completed`."""
    return "incomplete" if finished.reason == "length" else "completed"


class StreamEvents:
    """The typed events of one streamed response, numbered in order; it tracks the item being written and the
    items already done (the final `response.completed` lists them)."""

    def __init__(self, with_logprobs: bool) -> None:
        self.sequence = 0
        self.output: list[dict] = []  # done items, in output order
        self._open: dict | None = None  # the item being streamed: its kind, id, index and accumulated text
        self._with_logprobs = with_logprobs

    def event(self, kind: str, **fields) -> str:
        """One SSE frame (`event:` and `data:` lines), with the next sequence number."""
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(payload, separators=(',', ':'), ensure_ascii=False)}\n\n"

    def _start(self, kind: str, item: dict, part: dict | None = None) -> list[str]:
        index = len(self.output)
        self._open = {"kind": kind, "id": item["id"], "index": index, "text": [], "logprobs": [], "item": item}
        frames = [self.event("response.output_item.added", output_index=index, item=item)]
        if part is not None:
            frames.append(
                self.event(
                    "response.content_part.added", item_id=item["id"], output_index=index, content_index=0, part=part
                )
            )
        return frames

    def reasoning(self, text: str) -> list[str]:
        """A piece of reasoning (opens the reasoning item if needed)."""
        frames = (
            []
            if self._is_open("reasoning")
            else self.close()
            + self._start(
                "reasoning", reasoning_item(new_id("rs"), "", "in_progress"), {"type": "reasoning_text", "text": ""}
            )
        )
        return [*frames, self._delta("response.reasoning_text.delta", text)]

    def text(self, text: str, logprobs: Sequence[TokenLogprob]) -> list[str]:
        """A piece of answer text (opens the message item if needed)."""
        frames = (
            []
            if self._is_open("message")
            else self.close()
            + self._start("message", message_item(new_id("msg"), None, status="in_progress"), text_part(""))
        )
        entries = token_logprobs(logprobs) if self._with_logprobs else []
        self._open["logprobs"] += entries
        return [*frames, self._delta("response.output_text.delta", text, logprobs=entries)]

    def tool_call(self, piece: ToolCallDelta) -> list[str]:
        """A piece of a function call: its opening (id and name) opens a new item, the rest are argument deltas."""
        frames = []
        if piece.id or piece.name:
            frames = self.close() + self._start(
                "function_call", call_item(new_id("fc"), piece.id, piece.name, "", "in_progress")
            )
        if piece.arguments and self._is_open("function_call"):
            frames.append(self._delta("response.function_call_arguments.delta", piece.arguments, in_content=False))
        return frames

    def _delta(self, event: str, piece: str, *, in_content: bool = True, **after) -> str:
        """`piece` added to the open item's text, and its delta `event` (of its content part when `in_content`)."""
        self._open["text"].append(piece)
        where = {"item_id": self._open["id"], "output_index": self._open["index"]}
        if in_content:
            where["content_index"] = 0
        return self.event(event, **where, delta=piece, **after)

    def _is_open(self, kind: str) -> bool:
        return self._open is not None and self._open["kind"] == kind

    def close(self, status: str = "completed") -> list[str]:
        """Finish the item being written, if any (its `...done` events)."""
        if self._open is None:
            return []
        item_id, index, text = self._open["id"], self._open["index"], "".join(self._open["text"])
        common = {"item_id": item_id, "output_index": index}
        kind, started = self._open["kind"], self._open["item"]
        if kind == "reasoning":
            part = {"type": "reasoning_text", "text": text}
            frames = [
                self.event("response.reasoning_text.done", **common, content_index=0, text=text),
                self.event("response.content_part.done", **common, content_index=0, part=part),
            ]
            item = reasoning_item(item_id, text)
        elif kind == "message":
            logprobs = self._open["logprobs"]
            frames = [
                self.event("response.output_text.done", **common, content_index=0, text=text, logprobs=logprobs),
                self.event("response.content_part.done", **common, content_index=0, part=text_part(text, logprobs)),
            ]
            item = message_item(item_id, text, logprobs, status)
        else:
            frames = [self.event("response.function_call_arguments.done", **common, arguments=text)]
            item = call_item(item_id, started["call_id"], started["name"], text)
        self.output.append(item)
        self._open = None
        return [*frames, self.event("response.output_item.done", output_index=index, item=item)]
