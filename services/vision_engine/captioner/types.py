"""The domain type of one Describe request (its events are services/common/captions.py's, shared with the gateway)."""

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
