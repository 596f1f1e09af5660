"""The batching loop of a `vision_mode: native` model: continuous batching for text, static batches for images.

Both loops drive the same VLM (no copy of any weight): text requests go to transformers' continuous batching
(`ContinuousBatcher`, the VLM's forward without images is its language model's), image requests to
`ImageBatcher` (`generate()` with the family's image tensors). The engine sees one `TokenSource`.

Memory: `params.mem` is split in two, half for the continuous-batching KV cache (`budget`, GetModelInfo's
`kv_cache_tokens`) and half for image batches (`image_capacity_tokens`: rows x padded length of one
`generate()` batch). Admission keeps every request within its own half. Vision-encoder activations are not
counted (they live only during a batch's first step).

Threads: each loop has its own worker thread. Their forward passes are serialised by one lock around the
model's `forward` (the two loops then interleave step by step): the model is never run by two threads at
once, whatever state its modules keep between calls.
"""

from __future__ import annotations

import functools
import threading

from services.common.config import ModelParams
from services.common.hf_models import MIB, kv_bytes_per_token

from .batcher import ContinuousBatcher
from .image_batcher import ImageBatcher
from .loader import LoadedModel
from .token_source import NO_CACHE_EVENTS, CacheEvents, OnOutput, TokenOutput, TokenRequest, TokenSource

IMAGE_MEMORY_SHARE = 0.5  # of params.mem, for image batches; the rest is the paged KV cache of text requests


def split_memory(mem_mib: int) -> tuple[int, int]:
    """(text KV cache MiB, image batches MiB) of a native model's `mem`; each at least 1 MiB."""
    image = max(1, int(mem_mib * IMAGE_MEMORY_SHARE))
    return max(1, mem_mib - image), image


def forward_lock(model) -> threading.Lock | None:
    """The lock every forward pass of `model` holds (`serialise_forward`); None if its forward is not wrapped."""
    return getattr(model.forward, "_proxyvision_lock", None)


def serialise_forward(model, lock: threading.Lock) -> None:
    """Make every forward pass of `model` hold `lock` (idempotent: a restarted loop reuses the first wrap)."""
    if forward_lock(model) is not None:
        return
    forward = model.forward

    @functools.wraps(forward)
    def locked(*args, **kwargs):
        with lock:
            return forward(*args, **kwargs)

    locked._proxyvision_lock = lock  # type: ignore[attr-defined]
    model.forward = locked


def restore_forward(model) -> None:
    """Undo `serialise_forward`: the wrapper holds the model (a reference cycle that only a later garbage
    collection would break, keeping the weights after an unload)."""
    if forward_lock(model) is not None:
        del model.forward


class NativeVisionBatcher:
    """Routes each request to the loop that can serve it; looks like one loop to the engine."""

    def __init__(self, loaded: LoadedModel, params: ModelParams, events: CacheEvents = NO_CACHE_EVENTS) -> None:
        text_mib, image_mib = split_memory(params.mem)
        self._model = loaded.model
        self.image_bytes_per_token = kv_bytes_per_token(loaded.text_config, loaded.dtype)
        self.image_capacity_tokens = max(1, (image_mib * MIB) // self.image_bytes_per_token)
        serialise_forward(loaded.model, threading.Lock())
        try:
            self.text = ContinuousBatcher(loaded, params.model_copy(update={"mem": text_mib}), events)
        except Exception:
            restore_forward(loaded.model)
            raise
        self.budget = self.text.budget
        try:
            self.images = ImageBatcher(loaded, max_batch=params.max_num_seqs, token_budget=self.image_capacity_tokens)
        except Exception:
            try:
                self.text.stop()
            finally:
                restore_forward(loaded.model)
            raise
        self._routes: dict[str, TokenSource] = {}

    def submit(self, request: TokenRequest, on_output: OnOutput) -> None:
        """Image requests to the image batcher, the others to continuous batching."""
        loop: TokenSource = self.images if request.images else self.text  # type: ignore[assignment]

        def delivered(output: TokenOutput) -> None:
            if output.is_finished():
                self._routes.pop(request.request_id, None)
            on_output(output)

        self._routes[request.request_id] = loop
        try:
            loop.submit(request, delivered)
        except Exception:
            self._routes.pop(request.request_id, None)
            raise

    def cancel(self, request_id: str) -> None:
        """Abort a request in the loop that has it."""
        loop = self._routes.pop(request_id, None)
        if loop is not None:
            loop.cancel(request_id)

    @property
    def alive(self) -> bool:
        """Both loops running."""
        return self.text.alive and self.images.alive

    @property
    def fatal_error(self) -> Exception | None:
        """Why a loop died, if one did."""
        return self.text.fatal_error or self.images.fatal_error

    def cache_usage(self) -> float:
        """The paged KV cache's usage (text requests)."""
        return self.text.cache_usage()

    @property
    def image_tokens_in_flight(self) -> int:
        """KV tokens the running image batch holds now."""
        return self.images.tokens_in_flight

    def stop(self) -> None:
        """Stop both loops (blocking) and unwrap the model's forward."""
        try:
            self.images.stop()
        finally:
            try:
                self.text.stop()
            finally:
                restore_forward(self._model)
