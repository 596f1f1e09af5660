"""The events of one Describe call, as the vision engine streams them and the gateway's client reads them.

Defined once for both sides; captions_pb.py maps them to and from the protocol's messages.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CaptionDelta:
    """New caption text of one image."""

    image_index: int
    text: str


@dataclass(frozen=True)
class CaptionDone:
    """One image is done: its whole caption, why it ended, what it cost, and whether the cache answered it."""

    image_index: int
    caption: str
    finish_reason: str
    image_tokens: int
    caption_tokens: int
    cached: bool
    elapsed_ms: float  # the engine's time for it (0 for a cache hit)


CaptionEvent = CaptionDelta | CaptionDone
