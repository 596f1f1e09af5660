"""What the engine needs of a batching loop: the interface both of ours implement.

`ContinuousBatcher` (batcher.py) runs transformers' continuous batching over token ids; `NativeVisionBatcher`
(native.py) adds static batches of image requests beside it for `vision_mode: native` models. The engine
submits, cancels and watches either the same way, and `RequestStream` (stream.py) reads the outputs of both:
`generated_tokens` (cumulative), `is_finished()` and `error`. `VllmTokenSource` (vllm_source.py) is the third:
the same interface over vLLM's engine core (`backend: vllm`, backends.py picks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from services.common.multimodal import EncodedImage

from .kv_budget import KvBudget
from .sampling.spec import SamplingSpec


class TokenOutput(Protocol):
    """One request's progress, as delivered to `on_output` on the event loop."""

    generated_tokens: list[int]  # everything generated so far (an end-of-sequence token included)
    error: str | None

    def is_finished(self) -> bool:
        """Whether this is the request's last output."""


@dataclass(frozen=True)
class TokenRequest:
    """What a batching loop needs of one admitted request (the engine's `PreparedRequest` also carries what only
    the output side reads: stops, parsing)."""

    request_id: str  # the loop's key for it: `cancel` names it
    prompt_ids: list[int]
    max_new_tokens: int
    spec: SamplingSpec
    images: Sequence[EncodedImage] = ()  # fill the prompt's image tokens, in order (native-vision loops only)


OnOutput = Callable[[TokenOutput], None]  # called with each progress of a request, on the event loop


@dataclass(frozen=True)
class CacheEvents:
    """What a batching loop tells the engine's metrics about its KV cache. Called on the loop's own thread (or in
    vLLM's stat logger): each must be thread-safe, as prometheus counters are."""

    on_preempt: Callable[[int], None] = lambda count: None  # requests preempted because the cache was full
    on_prefix_lookup: Callable[[int, int], None] = lambda queried, hit: None  # prompt tokens looked up, reused


NO_CACHE_EVENTS = CacheEvents()


@dataclass
class TokenProgress:
    """A TokenOutput of the loops whose outputs we make ourselves (the image batcher's, vLLM's adapter's);
    transformers' manager delivers its own GenerationOutput."""

    generated_tokens: list[int]
    error: str | None = None
    finished: bool = False

    def is_finished(self) -> bool:
        """Whether this is the request's last output."""
        return self.finished


class TokenSource(Protocol):
    """A batching loop on its own thread; every method but `stop` is called on the event loop."""

    budget: KvBudget  # the paged KV cache of text requests
    image_capacity_tokens: int  # KV tokens of one image batch; 0 when the loop takes no images

    def submit(self, request: TokenRequest, on_output: OnOutput) -> None:
        """Queue a request; `on_output` runs on the calling event loop."""

    def cancel(self, request_id: str) -> None:
        """Abort a request and free what it holds; it delivers nothing more."""

    @property
    def alive(self) -> bool:
        """False once the loop has died or was stopped."""

    @property
    def fatal_error(self) -> Exception | None:
        """Why the loop died, if it did."""

    def cache_usage(self) -> float:
        """Fraction of the KV cache in use now, 0..1."""

    def stop(self) -> None:
        """Stop the loop and free its memory (blocking: call from a worker thread)."""
