"""A request's images, found, counted, downloaded or decoded, and checked, whatever then happens to them
(captioned by the proxy vision model, or sent to a natively seeing model as they are).

`ImageLoader.find()` does the checks that need no I/O (images only in user messages, at most
`max_images_per_request`); `load()` fetches URLs through the SSRF-safe fetcher and decodes data URLs, all
concurrently, and decodes every image under the byte and pixel limits. Every refusal is our 4xx error,
before any response starts, and says why (a fetched image that does not decode names the host that sent it).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass

from services.common.config import ImageLimits
from services.common.errors import ImageUrlNotAccessibleError, InvalidRequestError, ProxyVisionError, TooManyImagesError
from services.common.generation import ImageBytes
from services.common.images import MIME_BY_FORMAT, InvalidImageError, decode_image

from ..media.data_urls import decode_data_url
from ..media.fetcher import NOT_ACCESSIBLE, FetchedImage, ImageFetcher, scheme_refusal
from ..metrics import GatewayMetrics
from .conversation import ImageInput, Message


@dataclass(frozen=True)
class ImageRef:
    """Where an image is in the conversation: message `message`, content part `part`."""

    message: int
    part: int
    image: ImageInput


@dataclass
class LoadedImages:
    """A request's images, checked: each message's images in the order they appear."""

    by_message: dict[int, list[ImageBytes]]  # message index -> its images
    fetch_ms: float = 0.0

    @property
    def count(self) -> int:
        return sum(len(images) for images in self.by_message.values())


class ImageLoader:
    """Finds, fetches and checks a request's images."""

    def __init__(self, fetcher: ImageFetcher, limits: ImageLimits, metrics: GatewayMetrics | None = None) -> None:
        self._fetcher = fetcher
        self._limits = limits
        self._metrics = metrics or GatewayMetrics()

    def find(self, messages: tuple[Message, ...], messages_param: str = "messages") -> list[ImageRef]:
        """Every image of the conversation, in order ([] for text only); a 400 for an image outside a user or tool
        message (a tool's result may be a screenshot) or more images than allowed."""
        refs = [
            ImageRef(m, p, part)
            for m, message in enumerate(messages)
            for p, part in enumerate(message.parts)
            if isinstance(part, ImageInput)
        ]
        for ref in refs:
            if messages[ref.message].role not in ("user", "tool"):
                raise InvalidRequestError(
                    "Images are only supported in user messages and tool results",
                    param=ref.image.param or messages_param,
                )
        if len(refs) > self._limits.max_images_per_request:
            raise TooManyImagesError(
                f"Too many images: {len(refs)} in this request, at most {self._limits.max_images_per_request} allowed",
                param=messages_param,
            )
        return refs

    async def load(self, refs: list[ImageRef]) -> LoadedImages:
        """Download or decode every image concurrently and check it (raises our 4xx errors)."""
        started = time.monotonic()
        loaded = await asyncio.gather(
            *(self._load(ref.image, ref.image.param or f"messages[{ref.message}].content[{ref.part}]") for ref in refs)
        )
        grouped: dict[int, list[ImageBytes]] = {}
        for ref, item in zip(refs, loaded):
            grouped.setdefault(ref.message, []).append(item)
        return LoadedImages(grouped, (time.monotonic() - started) * 1000)

    async def _load(self, image: ImageInput, param: str) -> ImageBytes:
        url = image.url.strip()
        is_data = url[:5].lower() == "data:"
        self._metrics.images.labels("data" if is_data else "url").inc()
        try:
            return await self._load_checked(image, url, is_data, param)
        except ProxyVisionError as error:
            self._metrics.fetch_failures.labels(error.code or "invalid_image").inc()
            raise

    async def _load_checked(self, image: ImageInput, url: str, is_data: bool, param: str) -> ImageBytes:
        fetched: FetchedImage | None = None
        if is_data:
            data, _ = decode_data_url(url, max_bytes=self._limits.max_image_bytes, param=param)
        elif (refusal := scheme_refusal(url)) is None:
            fetched = await self._fetcher.fetch(url, param=param)
            data = fetched.data
        else:
            raise ImageUrlNotAccessibleError(f"{NOT_ACCESSIBLE}: {refusal}", param=param)
        try:
            decoded = await asyncio.to_thread(decode_image, data, max_pixels=self._limits.max_image_pixels, param=param)
        except InvalidImageError as error:
            if fetched is None:
                raise
            served = fetched.content_type.split(";", 1)[0].strip()[:60] or "no Content-Type"
            reason = error.message.removeprefix("Invalid image: ")
            raise InvalidImageError(
                f"Invalid image from {fetched.host} (served as {served}): {reason}", param=param
            ) from None
        return ImageBytes(
            data,
            MIME_BY_FORMAT.get(decoded.format, "application/octet-stream"),
            image.detail,
            hashlib.sha256(data).hexdigest(),
        )
