"""An async stream that owns what feeds it (the engine calls), for the serving layer's live events and SSE frames."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Generic, TypeVar

T = TypeVar("T")


class OwnedStream(Generic[T]):
    """`items`, and what they are made from (`owned`: anything with an `aclose()`, e.g. engine calls).

    `aclose()` releases both even when iteration never started (the client left before the first byte): closing a
    never-started generator would not run its `finally`, so `owned` is closed here as well."""

    def __init__(self, items: AsyncGenerator[T, None], owned=None) -> None:
        self.items = items
        self._owned = owned

    def __aiter__(self) -> AsyncGenerator[T, None]:
        return self.items

    async def aclose(self) -> None:
        """Stop the items and close what they own (both no-ops once finished)."""
        try:
            await self.items.aclose()
        finally:
            if self._owned is not None:
                await self._owned.aclose()
