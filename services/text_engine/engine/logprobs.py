"""Logprob records (ids, from the sampler) into what clients get: each token's text and its exact bytes.

OpenAI returns `bytes` because one token may hold part of a UTF-8 character: its text alone would be "�".
Byte-level BPE tokenizers (GPT-2 style: tekken, SmolLM2, Qwen) spell every byte as one printable character, so
a token's bytes are recovered exactly from its vocabulary string; byte-fallback pieces (`<0xE2>`) name their
byte; anything else (special tokens, plain pieces) is its decoded text's UTF-8.
"""

from __future__ import annotations

import re
from functools import lru_cache

from services.common.generation import TokenLogprob, TopLogprob

from .sampling.spec import SampledToken

_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """The inverse of GPT-2's bytes-to-unicode table (printable bytes stand for themselves; the others are
    shifted past 255)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, shifted = {}, 0
    for byte in range(256):
        if byte in printable:
            table[chr(byte)] = byte
        else:
            table[chr(256 + shifted)] = byte
            shifted += 1
    return table


class LogprobFormatter:
    """Turns sampler records into `TokenLogprob`s for one model's tokenizer (per-id results cached)."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._byte_level = type(getattr(backend, "decoder", None)).__name__ == "ByteLevel"
        self._cache: dict[int, tuple[str, bytes]] = {}

    def text_and_bytes(self, token_id: int) -> tuple[str, bytes]:
        """A token's text (as decoding it alone gives) and its exact bytes."""
        cached = self._cache.get(token_id)
        if cached is None:
            text = self._tokenizer.decode([token_id])
            cached = self._cache[token_id] = (text, self._bytes(token_id, text))
        return cached

    def _bytes(self, token_id: int, text: str) -> bytes:
        piece = self._tokenizer.convert_ids_to_tokens(token_id)
        if isinstance(piece, str):
            if (byte := _BYTE_PIECE.match(piece)) is not None:
                return bytes([int(byte.group(1), 16)])
            table = _unicode_to_byte()
            if self._byte_level and piece and all(ch in table for ch in piece):
                return bytes(table[ch] for ch in piece)
        return text.encode("utf-8")

    def format(self, record: SampledToken) -> TokenLogprob:
        """One sampled token with its alternatives."""
        text, raw = self.text_and_bytes(record.token_id)
        top = []
        for token_id, logprob in record.top:
            alt_text, alt_raw = self.text_and_bytes(token_id)
            top.append(TopLogprob(alt_text, logprob, alt_raw))
        return TokenLogprob(text, record.logprob, raw, tuple(top))
