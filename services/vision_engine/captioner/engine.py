"""The CaptionEngine: one vision model, the caption caches, single flight and the batching thread.

`describe()` answers what the in-process cache holds, then what the shared cache (Redis, when configured)
holds, decodes the rest (refusing bad ones before any work), joins captions already being computed for
someone else, submits the others to the batcher, and streams every image's events as they come. Leaving
early cancels work nobody else waits for.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from services.common.captions import CaptionDelta, CaptionDone, CaptionEvent
from services.common.config import ModelEntry
from services.common.errors import (
    InternalError,
    InvalidRequestError,
    OverloadedError,
    ProxyVisionError,
    ShuttingDownError,
)
from services.common.generation import Detail, ImageBytes
from services.common.hub_download import fetch_weights
from services.common.images import decode_image
from services.common.metrics import ModelSnapshot, VisionMetrics
from services.common.model_engine import ModelEngine
from services.common.model_info import ModelInfo
from services.common.multimodal.detail import image_token_budget

from .batcher import CaptionBatcher, CaptionJob
from .cache import CachedCaption, CacheKey, CaptionCache
from .flights import CaptionFailed, Flight, FlightBoard
from .loader import load_vision_model
from .prompts import build_instruction
from .shared_cache import SharedCaptionStore
from .types import DescribeJob
from .vllm_captioner import VllmCaptioner

log = logging.getLogger(__name__)

# Pixels a single image may have before decoding; the gateway enforces its own (configurable) limit first.
MAX_DECODE_PIXELS = 100_000_000


def _drain(first, events: asyncio.Queue) -> list:
    """`first` and whatever else is already queued, consecutive deltas of one image merged: when the
    batch produces tokens faster than the stream is read, send fewer, longer messages."""
    merged = [first]
    while not events.empty():
        event = events.get_nowait()
        last = merged[-1]
        if isinstance(event, CaptionDelta) and isinstance(last, CaptionDelta) and event.image_index == last.image_index:
            merged[-1] = CaptionDelta(last.image_index, last.text + event.text)
        else:
            merged.append(event)
    return merged


@dataclass(frozen=True, kw_only=True)
class VisionEngineInfo(ModelInfo):
    """The vision engine's snapshot for GetModelInfo: the common part and its caption caches."""

    cache_entries: int
    cache_hits: int
    shared_cache: str = ""  # the shared caption cache's URL (password masked) and state; "" when there is none


# What captions for the engine: static batches on transformers, or vLLM's engine core (models.yaml `backend`).
Captioner = CaptionBatcher | VllmCaptioner


