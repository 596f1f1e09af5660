"""Incremental detokenizing that keeps the special tokens an output parser needs.

The plain detokenizer decodes with `skip_special_tokens=True`, so `[THINK]` or `[TOOL_CALLS]` would vanish
and a parser could not see where reasoning ends. Here the ids of a *keep-set* (resolved once per model from
the parser's marker tokens) never reach the text decoder: each comes out as a `Marker`, in order with the
text around it. Markers are matched by id, never by text, so a user or a model writing the characters
"[THINK]" as ordinary tokens is just text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.common.detokenizer import Decoder, IncrementalDetokenizer


@dataclass(frozen=True)
class Marker:
    """A kept special token: its id and its literal form (e.g. 34, "[THINK]")."""

    token_id: int
    token: str


Piece = str | Marker


class MarkerDetokenizer:
    """Per-request detokenizer: `push(token_id)` returns the pieces that token completes."""

    def __init__(self, tokenizer: Decoder, prompt_ids: Sequence[int] = (), keep: dict[int, str] | None = None) -> None:
        self._text = IncrementalDetokenizer(tokenizer, [i for i in prompt_ids if i not in (keep or {})])
        self._keep = keep or {}

    def push(self, token_id: int) -> list[Piece]:
        """One generated token: text that is now complete, and the token itself if it is kept."""
        token = self._keep.get(token_id)
        if token is None:
            text = self._text.push([token_id])
            return [text] if text else []
        # Text held back (an unfinished UTF-8 sequence) belongs before the marker: release it now.
        held = self._text.flush()
        return [held, Marker(token_id, token)] if held else [Marker(token_id, token)]

    def flush(self) -> list[Piece]:
        """At the end of generation, whatever text is still held back."""
        held = self._text.flush()
        return [held] if held else []
