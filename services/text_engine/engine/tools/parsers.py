"""Tool-call parsers: which part of a model's answer is text and which is a function call.

They run after the reasoning parser, on the answer's pieces only (text, and the `Marker`s the detokenizer
kept), so a call is never read out of the reasoning. Each returns answer text (and markers it does not own,
which the pipeline drops) and `ToolCallDelta`s as OpenAI streams them: a call's first delta has its index,
id and name; the later ones are fragments of its arguments' JSON text, sent as they arrive.

The formats and the handling of odd output follow vLLM's parsers of the same names:
- `mistral` (Ministral-3 / Magistral, tokenizer v11+): `[TOOL_CALLS]name[ARGS]{...}`, repeated for parallel
  calls; both markers are special tokens. Text before the first `[TOOL_CALLS]` is answer. Everything after
  `[ARGS]` up to the next `[TOOL_CALLS]` (or the end) is that call's arguments, streamed verbatim: arguments
  that are not valid JSON still make a call (vLLM's choice: the model sees in the history that it tried to
  call). A `[TOOL_CALLS]` whose name is not a function name, or that never gets its `[ARGS]`, was no call:
  its text goes out as answer. Ids are 9 alphanumerics, as mistral-common requires.
- `hermes` (Qwen2.5 / Qwen3): `<tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>`, possibly several.
  The tags are special tokens in some vocabularies and plain text in others; both are read, as text. Ids
  are `call_` + 24 alphanumerics. See `HermesToolParser` for the odd cases.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ..types import ToolCallDelta

if TYPE_CHECKING:  # the output package imports this module: only its types are needed here
    from ..output.detokenizer import Piece

_ALPHANUMERIC = string.ascii_letters + string.digits
_NAME_CHARS = frozenset(_ALPHANUMERIC + "_-.")
_MAX_NAME = 64  # OpenAI's and mistral-common's limit on a function name


def is_function_name(name: str) -> bool:
    """A name the parsers read as a function name: 1 to 64 of letters, digits, `_`, `-` and `.`."""
    return 0 < len(name) <= _MAX_NAME and set(name) <= _NAME_CHARS


def mistral_call_id() -> str:
    """9 alphanumerics: the only ids mistral-common accepts back in a conversation."""
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(9))


def openai_call_id() -> str:
    """`call_` + 24 alphanumerics, as OpenAI's own ids look."""
    return "call_" + "".join(secrets.choice(_ALPHANUMERIC) for _ in range(24))


class ToolCallParser(Protocol):
    """Per-request tool-call parser state (one request's coroutine owns it)."""

    @property
    def made_calls(self) -> bool:
        """Whether a call has started (its first delta went out): the request finishes with TOOL_CALLS."""

    def feed(self, piece: Piece) -> list[Piece | ToolCallDelta]:
        """The next answer piece: answer text, markers this parser does not own, and call deltas."""

    def finish(self) -> list[Piece | ToolCallDelta]:
        """End of output: anything still held."""


