"""Incremental detokenization: turn a growing list of token ids into text deltas.

Decoding token by token is wrong for byte-level BPE (one character may span several tokens) and for
tokenizers that merge spaces with their neighbours. Like TGI's `decode_token`, we decode a small window
(from `prefix_offset`) twice, with and without the newest tokens, and emit the difference; while the
newest text ends in U+FFFD (an incomplete UTF-8 sequence) we emit nothing and wait for more tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

REPLACEMENT_CHAR = "\ufffd"


class Decoder(Protocol):
    """The part of a Hugging Face tokenizer this module needs."""

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


class IncrementalDetokenizer:
    """Per-request detokenizer state (owned by one request's coroutine)."""

    # How many already-emitted tokens are re-decoded as context; enough for any merge rule.
    CONTEXT_TOKENS = 5

    def __init__(self, tokenizer: Decoder, prompt_ids: Sequence[int] = ()) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = list(prompt_ids[-self.CONTEXT_TOKENS :])
        self._prefix_offset = 0
        self._read_offset = len(self._ids)

    def push(self, new_ids: Sequence[int]) -> str:
        """Add generated tokens; return the text that is now complete (possibly empty)."""
        self._ids.extend(new_ids)
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full_text = self._decode(self._ids[self._prefix_offset :])
        if len(full_text) > len(prefix_text) and not full_text.endswith(REPLACEMENT_CHAR):
            delta = full_text[len(prefix_text) :]
            # Slide the window forward so each decode stays a few tokens long, not the whole output.
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            self._compact()
            return delta
        return ""

    def flush(self) -> str:
        """At the end of generation: whatever is still held back (an incomplete character at the very end
        decodes to U+FFFD, as a non-streaming decode of the same tokens would show it)."""
        if self._read_offset == len(self._ids):
            return ""  # nothing held back: keep the decoding context (tokenizers that merge spaces need it)
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full_text = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._ids)
        return full_text[len(prefix_text) :] if len(full_text) > len(prefix_text) else ""

    def _compact(self) -> None:
        drop = self._prefix_offset
        if drop > 64:
            del self._ids[:drop]
            self._prefix_offset -= drop
            self._read_offset -= drop

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)
