"""Caption cache: identical (image bytes, detail, instruction, caption limit, vision checkpoint) -> the same
caption, with no model work.

In a multi-turn chat the same images are re-sent every turn, so this is what keeps later turns cheap.
Bounded LRU by entries and by caption bytes. Event-loop only (no locks needed).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from services.common.captions import CaptionDone
from services.common.generation import Detail


@dataclass(frozen=True)
class CacheKey:
    """What makes two captions interchangeable: the same pixels, seen at the same detail, by the same checkpoint
    (its source and revision: the entry's name alone would survive swapping `vision_proxy.local_path` for
    another model), asked the same instruction (user text included) for the same number of tokens."""

    image_sha256: str
    detail: Detail
    instruction_sha256: str  # of the instruction and the caption limit
    model: str  # the checkpoint's source (hub id or local path)
    revision: str

    @classmethod
    def of(
        cls,
        image_sha256: str,
        detail: Detail,
        instruction: str,
        *,
        max_tokens: int,
        model: str,
        revision: str | None = None,
    ) -> CacheKey:
        digest = hashlib.sha256(f"{instruction}\x00{max_tokens}".encode()).hexdigest()
        return cls(image_sha256, detail, digest, model, revision or "")


@dataclass(frozen=True)
class CachedCaption:
    """A finished caption."""

    text: str
    finish_reason: str
    image_tokens: int
    caption_tokens: int

    def answer(self, image_index: int) -> CaptionDone:
        """This caption as image `image_index`'s answer from a cache: no engine time spent on it."""
        return CaptionDone(
            image_index, self.text, self.finish_reason, self.image_tokens, self.caption_tokens, True, 0.0
        )


class CaptionCache:
    """LRU of finished captions."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self._entries: OrderedDict[CacheKey, CachedCaption] = OrderedDict()
        self._bytes = 0
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self.hits = 0
        self.misses = 0

    def get(self, key: CacheKey) -> CachedCaption | None:
        """The caption, marked most recently used; None on a miss."""
        value = self._entries.get(key)
        if value is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: CacheKey, value: CachedCaption) -> None:
        """Store, evicting the least recently used entries beyond the bounds."""
        if self._max_entries <= 0:
            return
        size = len(value.text.encode())
        if size > self._max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= len(old.text.encode())
        self._entries[key] = value
        self._bytes += size
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= len(evicted.text.encode())

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        """Caption bytes held."""
        return self._bytes
