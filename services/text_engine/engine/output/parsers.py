"""Output parsers: which part of a model's output is reasoning and which is the answer.

A parser sees the pieces of one request's output in order (text, and `Marker`s for the special tokens it
asked the detokenizer to keep) and tags each with a `Channel`. Markers it does not own pass through on the
channel they arrived in, so a later parser (tool calls) can read the answer's markers; markers it owns are
consumed. `ParserSpec` is chosen once per model at load (`parser_for`); `ParserSpec.new()` makes the
per-request state. The spec also carries the model's tool-call format (engine/tools/parsers.py reads calls
out of the answer segments; `ParserSpec.new_tool_parser()`).

The reasoning parsers follow vLLM's, so clients see what they see there:
- `mistral` (`[THINK]`...`[/THINK]`, Ministral-3 / Magistral): text before `[THINK]` is answer; after it,
  reasoning until `[/THINK]`; then answer. Only `[THINK]` (e.g. cut by max_tokens): the rest is reasoning.
  Only `[/THINK]` (a model that was not prompted to think): the marker is dropped, everything is answer.
  Neither: everything is answer.
- `deepseek_r1` (`<think>`...`</think>`, whose templates usually open the `<think>` in the prompt):
  everything up to `</think>` is reasoning, with or without a generated `<think>`; then answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from services.common.config import ReasoningParser, ToolCallParser
from services.common.hf_models import ModelLoadError

from ..tools.parsers import HermesToolParser, MistralToolParser, ToolCallParser as ToolCallParserState
from .detokenizer import Marker, Piece

# name -> (start marker, end marker, whether output starts inside the reasoning)
_THINKING_FORMATS = {
    "mistral": ("[THINK]", "[/THINK]", False),
    "deepseek_r1": ("<think>", "</think>", True),
}
_MISTRAL_TOOL_MARKERS = ("[TOOL_CALLS]", "[ARGS]")
_HERMES_TAGS = (HermesToolParser.OPEN, HermesToolParser.CLOSE)


class Channel(str, Enum):
    """What a piece of output is."""

    ANSWER = "answer"
    REASONING = "reasoning"


@dataclass(frozen=True)
class Segment:
    """One piece of output with its channel."""

    channel: Channel
    piece: Piece


class OutputParser(Protocol):
    """Per-request parser state (one request's coroutine owns it)."""

    @property
    def in_reasoning(self) -> bool:
        """Whether the output is inside the reasoning now (token accounting reads it)."""

    def feed(self, piece: Piece) -> list[Segment]:
        """Tag the next piece; may return nothing (a consumed marker) or several segments."""

    def finish(self) -> list[Segment]:
        """End of output: anything still held."""


class PlainParser:
    """Everything is answer (models without reasoning, or `reasoning_parser: none`)."""

    in_reasoning = False

    def feed(self, piece: Piece) -> list[Segment]:
        return [Segment(Channel.ANSWER, piece)]

    def finish(self) -> list[Segment]:
        return []


class LiteralParser:
    """Everything is answer, and kept markers are written out as their text (raw prompts: the output is the
    model's text as it wrote it, a reasoning model's `[THINK]`/`<think>` included)."""

    in_reasoning = False

    def feed(self, piece: Piece) -> list[Segment]:
        return [Segment(Channel.ANSWER, piece.token if isinstance(piece, Marker) else piece)]

    def finish(self) -> list[Segment]:
        return []


class ThinkingParser:
    """Reasoning between a start and an end marker (see the module docstring for the four cases)."""

    def __init__(self, start_id: int, end_id: int, starts_in_reasoning: bool) -> None:
        self._start, self._end = start_id, end_id
        self._state = "reasoning" if starts_in_reasoning else "before"

    @property
    def in_reasoning(self) -> bool:
        return self._state == "reasoning"

    def feed(self, piece: Piece) -> list[Segment]:
        if isinstance(piece, Marker) and piece.token_id == self._start:
            if self._state == "before":
                self._state = "reasoning"
            return []  # a second start marker (or one inside the reasoning) is dropped, as vLLM does
        if isinstance(piece, Marker) and piece.token_id == self._end:
            if self._state == "reasoning":
                self._state = "after"
            return []  # an end marker without a start is dropped: the text stays answer
        return [Segment(Channel.REASONING if self.in_reasoning else Channel.ANSWER, piece)]

    def finish(self) -> list[Segment]:
        return []


@dataclass(frozen=True)
class ParserSpec:
    """A model's output parsing, resolved once at load from `reasoning_parser`, `tool_call_parser`, the
    tokenizer and the chat template."""

    reasoning: str  # "mistral" | "deepseek_r1" | "none"
    markers: tuple[Marker, ...] = ()
    tools: str = "none"  # "mistral" | "hermes" | "none"
    tool_markers: tuple[Marker, ...] = ()

    @property
    def keep(self) -> dict[int, str]:
        """Special tokens the detokenizer must keep for the reasoning parser: id -> literal."""
        return {m.token_id: m.token for m in self.markers}

    def keep_for(self, parse_tools: bool) -> dict[int, str]:
        """The keep-set of one request: the tool markers too when its tool calls are parsed (otherwise a
        tag that is ordinary text in the vocabulary, like Qwen's `<tool_call>`, stays text)."""
        return {m.token_id: m.token for m in self.markers + (self.tool_markers if parse_tools else ())}

    @property
    def thinking_in_content_chunks(self) -> bool:
        """How the chat template takes an earlier answer's reasoning: Mistral templates read `thinking`
        content chunks; `<think>` templates (Qwen3, DeepSeek-R1) read a `reasoning_content` key."""
        return self.reasoning == "mistral"

    def new(self, constrained: bool = False) -> OutputParser:
        """Fresh per-request parser state. `constrained`: a grammar shapes the output from its first token
        (a forced tool call, a response_format), so the output does not start inside a reasoning even
        where the format says it would (the grammar leaves no room for one)."""
        if self.reasoning == "none":
            return PlainParser()
        start, end = self.markers
        return ThinkingParser(start.token_id, end.token_id, _THINKING_FORMATS[self.reasoning][2] and not constrained)

    def new_tool_parser(self) -> ToolCallParserState | None:
        """Fresh per-request tool-call parser state; None for a model without a tool format."""
        if self.tools == "mistral":
            calls, args = self.tool_markers
            return MistralToolParser(calls.token_id, args.token_id)
        if self.tools == "hermes":
            return HermesToolParser()
        return None


def special_token_id(tokenizer, token: str) -> int | None:
    """The id of `token` when it is one token of the vocabulary (not split, not the unknown token)."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or isinstance(token_id, list):
        return None
    if token_id == getattr(tokenizer, "unk_token_id", None) and token != getattr(tokenizer, "unk_token", None):
        return None
    return token_id if tokenizer.convert_ids_to_tokens(token_id) == token else None


def parser_for(name: ReasoningParser, tokenizer, tool_call_parser: ToolCallParser = "none") -> ParserSpec:
    """The model's parsers. `auto` picks the reasoning format whose two markers are single tokens of the
    vocabulary; an explicit name whose markers the tokenizer lacks fails the load (it could never split
    anything). The tool format is resolved by `tool_format_for`."""
    tools, tool_markers = tool_format_for(tool_call_parser, tokenizer)
    candidates = list(_THINKING_FORMATS) if name == "auto" else [] if name == "none" else [name]
    for fmt in candidates:
        start, end, _ = _THINKING_FORMATS[fmt]
        ids = special_token_id(tokenizer, start), special_token_id(tokenizer, end)
        if None not in ids:
            return ParserSpec(fmt, (Marker(ids[0], start), Marker(ids[1], end)), tools, tool_markers)
        if name != "auto":
            raise ModelLoadError(
                f"reasoning_parser {name!r} needs the tokens {start} and {end}, which this "
                "tokenizer does not have as single tokens; use 'auto' or 'none'"
            )
    return ParserSpec("none", (), tools, tool_markers)


def tool_format_for(name: ToolCallParser, tokenizer) -> tuple[str, tuple[Marker, ...]]:
    """The model's tool-call format and the markers its parser needs kept.

    `auto`: `mistral` when `[TOOL_CALLS]` and `[ARGS]` are single tokens (tokenizer v11+; older Mistral
    vocabularies have no `[ARGS]` and another format); else `hermes` when the chat template mentions
    `<tool_call>`; else `none`. An explicit `mistral` without those tokens fails the load; an explicit
    `hermes` always loads, since its tags are read from text when they are not single tokens."""
    if name == "none":
        return "none", ()
    mistral = tuple(special_token_id(tokenizer, token) for token in _MISTRAL_TOOL_MARKERS)
    if name in ("auto", "mistral") and None not in mistral:
        return "mistral", tuple(Marker(i, t) for i, t in zip(mistral, _MISTRAL_TOOL_MARKERS))
    if name == "mistral":
        raise ModelLoadError(
            "tool_call_parser 'mistral' needs the tokens [TOOL_CALLS] and [ARGS], which this "
            "tokenizer does not have as single tokens; use 'auto', 'hermes' or 'none'"
        )
    if name == "hermes" or HermesToolParser.OPEN in _chat_templates(tokenizer):
        tags = ((special_token_id(tokenizer, t), t) for t in _HERMES_TAGS)
        return "hermes", tuple(Marker(i, t) for i, t in tags if i is not None)
    return "none", ()


def _chat_templates(tokenizer) -> str:
    """All of the tokenizer's chat templates as one text (some tokenizers have several, by name)."""
    template = getattr(tokenizer, "chat_template", None) or ""
    return "\n".join(template.values()) if isinstance(template, dict) else str(template)
