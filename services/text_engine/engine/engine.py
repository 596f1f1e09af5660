"""The InferenceEngine: one text model, its batching loop, admission and idle unloading.

`start()` loads the model (through the shared ModelLifecycle) and starts the batcher; `generate()` admits
requests FIFO up to `max_num_seqs`, streams their text, and aborts them in the batcher when the caller
goes away; a watchdog restarts a batching loop that died, failing only the requests it held.
`count_tokens()` builds a request's prompt as `generate()` does, without the model's weights.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from services.common.config import ModelEntry, ResolvedSampling
from services.common.errors import OverloadedError, ShuttingDownError
from services.common.generation import (
    Accepted,
    Finished,
    FinishReason,
    GenerationEvent,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
)
from services.common.hub_download import fetch_weights
from services.common.metrics import EngineMetrics, ModelSnapshot
from services.common.model_engine import ModelEngine
from services.common.model_info import ModelInfo

from .admission import build_prompt, prepare_request
from .backends import load_model, new_token_source, restarts_in_place
from .loader import LoadedModel
from .logprobs import LogprobFormatter
from .native import NativeVisionBatcher
from .output import ParserSpec, parser_for
from .sampling.grammar import GrammarCompiler
from .stream import RequestStream
from .token_source import CacheEvents, TokenRequest, TokenSource
from .types import GenerationRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextRuntime:
    """What a load produces: the model, the loop that batches it, how its output is parsed, its grammar compiler
    (with its cache of compiled grammars) and its logprob formatter."""

    loaded: LoadedModel
    batcher: TokenSource  # ContinuousBatcher, NativeVisionBatcher (native vision) or VllmTokenSource (backends.py)
    parser: ParserSpec
    grammars: GrammarCompiler
    logprobs: LogprobFormatter


@dataclass(frozen=True)
class Prompting:
    """What building a prompt needs, and nothing that holds the weights: the last load's tokenizer, config and
    image processor (`loaded.model` is None), its output parsing and its image batches' KV tokens. Kept across an
    idle unload, so counting tokens never loads the model."""

    loaded: LoadedModel
    parser: ParserSpec
    image_capacity: int


@dataclass(frozen=True, kw_only=True)
class EngineInfo(ModelInfo):
    """A text engine's snapshot for GetModelInfo: the common part, its KV cache and its sampling defaults."""

    kv_cache_tokens: int
    kv_cache_usage: float  # 0..1
    kv_cache_bytes: int
    sampling: ResolvedSampling | None = None  # effective sampling defaults (None until loaded)
    quantization: str = ""  # how a quantized checkpoint runs here; "" when unquantized
    vision_mode: str = ""  # "native" when the model answers images itself; "" for text only
    image_batch_bytes_used: int = 0  # native vision: KV bytes the running image batch holds now


