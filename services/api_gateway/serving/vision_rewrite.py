"""The proxy-vision rewrite: images in, text out.

`prepare()` runs before a response starts: checks the vision backend, then has the `ImageLoader` download
or decode every image and refuse bad ones with a 400. `PendingImages.describe()` then
asks the vision engine for captions (one Describe call per message, all messages concurrently) and
turns each message with images into text: the user's text, a blank line, then `Image 1: <caption>`,
`Image 2: <caption>`... numbered per message. Messages without images pass unchanged, and every message
keeps its tool data (an assistant's tool calls, a tool message's call id and name).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from services.common.errors import EngineUnavailableError

from ..clients.images import ImageBytes
from ..clients.text_engine import ChatTurn
from ..clients.vision_engine import VisionEngineClient
from ..schemas.chat import ChatMessage
from .images import ImageLoader, ImageRef
from .turns import chat_turn
from .vision_status import VisionBackend

log = logging.getLogger(__name__)


@dataclass
class Timings:
    """Where a multimodal request's time went (milliseconds)."""

    fetch_ms: float = 0.0
    vision_ms: float = 0.0


@dataclass
class PendingImages:
    """A request's images, downloaded and checked, waiting to be described."""

    messages: list[ChatMessage]
    images: dict[int, list[ImageBytes]]  # message index -> its images, in order
    client: VisionEngineClient
    backend: VisionBackend
    timeout: float
    timings: Timings = field(default_factory=Timings)

    async def describe(self, request_id: str) -> list[ChatTurn]:
        """Caption every image and return the text-only conversation."""
        started = time.monotonic()
        indices = sorted(self.images)
        try:
            captions = await asyncio.gather(*(self._describe_message(i, request_id) for i in indices))
        except EngineUnavailableError as error:
            raise self.backend.mark_failed(error.message) from None
        self.timings.vision_ms = (time.monotonic() - started) * 1000
        total = sum(len(v) for v in self.images.values())
        log.info("Vision processing completed in %.0fms (%d images)", self.timings.vision_ms, total)
        by_message = dict(zip(indices, captions))
        turns = []
        for index, message in enumerate(self.messages):
            text = message.text()
            if index in by_message:
                lines = "\n".join(f"Image {n}: {caption}" for n, caption in enumerate(by_message[index], start=1))
                text = f"{text}\n\n{lines}" if text else lines
            turns.append(chat_turn(message, text))  # tool calls, call ids and names pass unchanged
        return turns

    async def _describe_message(self, index: int, request_id: str) -> list[str]:
        images = self.images[index]
        captions = [""] * len(images)
        async for caption in self.client.describe(images, user_prompt=self.messages[index].text(),
                                                  request_id=request_id, timeout=self.timeout):  # fmt: skip
            captions[caption.image_index] = caption.text.strip()
        return captions


class ProxyVisionRewriter:
    """Hands back what the vision engine must describe: the request's images, checked by the loader, once the
    vision backend is known to be there (a 503 before any download when it is not)."""

    def __init__(self, loader: ImageLoader, backend: VisionBackend, timeout: float) -> None:
        self._loader = loader
        self._backend = backend
        self._timeout = timeout

    async def prepare(self, messages: list[ChatMessage], *, refs: list[ImageRef] | None = None,
                      timeout: float | None = None) -> PendingImages | None:  # fmt: skip
        """None for text-only requests; else the checked images (raises our 4xx/503 errors). `refs`: the images
        `ImageLoader.find` found (found here when not given); `timeout` is the deadline of the Describe calls
        (default: the configured one)."""
        refs = self._loader.find(messages) if refs is None else refs
        if not refs:
            return None
        client = await self._backend.require()
        log.info("Processing multimodal request with %d images", len(refs))
        loaded = await self._loader.load(refs)
        pending = PendingImages(messages, loaded.by_message, client, self._backend, timeout or self._timeout)
        pending.timings.fetch_ms = loaded.fetch_ms
        return pending