class MistralToolParser:
    """`[TOOL_CALLS]name[ARGS]{arguments}`, the markers matched by token id (see the module docstring)."""

    def __init__(self, tool_calls_id: int, args_id: int, new_id: Callable[[], str] = mistral_call_id) -> None:
        self._tool_calls, self._args, self._new_id = tool_calls_id, args_id, new_id
        self._state = "text"  # "text" | "name" (after [TOOL_CALLS]) | "args" (after [ARGS])
        self._name = ""
        self._calls = 0

    @property
    def made_calls(self) -> bool:
        return self._calls > 0

    def feed(self, piece: Piece) -> list[Piece | ToolCallDelta]:
        if isinstance(piece, str):
            return self._text(piece)
        if piece.token_id == self._tool_calls:
            out = self._abandon_name()  # a [TOOL_CALLS] still waiting for its [ARGS] was no call
            self._state, self._name = "name", ""
            return out
        if piece.token_id == self._args:
            if self._state != "name":
                return []  # a stray [ARGS] outside a call header: a special token, never shown
            if not self._name:
                self._state = "text"  # [TOOL_CALLS][ARGS]: no name, no call; what follows is answer
                return []
            self._state = "args"
            self._calls += 1
            return [ToolCallDelta(self._calls - 1, id=self._new_id(), name=self._name)]
        return [piece]

    def finish(self) -> list[Piece | ToolCallDelta]:
        # A call header cut off after complete calls (max_tokens) is the start of one more call, not answer
        # text: once the model is calling tools, the rest of its output is calls (vLLM keeps only the text
        # before the first call as content).
        held = self._abandon_name()
        return [] if self._calls else held

    def _text(self, text: str) -> list[Piece | ToolCallDelta]:
        if self._state == "text":
            return [text]
        if self._state == "args":
            return [ToolCallDelta(self._calls - 1, arguments=text)]
        self._name += text
        if not is_function_name(self._name):
            return self._abandon_name()  # not a function name: the model was writing prose
        return []

    def _abandon_name(self) -> list[Piece | ToolCallDelta]:
        if self._state != "name":
            return []
        self._state, name, self._name = "text", self._name, ""
        return [name] if name else []


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a proper start of `tag` (it may become the tag)."""
    for length in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:length]):
            return length
    return 0


class HermesToolParser:
    """`<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks in the answer.

    The call's head (`{"name": "f", "arguments": `) is held until it is complete; then the id and name go
    out and the arguments object streams as it arrives (its end found by brace matching outside strings).
    What follows it up to `</tool_call>` (the head's closing `}`) is dropped. Odd cases:
    - a block whose head does not have that shape (keys in the other order, no arguments) is held whole
      and parsed as JSON at `</tool_call>` (or at the end); a JSON object with a string `name` is a call
      (no `arguments`: `{}`), and anything else goes out as answer text, tags included (vLLM returns
      unparsable output as content);
    - a block cut off before its arguments started (max_tokens) is answer text too, for the same reason,
      unless calls came before it (then it is dropped: the model was calling tools); one cut off inside its
      arguments stays a call whose arguments are incomplete;
    - whitespace between the answer text and a call, or between calls, is dropped: the template's own
      newlines around the tags are not part of the answer.
    """

    OPEN, CLOSE = "<tool_call>", "</tool_call>"

    def __init__(self, new_id: Callable[[], str] = openai_call_id) -> None:
        self._new_id = new_id
        self._state = "text"  # "text" | "head" | "args" | "tail" (after the arguments) | "whole" (odd head)
        self._buf = ""  # text held: a possible tag start (text, tail), the head, or an odd block
        self._space = ""  # whitespace after answer text, dropped if a call follows
        self._after_call = False  # leading whitespace after a call is dropped
        self._depth = 0
        self._in_string = self._escaped = False
        self._calls = 0

    @property
    def made_calls(self) -> bool:
        return self._calls > 0

    def feed(self, piece: Piece) -> list[Piece | ToolCallDelta]:
        if not isinstance(piece, str):
            if piece.token not in (self.OPEN, self.CLOSE):
                return [piece]
            piece = piece.token  # a tag that is one special token reads the same as the tag in text
        out: list[Piece | ToolCallDelta] = []
        text = piece
        while text:
            text = getattr(self, "_" + self._state)(text, out)
        return out

    def finish(self) -> list[Piece | ToolCallDelta]:
        out: list[Piece | ToolCallDelta] = []
        if self._state == "text":
            self._answer(self._buf, out)
            out.append(self._space)
        elif self._state in ("head", "whole") and not self._calls:
            self._whole_block(self._buf, out)  # after complete calls, a cut-off block is no answer text (see Mistral's)
        self._buf = self._space = ""
        return [o for o in out if o != ""]

    # Each state takes the text not yet read, appends what it can emit, and returns what is left.
    def _text(self, text: str, out: list) -> str:
        buf = self._buf + text
        at = buf.find(self.OPEN)
        if at < 0:
            keep = _partial_suffix(buf, self.OPEN)
            self._answer(buf[: len(buf) - keep], out)
            self._buf = buf[len(buf) - keep :]
            return ""
        self._answer(buf[:at], out)
        self._buf, self._state = "", "head"
        return buf[at + len(self.OPEN) :]

    def _answer(self, text: str, out: list) -> None:
        """Answer text, with whitespace next to a call held back or dropped."""
        if not text:
            return
        body = text.rstrip()
        if not body:
            if not self._after_call:
                self._space += text
            return
        if self._after_call:
            body_start = len(text) - len(text.lstrip())
            text, self._space, self._after_call = text[body_start:], "", False
            body = text.rstrip()
        out.append(self._space + body)
        self._space = text[len(body) :]

    def _head(self, text: str, out: list) -> str:
        self._buf += text
        close = self._buf.find(self.CLOSE)
        matched = _match_head(self._buf if close < 0 else self._buf[:close])
        if matched is None and close < 0:
            return ""  # the head is not complete yet
        if not matched:
            # An odd head, or a block that closed before its arguments started: read it whole.
            self._state = "whole"
            text, self._buf = self._buf, ""
            return text
        name, args_at = matched
        self._calls += 1
        self._space = ""  # whitespace before a call is not part of the answer
        out.append(ToolCallDelta(self._calls - 1, id=self._new_id(), name=name))
        rest, self._buf = self._buf[args_at:], ""
        self._state, self._depth, self._in_string, self._escaped = "args", 0, False, False
        return rest

    def _args(self, text: str, out: list) -> str:
        for i, char in enumerate(text):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
                continue
            if char == "<":
                # Never valid JSON outside a string: the block is closing before its arguments did.
                self._emit_args(text[:i], out)
                self._state = "tail"
                return text[i:]
            if char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth == 0:
                    self._emit_args(text[: i + 1], out)
                    self._state = "tail"
                    return text[i + 1 :]
        self._emit_args(text, out)
        return ""

    def _emit_args(self, fragment: str, out: list) -> None:
        if fragment:
            out.append(ToolCallDelta(self._calls - 1, arguments=fragment))

    def _tail(self, text: str, out: list) -> str:
        buf = self._buf + text
        close, reopen = buf.find(self.CLOSE), buf.find(self.OPEN)
        if close >= 0 and (reopen < 0 or close < reopen):
            self._end_call(called=True)
            return buf[close + len(self.CLOSE) :]
        if reopen >= 0:  # a new block without the previous one's closing tag
            self._end_call(called=True)
            self._state = "head"
            return buf[reopen + len(self.OPEN) :]
        self._buf = buf[-(len(self.CLOSE) - 1) :]  # only a possible tag start matters here
        return ""

    def _whole(self, text: str, out: list) -> str:
        self._buf += text
        close = self._buf.find(self.CLOSE)
        if close < 0:
            return ""
        block, rest = self._buf[:close], self._buf[close + len(self.CLOSE) :]
        self._end_call(called=self._whole_block(block, out, closed=True))
        return rest

    def _whole_block(self, block: str, out: list, closed: bool = False) -> bool:
        """A block read whole: a call when it is a JSON object with a string name, else answer text.
        Returns whether it was a call."""
        try:
            call = json.loads(block)
        except ValueError:
            call = None
        if isinstance(call, dict) and isinstance(call.get("name"), str) and call["name"]:
            arguments = call.get("arguments", {})
            self._calls += 1
            self._space = ""
            out.append(ToolCallDelta(self._calls - 1, id=self._new_id(), name=call["name"]))
            text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
            out.append(ToolCallDelta(self._calls - 1, arguments=text))
            return True
        self._after_call = False
        out.append(self._space + self.OPEN + block + (self.CLOSE if closed else ""))
        self._space = ""
        return False

    def _end_call(self, called: bool) -> None:
        """Back to answer text after a block; whitespace right after a call is dropped."""
        self._state, self._buf, self._after_call = "text", "", called


# The head of a block, `{"name": "<name>", "arguments": {`, as a sequence of parts; whitespace may come
# before each part except those inside the name's string.
_HEAD_PARTS = (("{", True), ('"name"', True), (":", True), ('"', True), (None, False), ('"', False),
               (",", True), ('"arguments"', True), (":", True), ("{", True))  # fmt: skip


def _match_head(buf: str) -> tuple[str, int] | bool | None:
    """(name, where the arguments' `{` is) once the head is complete; None while `buf` may still become
    one; False when it cannot."""
    pos, name = 0, ""
    for literal, spaced in _HEAD_PARTS:
        if spaced:
            while pos < len(buf) and buf[pos].isspace():
                pos += 1
        if literal is None:  # the name: up to its closing quote
            end = pos
            while end < len(buf) and buf[end] not in '"\\':
                end += 1
            if end == len(buf):
                return None
            if buf[end] == "\\":
                return False  # an escaped name: leave it to the whole-block parse
            name, pos = buf[pos:end], end
            continue
        chunk = buf[pos : pos + len(literal)]
        if chunk != literal:
            return None if literal.startswith(chunk) and pos + len(chunk) == len(buf) else False
        pos += len(literal)
    return (name, pos - 1) if name else False
