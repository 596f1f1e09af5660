"""Single flight: concurrent identical captions are computed once and streamed to every requester.

A Flight is one image being captioned. Each requester subscribes with its own queue and image index;
late subscribers first get the text so far. When the last subscriber leaves before the caption is
done, the model work is cancelled. Event-loop only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from services.common.captions import CaptionDelta, CaptionDone

from .batcher import CaptionJob, CaptionResult
from .cache import CachedCaption, CacheKey, CaptionCache


class CaptionFailed(Exception):
    """The model could not caption an image."""


class Flight:
    """One caption in progress."""

    def __init__(self, key: CacheKey, on_landed: Callable[[Flight, CaptionResult | None], None]) -> None:
        self.key = key
        self.job: CaptionJob | None = None
        self._text: list[str] = []
        self._subscribers: list[tuple[asyncio.Queue, int]] = []
        self._on_landed = on_landed

    def subscribe(self, events: asyncio.Queue, index: int) -> None:
        """Receive this caption's events as image `index` of one request."""
        if self._text:
            events.put_nowait(CaptionDelta(index, "".join(self._text)))
        self._subscribers.append((events, index))

    def unsubscribe(self, events: asyncio.Queue) -> None:
        """A requester left; cancel the work when nobody is waiting for it any more."""
        self._subscribers = [(q, i) for q, i in self._subscribers if q is not events]
        if not self._subscribers and self.job is not None:
            self.job.cancel()
            self._on_landed(self, None)

    def on_delta(self, text: str) -> None:
        self._text.append(text)
        for events, index in self._subscribers:
            events.put_nowait(CaptionDelta(index, text))

    def on_done(self, result: CaptionResult) -> None:
        self._on_landed(self, result)
        for events, index in self._subscribers:
            events.put_nowait(
                CaptionDone(
                    index,
                    result.text,
                    result.finish_reason,
                    result.image_tokens,
                    result.caption_tokens,
                    False,
                    result.elapsed_ms,
                )
            )

    def on_error(self, message: str) -> None:
        self._on_landed(self, None)
        for events, _ in self._subscribers:
            events.put_nowait(CaptionFailed(message))


class FlightBoard:
    """The cache and the flights in the air, keyed alike. `on_caption` hears of every caption that lands (the
    shared cache publishes it); it must not block."""

    def __init__(
        self, cache: CaptionCache, on_caption: Callable[[CacheKey, CachedCaption], None] | None = None
    ) -> None:
        self.cache = cache
        self._flights: dict[CacheKey, Flight] = {}
        self._on_caption = on_caption

    def cached(self, key: CacheKey) -> CachedCaption | None:
        """A finished caption, if any."""
        return self.cache.get(key)

    def flying(self, key: CacheKey) -> bool:
        """Is this caption being computed here now?"""
        return key in self._flights

    def join_or_start(self, key: CacheKey, start: Callable[[Flight], CaptionJob]) -> Flight:
        """The flight for `key`: an existing one, or a new one whose job `start` submits."""
        flight = self._flights.get(key)
        if flight is None:
            flight = Flight(key, self._landed)
            self._flights[key] = flight
            flight.job = start(flight)
        return flight

    def _landed(self, flight: Flight, result: CaptionResult | None) -> None:
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
        if result is not None:
            caption = CachedCaption(result.text, result.finish_reason, result.image_tokens, result.caption_tokens)
            self.cache.put(flight.key, caption)
            if self._on_caption is not None:
                self._on_caption(flight.key, caption)

    @property
    def in_flight(self) -> int:
        """Captions being computed."""
        return len(self._flights)