class InferenceEngine(ModelEngine[TextRuntime]):
    """Serves one model entry of models.yaml."""

    WATCHDOG_INTERVAL_SECS = 0.5
    MAX_RESTARTS = 3
    CRASH_WINDOW_SECS = 60.0

    def __init__(self, entry: ModelEntry, *, metrics: EngineMetrics | None = None, **hooks) -> None:
        """`hooks`: ModelEngine's device, idle_unload_secs and on_serving_change."""
        super().__init__(entry, metrics=metrics or EngineMetrics(entry.name), **hooks)
        self.metrics.backend.labels(entry.name, entry.backend).set(1)
        self._slots = asyncio.Semaphore(entry.params.max_num_seqs)
        self._running = 0
        self._waiting = 0  # for a slot (requests still loading the model or templating are not counted)
        self._streams: dict[str, RequestStream] = {}
        self._ids = itertools.count()
        self._watchdog_task: asyncio.Task | None = None
        self._deaths: list[float] = []
        # The defaults of the last load, so GetModelInfo still shows them while the model is unloaded.
        self._last_sampling: ResolvedSampling | None = None
        self._prompting: Prompting | None = None  # the last load's, for count_tokens (set by _build)

    async def start(self) -> None:
        """Load the model and start watching the batching loop."""
        await self.lifecycle.start()
        self._watchdog_task = asyncio.create_task(self._watchdog())

    async def stop(self) -> None:
        """Stop watching and free the model."""
        if self._watchdog_task is not None:
            self._watchdog_task.cancel()
            await asyncio.gather(self._watchdog_task, return_exceptions=True)
        await self.lifecycle.stop()

    # Worker-thread side of the lifecycle ---------------------------------------------------------
    def _build(self) -> TextRuntime:
        entry, params = self.entry, self.entry.params
        self._announce(
            log,
            prefill_chunk_size=params.prefill_chunk_size,
            block_size=params.block_size,
            max_model_len=entry.max_model_len,
        )
        started = time.monotonic()
        fetch_weights(entry, self.lifecycle.report)
        loaded = load_model(entry, self._device)
        parser = parser_for(entry.reasoning_parser, loaded.tokenizer, entry.tool_call_parser)
        self._last_sampling = loaded.sampling
        self._built(loaded)
        self.lifecycle.report("building KV cache")
        batcher = self._new_batcher(loaded)
        budget = batcher.budget
        note = f" (offline tiny stand-in for {loaded.stand_in_for})" if loaded.stand_in_for else ""
        log.info(
            "Model %s ready%s in %.1fs (backend=%s): max_context=%d, KV cache: %d blocks × %d tokens = %d tokens (mem=%d MiB, "
            "%d bytes/token); reasoning parser: %s, tool-call parser: %s",
            entry.name,
            note,
            time.monotonic() - started,
            entry.backend,
            loaded.max_context,
            budget.num_blocks,
            budget.page_size,
            budget.capacity_tokens,
            params.mem,
            budget.bytes_per_token,
            parser.reasoning,
            parser.tools,
        )
        if isinstance(batcher, NativeVisionBatcher):
            log.info(
                "Model %s answers images itself (%s adapter): image batches of up to %d requests and %d KV tokens "
                "(half of mem); text requests keep continuous batching",
                entry.name,
                loaded.family.name,
                params.max_num_seqs,
                batcher.image_capacity_tokens,
            )
        grammars = GrammarCompiler(loaded.tokenizer, loaded.text_config.vocab_size, loaded.eos_token_ids)
        self._prompting = Prompting(dataclasses.replace(loaded, model=None), parser, batcher.image_capacity_tokens)
        return TextRuntime(loaded, batcher, parser, grammars, LogprobFormatter(loaded.tokenizer))

    def _new_batcher(self, loaded: LoadedModel) -> TokenSource:
        return new_token_source(self.entry, loaded, CacheEvents(self._count_preemptions, self._count_prefix_lookup))

    def _count_prefix_lookup(self, queried: int, hit: int) -> None:
        self.metrics.prefix_cache_queries.labels(self.entry.name).inc(queried)
        self.metrics.prefix_cache_hits.labels(self.entry.name).inc(hit)

    def _count_preemptions(self, count: int) -> None:
        self.metrics.kv_preemptions.labels(self.entry.name).inc(count)  # prometheus counters are thread-safe

    def _teardown(self, runtime: TextRuntime) -> None:
        runtime.batcher.stop()

    def _restart_batcher(self, runtime: TextRuntime) -> TextRuntime:
        if not restarts_in_place(runtime.batcher):
            runtime.batcher.stop()  # its other loop or processes may still run: free them before the replacement
        return dataclasses.replace(runtime, batcher=self._new_batcher(runtime.loaded))

    async def _watchdog(self) -> None:
        """Restart a batching loop that died, so one bad step never leaves the engine hanging."""
        while True:
            await asyncio.sleep(self.WATCHDOG_INTERVAL_SECS)
            runtime = self.lifecycle.resource
            if runtime is None or runtime.batcher.alive:
                continue
            error = runtime.batcher.fatal_error
            for stream in list(self._streams.values()):
                stream.fail(f"the batching loop failed: {error}")
            now = time.monotonic()
            self._deaths = [t for t in self._deaths if now - t < self.CRASH_WINDOW_SECS] + [now]
            if len(self._deaths) > self.MAX_RESTARTS:
                # Restarting again would only hide a loop that cannot run: stop serving, say why.
                log.error(
                    "Batching loop of %s died %d times in %.0fs (%s); giving up",
                    self.entry.name,
                    len(self._deaths),
                    self.CRASH_WINDOW_SECS,
                    error,
                )
                await self.lifecycle.fail(f"batching loop keeps failing: {error}")
                continue
            log.error("Batching loop of %s died (%s); restarting it", self.entry.name, error)
            await self.lifecycle.replace(self._restart_batcher)

    # Requests -------------------------------------------------------------------------------------
    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """Stream the completion of one request. Raises our errors before the first event."""
        return self.metrics.observe(
            self._generate(request),
            is_output=lambda e: isinstance(e, (TextDelta, ReasoningDelta, ToolCallDelta)),
            outcome=self._finished,
        )

    def _finished(self, event: GenerationEvent) -> str | None:
        """Token counters and the request's status, from its final event."""
        if not isinstance(event, Finished):
            return None
        self.metrics.prompt_tokens.labels(self.entry.name).inc(event.prompt_tokens)
        self.metrics.generation_tokens.labels(self.entry.name).inc(event.completion_tokens)
        return "error" if event.reason is FinishReason.ERROR else "ok"

    async def _generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        async with self.lifecycle.use() as runtime:
            prepared = await asyncio.to_thread(
                prepare_request,
                request,
                runtime.loaded,
                self.entry,
                runtime.batcher.budget,
                runtime.parser,
                runtime.grammars,
                runtime.batcher.image_capacity_tokens,
            )
            limit = self.entry.params.queue_limit
            if self._slots.locked() and self._waiting >= limit:
                raise OverloadedError(
                    f"The engine serving {self.entry.name} is at capacity ({self._running} running, "
                    f"{self._waiting} waiting, max_queue={limit}); retry shortly"
                )
            # Admitted: from here on the request is served (or fails with an error *event*), so the caller
            # may commit to its response now instead of guessing from a timer.
            yield Accepted(len(prepared.prompt_ids))
            self._waiting += 1
            try:
                await self._slots.acquire()
            finally:
                self._waiting -= 1
            try:
                self._running += 1
                key = f"{request.request_id}#{next(self._ids)}"
                # The batcher may have been restarted while this request waited for a slot.
                batcher = (self.lifecycle.resource or runtime).batcher
                stream = RequestStream(
                    key,
                    prepared,
                    runtime.loaded.tokenizer,
                    runtime.loaded.eos_token_ids,
                    runtime.parser,
                    runtime.logprobs,
                )
                self._streams[key] = stream
                try:
                    batcher.submit(
                        TokenRequest(key, prepared.prompt_ids, prepared.max_new_tokens, prepared.spec, prepared.images),
                        stream.on_output,
                    )
                    async for event in stream.events():
                        yield event
                finally:
                    # Cancelled, failed, or a stop string matched: free the slot and KV blocks now.
                    if not stream.engine_finished:
                        batcher.cancel(key)
                    del self._streams[key]
                    self._running -= 1
            finally:
                self._slots.release()

    async def count_tokens(self, request: GenerationRequest) -> int:
        """The prompt tokens `generate()` would count for `request` (its `Accepted.prompt_tokens`), through the
        same `build_prompt`, with no admission: no queue, no slot, no context or KV check. It uses the last load's
        tokenizer, so an idle-unloaded model stays unloaded; before the first load has finished, it waits for it
        (and fails as `generate()` would when it cannot load). Raises our errors for a request `generate()` would
        refuse for its content."""
        prompting = self._prompting
        if prompting is None:
            async with self.lifecycle.use():
                prompting = self._prompting
            assert prompting is not None
        prompt = await asyncio.to_thread(
            build_prompt, request, prompting.loaded, self.entry, prompting.parser, prompting.image_capacity
        )
        return len(prompt.ids)

    def abort_all(self, reason: str) -> None:
        """End every running request with UNAVAILABLE (the drain grace is over)."""
        for stream in list(self._streams.values()):
            stream.abort(ShuttingDownError(reason))

    def info(self) -> EngineInfo:
        """Current state and load."""
        runtime = self.lifecycle.resource
        loaded = runtime.loaded if runtime else None
        budget = runtime.batcher.budget if runtime else None
        kv_cache_bytes = budget.capacity_tokens * budget.bytes_per_token if budget else 0
        kv_cache_usage = runtime.batcher.cache_usage() if runtime else 0.0
        image_batch_bytes = self._image_batch_bytes(runtime)
        common = self._model_info(
            loaded,
            running=self._running,
            waiting=max(0, self.lifecycle.active - self._running),
            max_context=loaded.max_context if loaded else (self.entry.max_model_len or 0),
            # KV cache bytes holding tokens now (a native model's image batch included).
            memory_used_bytes=int(kv_cache_usage * kv_cache_bytes) + image_batch_bytes,
        )
        return EngineInfo(
            **common,
            kv_cache_tokens=budget.capacity_tokens if budget else 0,
            kv_cache_usage=kv_cache_usage,
            kv_cache_bytes=kv_cache_bytes,
            sampling=loaded.sampling if loaded else self._last_sampling,
            quantization=loaded.quantization if loaded else "",
            vision_mode="native" if self.entry.is_native_vision else "",
            image_batch_bytes_used=image_batch_bytes,
        )

    @staticmethod
    def _image_batch_bytes(runtime: TextRuntime | None) -> int:
        batcher = runtime.batcher if runtime else None
        if not isinstance(batcher, NativeVisionBatcher):
            return 0
        return batcher.image_tokens_in_flight * batcher.image_bytes_per_token

    def _snapshot(self) -> ModelSnapshot:
        info = self.info()
        return ModelSnapshot.of(info, self.lifecycle, info.kv_cache_usage)

    @property
    def queued(self) -> int:
        """Requests admitted and waiting for a slot: what `max_queue` bounds (GetModelInfo's `waiting` also counts
        those still loading the model or templating)."""
        return self._waiting

    @property
    def serving(self) -> bool:
        """Whether requests can be served now."""
        return self.lifecycle.serving
