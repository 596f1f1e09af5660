"""The proxy-vision rewrite: images in, text out.

`prepare()` runs before a response starts: checks the vision backend, then has the `ImageLoader` download
or decode every image and refuse bad ones with a 400. `PendingImages.describe()` then
asks the vision engine for captions (one Describe call per message, all messages concurrently) and
turns each message with images into text: each image is replaced where it was by `Image 1: <caption>`,
`Image 2: <caption>`... numbered per message, between the text around it (`captioned_text`). The captions
are kept (`PendingImages.captions`) for the answer's `proxy_vision` field. Messages without images pass unchanged, and every message
keeps its tool data (an assistant's tool calls, a tool message's call id and name).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from services.common.errors import EngineUnavailableError
from services.common.generation import ChatTurn, ImageBytes

from ..clients.vision_engine import VisionEngineClient
from .conversation import Message
from .images import ImageLoader, ImageRef
from .turns import engine_turn
from .vision_status import VisionBackend

log = logging.getLogger(__name__)


@dataclass
class Timings:
    """Where a multimodal request's time went (milliseconds)."""

    fetch_ms: float = 0.0
    vision_ms: float = 0.0


@dataclass(frozen=True)
class ImageCaption:
    """What the text model was told about one image: image `index` (0-based) of message `message`."""

    message: int
    index: int
    caption: str
    cached: bool
    ms: float  # the vision engine's time for it (0 for a cache hit)

    def to_json(self) -> dict:
        return {
            "message": self.message,
            "index": self.index,
            "caption": self.caption,
            "cached": self.cached,
            "ms": round(self.ms, 1),
        }


@dataclass
class PendingImages:
    """A request's images, downloaded and checked, waiting to be described."""

    messages: tuple[Message, ...]
    images: dict[int, list[ImageBytes]]  # message index -> its images, in order
    client: VisionEngineClient
    backend: VisionBackend
    timeout: float
    timings: Timings = field(default_factory=Timings)
    captions: list[ImageCaption] = field(default_factory=list)  # once described: every image's, in request order

    async def describe(self, request_id: str) -> list[ChatTurn]:
        """Caption every image and return the text-only conversation."""
        started = time.monotonic()
        indices = sorted(self.images)
        try:
            described = await asyncio.gather(*(self._describe_message(i, request_id) for i in indices))
        except EngineUnavailableError as error:
            raise self.backend.mark_failed(error.message) from None
        self.timings.vision_ms = (time.monotonic() - started) * 1000
        total = sum(len(v) for v in self.images.values())
        log.info("Vision processing completed in %.0fms (%d images)", self.timings.vision_ms, total)
        by_message = dict(zip(indices, described))
        self.captions = [caption for i in indices for caption in by_message[i]]
        # Every message keeps its tool data (an assistant's calls, a tool message's call id and name).
        return [
            engine_turn(message, captioned_text(message, by_message[index]))
            if index in by_message
            else engine_turn(message)
            for index, message in enumerate(self.messages)
        ]

    def proxy_vision(self) -> dict:
        """The answer's `proxy_vision` field: what the text model was told about each image."""
        return {"images": [caption.to_json() for caption in self.captions]}

    async def _describe_message(self, index: int, request_id: str) -> list[ImageCaption]:
        images = self.images[index]
        captions: list[ImageCaption | None] = [None] * len(images)
        async for c in self.client.describe(
            images, user_prompt=self.messages[index].text(), request_id=request_id, timeout=self.timeout
        ):
            captions[c.image_index] = ImageCaption(index, c.image_index, c.caption.strip(), c.cached, c.elapsed_ms)
        return [c or ImageCaption(index, i, "", False, 0.0) for i, c in enumerate(captions)]


def captioned_text(message: Message, captions: list[ImageCaption]) -> str:
    """The message as text, each image replaced where it was by `Image <n>: <caption>` (numbered per message):
    "compare this [image] with this [image]" keeps its order. Text pieces are joined as `Message.text()`
    joins them (a newline), a caption is set off from the text around it by a blank line, and captions that
    follow each other are one per line."""
    pieces: list[tuple[bool, str]] = []  # (is a caption, text)
    images = iter(captions)
    for part in message.parts:
        if isinstance(part, str):
            if part:
                pieces.append((False, part))
        else:
            caption = next(images)
            pieces.append((True, f"Image {caption.index + 1}: {caption.caption}"))
    text = ""
    for i, (is_caption, piece) in enumerate(pieces):
        if i:
            text += "\n" if is_caption == pieces[i - 1][0] else "\n\n"
        text += piece
    return text


class ProxyVisionRewriter:
    """Hands back what the vision engine must describe: the request's images, checked by the loader, once the
    vision backend is known to be there (a 503 before any download when it is not)."""

    def __init__(self, loader: ImageLoader, backend: VisionBackend, timeout: float) -> None:
        self._loader = loader
        self._backend = backend
        self._timeout = timeout

    async def prepare(
        self, messages: tuple[Message, ...], *, refs: list[ImageRef] | None = None, timeout: float | None = None
    ) -> PendingImages | None:
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
