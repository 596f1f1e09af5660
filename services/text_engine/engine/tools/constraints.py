"""tool_choice `required` and named, enforced: a grammar the model's output must match.

The grammar is written in the model's own call format (llguidance's Lark dialect, see
engine/sampling/grammar.py), each call naming one of the offered functions (or the named one) with arguments
that match that function's JSON Schema (laid out as `JSON_FORMAT_OPTIONS` says, the same as response_format's):
- `required`: one call; with parallel_tool_calls, one or more, and end-of-sequence is allowed after every
  complete call (the compiler allows the EOS ids wherever the grammar may end), so a model is never forced
  into one more call than it wants (that call would run into max_tokens);
- named: exactly one call of that function, whatever parallel_tool_calls says (OpenAI returns one call of
  the function it was told to call).

- `mistral`: `[TOOL_CALLS]name[ARGS]{...}` repeated; the markers are named by id (`<[9]>`): they have no
  `<...>` spelling the dialect could name them by.
- `hermes`: `<tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>`, calls separated by a newline as
  Qwen's templates write them; one newline may also follow the last call (a model that ends its line must
  still be free to stop there, not be held to the start of another call). A tag that is a token of the
  vocabulary is named as that token (llguidance counts every added token as special, so the literal text
  would refuse it); otherwise it is spelled.

The grammar starts at the first generated token, so a reasoning model answers a forced call without
thinking first.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from services.common.generation import Tool, ToolChoice, ToolChoiceMode

from ..sampling.grammar import JSON_FORMAT_OPTIONS, GrammarSpec
from .validation import parameters_schema

if TYPE_CHECKING:
    from ..output import ParserSpec

_HERMES_ARGUMENTS_KEY = ', "arguments": '


def tool_call_grammar(
    parser: ParserSpec, tools: Sequence[Tool], choice: ToolChoice, parallel: bool
) -> GrammarSpec | None:
    """The grammar that enforces `choice` in the model's format (`parser.tools`), or None when nothing is
    enforced (auto, none). Expects a request `validate_tools` accepted."""
    if choice.mode not in (ToolChoiceMode.REQUIRED, ToolChoiceMode.NAMED):
        return None
    chosen = [t for t in tools if choice.mode is ToolChoiceMode.REQUIRED or t.name == choice.name]
    several = parallel and choice.mode is ToolChoiceMode.REQUIRED  # a named choice is one call
    arguments = [
        f"args{i}: %json {json.dumps({**parameters_schema(t), 'x-guidance': JSON_FORMAT_OPTIONS})}"
        for i, t in enumerate(chosen)
    ]
    if parser.tools == "mistral":
        calls, args = (f"<[{m.token_id}]>" for m in parser.tool_markers)
        branches = " | ".join(f"{_literal(t.name)} {args} args{i}" for i, t in enumerate(chosen))
        rules = ["start: call+" if several else "start: call", f"call: {calls} ( {branches} )"]
    elif parser.tools == "hermes":
        tags = {m.token: m.token for m in parser.tool_markers}
        open_tag, close_tag = (tags.get(tag) or _literal(tag) for tag in ("<tool_call>", "</tool_call>"))
        head, tail = _literal('\n{"name": '), _literal("}\n")
        branches = " | ".join(
            f"{_literal(json.dumps(t.name) + _HERMES_ARGUMENTS_KEY)} args{i}" for i, t in enumerate(chosen)
        )
        rules = [
            'start: call ("\\n" call)* "\\n"?' if several else 'start: call "\\n"?',
            f"call: {open_tag} {head} ( {branches} ) {tail} {close_tag}",
        ]
    else:
        raise ValueError(f"no tool-call grammar for the format {parser.tools!r}")  # validate_tools refuses these
    return GrammarSpec("lark", "\n".join(rules + arguments) + "\n", param="tools")


def _literal(text: str) -> str:
    """A Lark string literal for `text` (the dialect takes JSON's escapes)."""
    return json.dumps(text, ensure_ascii=False)
