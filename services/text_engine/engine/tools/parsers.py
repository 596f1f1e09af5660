"""Tool-call parsers: which part of a model's answer is text and which is a function call.

They run after the reasoning parser, on the answer's pieces only (text, and the `Marker`s the detokenizer
kept), so a call is never read out of the reasoning. Each returns answer text (and markers it does not own,
which the pipeline drops) and `ToolCallDelta`s as OpenAI streams them: a call's first delta has its index,
id and name, the next one its arguments' JSON text.

A call goes out whole, once its end is read: its arguments' closing bracket, or the model moving on (the
next call, the block's closing tag). Until then it is held, because a call cut off by max_tokens must never
reach a client (OpenAI and vLLM report a cut call as `length`, without the call), and a streamed delta
cannot be taken back. At the end of the output, a call still held was cut: it is dropped, with its markup,
and `made_calls` turns False so the request keeps its own finish reason (`length`); the text before the
first call stays the answer. Calls complete before it stay: they went out already.

The formats and the handling of odd output follow vLLM's parsers of the same names:
- `mistral` (Ministral-3 / Magistral, tokenizer v11+): `[TOOL_CALLS]name[ARGS]{...}`, repeated for parallel
  calls; both markers are special tokens. Text before the first `[TOOL_CALLS]` is answer. What follows
  `[ARGS]` is that call's arguments, verbatim, up to the bracket that closes them (text after it, up to the
  next `[TOOL_CALLS]`, is dropped: once the model calls tools, the rest of its output is calls). Arguments
  that are not valid JSON still make a call when the next `[TOOL_CALLS]` ends them (vLLM's choice: the
  model sees in the history that it tried to call); at the end of the output they make one only if they
  parse. A `[TOOL_CALLS]` whose name is not a function name was no call: its text goes out as answer. Ids
  are 9 alphanumerics, as mistral-common requires.
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

from services.common.generation import ToolCallDelta

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
        """Whether the answer is tool calls, so that the request finishes with TOOL_CALLS: True once a call's
        head is read (its tokens are no answer text); after `finish`, False if the output ended inside a call
        (cut off: dropped, and the request keeps its own finish reason)."""

    def feed(self, piece: Piece) -> list[Piece | ToolCallDelta]:
        """The next answer piece: answer text, markers this parser does not own, and call deltas."""

    def finish(self) -> list[Piece | ToolCallDelta]:
        """End of output: answer text still held; a call still held was cut off and is dropped."""


class _JsonEnd:
    """Where a JSON object or array that arrives in pieces ends: brackets counted outside its strings."""

    def __init__(self) -> None:
        self._depth = 0
        self._in_string = self._escaped = False

    def scan(self, text: str, stop: str = "") -> tuple[int, bool]:
        """(how much of `text` belongs to the value, whether the value ended there). A `stop` character outside
        a string ends the reading early (not the value). A value that is no object or array never ends here."""
        for i, char in enumerate(text):
            if self._in_string:
                self._in_string, self._escaped = self._escaped or char != '"', not self._escaped and char == "\\"
            elif char in stop:
                return i, False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth == 0:
                    return i + 1, True
        return len(text), False


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


class _CallParser:
    """What both formats' parsers keep of their calls: the one held while its arguments arrive (`_name`,
    `_arguments`, `_end`: where they close), how many went out, whether the output ended inside one (`_cut`), and
    how a whole call goes out. `_state` is "text" in answer text and "args" while a call's arguments arrive; each
    parser has its other states."""

    def __init__(self, new_id: Callable[[], str]) -> None:
        self._new_id = new_id
        self._state = "text"
        self._name = self._arguments = ""
        self._end = _JsonEnd()
        self._calls = 0
        self._cut = False

    @property
    def made_calls(self) -> bool:
        return (self._calls > 0 or self._state == "args") and not self._cut

    def _deltas(self, name: str, arguments: str) -> list[Piece | ToolCallDelta]:
        """A whole call as it goes out: its index, id and name, then its arguments (when there are any)."""
        index = self._calls
        self._calls += 1
        head = ToolCallDelta(index, id=self._new_id(), name=name)
        return [head, ToolCallDelta(index, arguments=arguments)] if arguments else [head]


class MistralToolParser(_CallParser):
    """`[TOOL_CALLS]name[ARGS]{arguments}`, the markers matched by token id (see the module docstring).

    States: "text", "name" (after [TOOL_CALLS]), "args" (after [ARGS], the call held), "after" (its arguments
    closed)."""

    def __init__(self, tool_calls_id: int, args_id: int, new_id: Callable[[], str] = mistral_call_id) -> None:
        super().__init__(new_id)
        self._tool_calls, self._args = tool_calls_id, args_id

    def feed(self, piece: Piece) -> list[Piece | ToolCallDelta]:
        if isinstance(piece, str):
            return self._text(piece)
        if piece.token_id == self._tool_calls:
            out = self._abandon_name() + self._call()  # a call still open ends here: the model moved on
            self._state, self._name = "name", ""
            return out
        if piece.token_id == self._args:
            if self._state != "name":
                return []  # a stray [ARGS] outside a call header: a special token, never shown
            if not self._name:
                self._state = "text"  # [TOOL_CALLS][ARGS]: no name, no call; what follows is answer
                return []
            self._state, self._arguments, self._end = "args", "", _JsonEnd()
            return []
        return [piece]

    def finish(self) -> list[Piece | ToolCallDelta]:
        if self._state == "args" and _parses(self._arguments):
            return self._call()  # arguments without brackets (a number, a string) that are whole
        if self._state in ("name", "args"):
            self._cut = True  # the output ended inside a call (max_tokens): no call, no name as answer text
        self._state = "text"
        return []

    def _text(self, text: str) -> list[Piece | ToolCallDelta]:
        if self._state == "text":
            return [text]
        if self._state == "after":
            return []
        if self._state == "args":
            used, ended = self._end.scan(text)
            self._arguments += text[:used]
            return self._call() if ended else []
        self._name += text
        if not is_function_name(self._name):
            return self._abandon_name()  # not a function name: the model was writing prose
        return []

    def _call(self) -> list[Piece | ToolCallDelta]:
        """The held call, whole: its deltas."""
        if self._state != "args":
            return []
        self._state = "after"
        return self._deltas(self._name, self._arguments)

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


class HermesToolParser(_CallParser):
    """`<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks in the answer.

    The call's head (`{"name": "f", "arguments": `) is read, then its arguments object up to its closing
    brace (found by brace matching outside strings); then the call goes out. What follows it up to
    `</tool_call>` (the head's closing `}`) is dropped. Odd cases:
    - a block whose head does not have that shape (keys in the other order, no arguments) is held whole
      and parsed as JSON at `</tool_call>` (or at the end); a JSON object with a string `name` is a call
      (no `arguments`: `{}`); a closed block that is anything else goes out as answer text, tags included
      (vLLM returns unparsable output as content);
    - a `<` outside a string in the arguments: the block closes before its arguments did; the call goes out
      with what arrived (the model ended it, as a Mistral call the next one ends);
    - a block (or a tag longer than `<`) the output ended in was cut off: dropped (see the module docstring);
    - whitespace between the answer text and a call, or between calls, is dropped: the template's own
      newlines around the tags are not part of the answer.
    """

    OPEN, CLOSE = "<tool_call>", "</tool_call>"

    def __init__(self, new_id: Callable[[], str] = openai_call_id) -> None:
        super().__init__(new_id)  # states: "text", "head", "args", "tail" (after the arguments), "whole" (odd head)
        self._buf = ""  # text held: a possible tag start (text, tail), the head, or an odd block
        self._space = ""  # whitespace after answer text, dropped if a call follows
        self._after_call = False  # leading whitespace after a call is dropped

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
        if self._state == "text" and len(self._buf) < 2:
            self._answer(self._buf, out)  # a lone `<` is too common in text to be the start of a cut tag
            out.append(self._space)
        elif self._state == "whole" and self._whole_block(self._buf, out):
            pass  # its closing tag is missing, but its JSON is whole: a call
        elif self._state != "tail":
            self._cut = True  # the output ended inside a call (max_tokens): no call, no markup as answer text
        self._state, self._buf, self._space = "text", "", ""
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
        self._name, args_at = matched
        rest, self._buf, self._arguments, self._end = self._buf[args_at:], "", "", _JsonEnd()
        self._state = "args"
        return rest

    def _args(self, text: str, out: list) -> str:
        # `<` is never valid JSON outside a string: the block is closing before its arguments did.
        used, ended = self._end.scan(text, stop="<")
        self._arguments += text[:used]
        if not ended and used == len(text):
            return ""
        self._call(self._name, self._arguments, out)
        self._state = "tail"
        return text[used:]

    def _call(self, name: str, arguments: str, out: list) -> None:
        """A whole call: its deltas."""
        self._space = ""  # whitespace before a call is not part of the answer
        out.extend(self._deltas(name, arguments))

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
        """A block read whole: a call when it is a JSON object with a string name, else (when `closed`) answer
        text. Returns whether it was a call."""
        try:
            call = json.loads(block)
        except ValueError:
            call = None
        if isinstance(call, dict) and isinstance(call.get("name"), str) and call["name"]:
            arguments = call.get("arguments", {})
            text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
            self._call(call["name"], text, out)
            return True
        if closed:
            self._after_call = False
            out.append(self._space + self.OPEN + block + self.CLOSE)
            self._space = ""
        return False

    def _end_call(self, called: bool) -> None:
        """Back to answer text after a block; whitespace right after a call is dropped."""
        self._state, self._buf, self._after_call = "text", "", called


# The head of a block, `{"name": "<name>", "arguments": {`, as a sequence of parts; whitespace may come
# before each part except those inside the name's string.
_HEAD_PARTS = (
    ("{", True),
    ('"name"', True),
    (":", True),
    ('"', True),
    (None, False),
    ('"', False),
    (",", True),
    ('"arguments"', True),
    (":", True),
    ("{", True),
)


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
