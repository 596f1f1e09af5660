"""Domain types of one Describe request and the events it produces."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.generation import ImageBytes


@dataclass(frozen=True)
class DescribeJob:
    """All images of one chat message and what to ask about them."""

    request_id: str
    images: tuple[ImageBytes, ...]
    prompt: str = ""  # empty: the model's prompt_template
    user_prompt: str = ""
    max_tokens: int = 0  # 0: the configured max_caption_tokens


@dataclass(frozen=True)
class CaptionDelta:
    """New caption text of one image."""

    image_index: int
    text: str


@dataclass(frozen=True)
class CaptionDone:
    """One image is done."""

    image_index: int
    caption: str
    finish_reason: str
    image_tokens: int
    caption_tokens: int
    cached: bool
    elapsed_ms: float


CaptionEvent = CaptionDelta | CaptionDone