class CaptionEngine(ModelEngine[Captioner]):
    """Serves the proxy vision model entry of models.yaml."""

    def __init__(
        self,
        entry: ModelEntry,
        *,
        cache_entries: int = 1024,
        cache_bytes: int = 8 * 1024 * 1024,
        metrics: VisionMetrics | None = None,
        **hooks,
    ) -> None:
        """`hooks`: ModelEngine's device, idle_unload_secs and on_serving_change."""
        super().__init__(entry, metrics=metrics or VisionMetrics(entry.name), **hooks)
        self._listeners: set[asyncio.Queue] = set()  # event queues of running requests (abort_all feeds them)
        shared = entry.vision_proxy.shared_cache
        self.shared = SharedCaptionStore(shared, model=entry.name, metrics=self.metrics) if shared else None
        self.board = FlightBoard(
            CaptionCache(cache_entries, cache_bytes), on_caption=self.shared.put if self.shared else None
        )
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Check the shared cache (at most its timeout: unreachable is logged, not fatal), load the model."""
        self._loop = asyncio.get_running_loop()
        if self.shared is not None:
            await self.shared.check()
        await self.lifecycle.start()

    async def stop(self) -> None:
        """Free the model; close the shared cache's connections."""
        await self.lifecycle.stop()
        if self.shared is not None:
            await self.shared.close()

    def _teardown(self, batcher: Captioner) -> None:
        batcher.stop()

    def _build(self) -> Captioner:
        entry, params = self.entry, self.entry.params
        self._announce(
            log,
            max_image_tokens=entry.vision_proxy.max_image_tokens,
            shared_cache=self.shared.url if self.shared else "none",
        )
        own = entry.local_path or entry.hf_id
        if own and own != entry.source:
            # vision_proxy.local_path / hf_id name the captioning checkpoint; say so when the entry names another.
            log.info(
                "Vision model %s: captioning with %s from vision_proxy (not the entry's own %s)",
                entry.name,
                entry.source,
                own,
            )
        fetch_weights(entry, self.lifecycle.report)
        on_vllm = entry.backend == "vllm"
        loaded = load_vision_model(
            entry.source,
            dtype=params.dtype,
            device=self._device,
            **entry.pretrained_options,
            weights=not on_vllm,  # vLLM's engine core loads them in its own processes
        )
        self._built(loaded)
        note = f" (offline tiny stand-in for {loaded.stand_in_for})" if loaded.stand_in_for else ""
        if on_vllm:
            captioner = VllmCaptioner(loaded, entry)
            costing = "vLLM's KV cache for all images in flight"
        else:
            captioner = CaptionBatcher(loaded, params, self._loop)
            costing = "batch budget, rows x padded (prompt + image + caption)"
        log.info(
            "Vision model %s ready%s: %d KV tokens, %s (mem=%d MiB, %d bytes/token)",
            entry.name,
            note,
            captioner.token_budget,
            costing,
            params.mem,
            loaded.kv_bytes_per_token,
        )
        return captioner

    def describe(self, job: DescribeJob) -> AsyncIterator[CaptionEvent]:
        """Stream captions of all images of `job`; per image, deltas then one CaptionDone."""
        return self.metrics.observe(self._describe(job))

    async def _describe(self, job: DescribeJob) -> AsyncIterator[CaptionEvent]:
        if not job.images:
            raise InvalidRequestError("no images to describe", param="images")
        started = time.monotonic()
        settings = self.entry.vision_proxy
        instruction = build_instruction(job.prompt or settings.prompt_template, job.user_prompt)
        max_tokens = job.max_tokens or settings.max_caption_tokens
        events: asyncio.Queue = asyncio.Queue()
        flights: list[Flight] = []
        pending = set(range(len(job.images)))
        async with self.lifecycle.use() as batcher:
            limit = self.entry.params.queue_limit
            if batcher.waiting >= limit:
                raise OverloadedError(
                    f"The vision engine is at capacity ({batcher.waiting} images waiting, "
                    f"max_queue={limit}); retry shortly"
                )
            self._listeners.add(events)
            try:
                keys = [self.cache_key(item, instruction, max_tokens) for item in job.images]
                self.metrics.images.labels(self.entry.name).inc(len(keys))
                # Cached bytes decoded fine when they were captioned: no need to decode them again.
                misses = [index for index, key in enumerate(keys) if not self._answer_from_cache(events, index, key)]
                if misses and self.shared is not None:
                    misses = await self._answer_from_shared(events, misses, keys)
                decoded = await asyncio.to_thread(self._decode, job, misses)
                for index, image in zip(misses, decoded):
                    # Someone else's caption of these bytes may have landed while they were decoded.
                    if self._answer_from_cache(events, index, keys[index]):
                        continue
                    self.metrics.cache_misses.labels(self.entry.name).inc()
                    budget = self._image_budget(batcher, job.images[index].detail, image, max_tokens)
                    flight = self.board.join_or_start(
                        keys[index],
                        lambda f, im=image, b=budget: self._submit(batcher, f, im, b, instruction, max_tokens),
                    )
                    flight.subscribe(events, index)
                    flights.append(flight)
                while pending:
                    for event in _drain(await events.get(), events):
                        if isinstance(event, ProxyVisionError):  # abort_all: the engine is shutting down
                            raise event
                        if isinstance(event, CaptionFailed):
                            raise InternalError(f"Vision processing failed: {event}")
                        if isinstance(event, CaptionDone):
                            pending.discard(event.image_index)
                        yield event
            finally:
                self._listeners.discard(events)
                for flight in flights:
                    flight.unsubscribe(events)
        log.info(
            "Vision processing completed in %.0fms (%d images)", (time.monotonic() - started) * 1000, len(job.images)
        )

    def cache_key(self, item: ImageBytes, instruction: str, max_tokens: int) -> CacheKey:
        """The cache key of one image of a request: its bytes and detail, the instruction and caption limit, and
        the checkpoint this engine loads (source and revision)."""
        sha = item.sha256 or hashlib.sha256(item.data).hexdigest()
        return CacheKey.of(
            sha, item.detail, instruction, max_tokens=max_tokens, model=self.entry.source, revision=self.entry.revision
        )

    def _answer_from_cache(self, events: asyncio.Queue, index: int, key: CacheKey) -> bool:
        """Queue image `index`'s cached caption, if there is one."""
        hit = self.board.cached(key)
        if hit is None:
            return False
        self.metrics.cache_hits.labels(self.entry.name).inc()
        events.put_nowait(hit.answer(index))
        return True

    async def _answer_from_shared(self, events: asyncio.Queue, misses: list[int], keys: list[CacheKey]) -> list[int]:
        """Look the in-process misses up in the shared cache (one MGET, at most its timeout) and queue its hits,
        which this replica keeps too; returns the images still missing. Captions already being computed here
        skip the lookup: single flight answers them."""
        asked = [index for index in misses if not self.board.flying(keys[index])]
        found: dict[int, CachedCaption] = {}
        for index, hit in zip(asked, await self.shared.get_many([keys[index] for index in asked])):
            if hit is not None:
                found[index] = hit
        for index, hit in found.items():
            self.board.cache.put(keys[index], hit)
            self.metrics.cache_misses.labels(self.entry.name).inc()  # an in-process miss, a shared hit
            events.put_nowait(hit.answer(index))
        return [index for index in misses if index not in found]

    @staticmethod
    def _decode(job: DescribeJob, indices: list[int]):
        return [
            decode_image(job.images[i].data, max_pixels=MAX_DECODE_PIXELS, param=f"images[{i}]").image for i in indices
        ]

    def _image_budget(self, batcher: Captioner, detail: Detail, image, max_tokens: int) -> int:
        # One sequence may use the whole batch budget, less its text and caption.
        memory_tokens = batcher.token_budget - max_tokens - 128
        return image_token_budget(
            detail,
            batcher.loaded.family.natural_tokens(*image.size),
            max_image_tokens=self.entry.vision_proxy.max_image_tokens,
            memory_tokens=memory_tokens,
        )

    @staticmethod
    def _submit(
        batcher: Captioner, flight: Flight, image, budget: int, instruction: str, max_tokens: int
    ) -> CaptionJob:
        job = CaptionJob(image, instruction, budget, max_tokens, flight.on_delta, flight.on_done, flight.on_error)
        batcher.submit(job)
        return job

    def abort_all(self, reason: str) -> None:
        """End every running request with UNAVAILABLE (the drain grace is over)."""
        for events in list(self._listeners):
            events.put_nowait(ShuttingDownError(reason))

    def info(self) -> VisionEngineInfo:
        """Current state and load."""
        batcher = self.lifecycle.resource
        loaded = batcher.loaded if batcher else None
        common = self._model_info(
            loaded,
            running=batcher.running if batcher else 0,
            waiting=batcher.waiting if batcher else 0,
            max_context=loaded.max_context if loaded else 0,
            memory_used_bytes=batcher.tokens_in_flight * loaded.kv_bytes_per_token if batcher else 0,
        )
        return VisionEngineInfo(
            **common,
            cache_entries=len(self.board.cache),
            cache_hits=self.board.cache.hits,
            shared_cache=self.shared.describe() if self.shared else "",
        )

    def _snapshot(self) -> ModelSnapshot:
        return ModelSnapshot.of(self.info(), self.lifecycle)
