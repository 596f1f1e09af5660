"""The proxy-vision rewrite: images in, text out.

`prepare()` runs before a response starts: counts the images, checks the vision backend, downloads
or decodes every image concurrently and refuses bad ones with a 400. `PendingImages.describe()` then
asks the vision engine for captions (one Describe call per message, all messages concurrently) and
turns each message with images into text: the user's text, a blank line, then `Image 1: <caption>`,
`Image 2: <caption>`... numbered per message. Messages without images pass unchanged, and every message
keeps its tool data (an assistant's tool calls, a tool message's call id and name).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, field

from services.common.config import ImageLimits
from services.common.errors import (
    EngineUnavailableError,
    ImageUrlNotAccessibleError,
    InvalidRequestError,
    ProxyVisionError,  # fmt: skip
    TooManyImagesError,
)
from services.common.images import MIME_BY_FORMAT, decode_image

from ..clients.text_engine import ChatTurn
from ..clients.vision_engine import ImageToDescribe, VisionEngineClient
from ..media.data_urls import decode_data_url
from ..media.fetcher import NOT_ACCESSIBLE, ImageFetcher
from ..metrics import GatewayMetrics
from ..schemas.chat import ChatMessage, ImageURL
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
    images: dict[int, list[ImageToDescribe]]  # message index -> its images, in order
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
    """Finds, fetches and checks images; hands back what the vision engine must describe."""

    def __init__(self, fetcher: ImageFetcher, backend: VisionBackend, limits: ImageLimits, timeout: float,
                 metrics: GatewayMetrics | None = None) -> None:  # fmt: skip
        self._fetcher = fetcher
        self._backend = backend
        self._limits = limits
        self._timeout = timeout
        self._metrics = metrics or GatewayMetrics()

    async def prepare(self, messages: list[ChatMessage], timeout: float | None = None) -> PendingImages | None:
        """None for text-only requests; else the checked images (raises our 4xx/503 errors). `timeout` is the
        deadline of the Describe calls (default: the configured one)."""
        refs = [(m, p, image) for m, message in enumerate(messages) for p, image in _image_parts(message)]
        if not refs:
            return None
        for m, _, _ in refs:
            if messages[m].role != "user":
                raise InvalidRequestError("Images are only supported in user messages", param=f"messages[{m}].content")
        if len(refs) > self._limits.max_images_per_request:
            raise TooManyImagesError(
                f"Too many images: {len(refs)} in this request, at most {self._limits.max_images_per_request} allowed",
                param="messages",
            )  # fmt: skip
        client = await self._backend.require()
        log.info("Processing multimodal request with %d images", len(refs))
        started = time.monotonic()
        loaded = await asyncio.gather(
            *(self._load(image, f"messages[{m}].content[{p}].image_url") for m, p, image in refs)
        )
        grouped: dict[int, list[ImageToDescribe]] = {}
        for (m, _, _), item in zip(refs, loaded):
            grouped.setdefault(m, []).append(item)
        pending = PendingImages(messages, grouped, client, self._backend, timeout or self._timeout)
        pending.timings.fetch_ms = (time.monotonic() - started) * 1000
        return pending

    async def _load(self, image: ImageURL, param: str) -> ImageToDescribe:
        url = image.url.strip()
        is_data = url[:5].lower() == "data:"
        self._metrics.images.labels("data" if is_data else "url").inc()
        try:
            return await self._load_checked(image, url, is_data, param)
        except ProxyVisionError as error:
            self._metrics.fetch_failures.labels(error.code or "invalid_image").inc()
            raise

    async def _load_checked(self, image: ImageURL, url: str, is_data: bool, param: str) -> ImageToDescribe:
        if is_data:
            data, _ = decode_data_url(url, max_bytes=self._limits.max_image_bytes, param=param)
        elif url.split(":", 1)[0].lower() in ("http", "https"):
            data = (await self._fetcher.fetch(url, param=param)).data
        else:
            raise ImageUrlNotAccessibleError(NOT_ACCESSIBLE, param=param)
        decoded = await asyncio.to_thread(decode_image, data, max_pixels=self._limits.max_image_pixels, param=param)
        return ImageToDescribe(data, MIME_BY_FORMAT.get(decoded.format, "application/octet-stream"), image.detail,
                               hashlib.sha256(data).hexdigest())  # fmt: skip


def _image_parts(message: ChatMessage) -> list[tuple[int, ImageURL]]:
    if not isinstance(message.content, list):
        return []
    return [(p, part.image) for p, part in enumerate(message.content) if part.type == "image_url"]
