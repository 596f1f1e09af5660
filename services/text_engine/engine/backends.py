"""Which engine core runs a model (models.yaml `backend`): transformers' continuous batching or vLLM's.

The engine (engine.py) asks this module for a loaded model and a `TokenSource` and never learns which core it
drives. With `backend: transformers` our process holds the weights and runs the batching loop on a thread
(batcher.py; native.py beside it for a natively seeing model). With `backend: vllm` our process holds only the
tokenizer, config and sampling defaults, and vLLM's engine core loads the weights in its own processes
(vllm_source.py, imported only then: vLLM lives in its own venv).
"""

from __future__ import annotations

from services.common.config import ModelEntry

from .batcher import ContinuousBatcher
from .loader import LoadedModel, load_text_model
from .native import NativeVisionBatcher
from .token_source import CacheEvents, TokenSource


def load_model(entry: ModelEntry, device: str) -> LoadedModel:
    """The model's tokenizer, config and sampling defaults, and its weights when our process runs it."""
    return load_text_model(
        entry.source,
        dtype=entry.params.dtype,
        device=device,
        **entry.pretrained_options,
        max_model_len=entry.max_model_len,
        sampling=entry.sampling,
        gguf_file=entry.gguf_file,
        native_vision=entry.is_native_vision,
        weights=entry.backend == "transformers",
    )


def new_token_source(
    entry: ModelEntry,
    loaded: LoadedModel,
    events: CacheEvents,
) -> TokenSource:
    """A started batching loop over `loaded` (blocking: a worker thread)."""
    if entry.backend == "vllm":
        from .vllm_source import VllmTokenSource

        return VllmTokenSource(loaded, entry, events)
    if loaded.family is not None:
        return NativeVisionBatcher(loaded, entry.params, events)
    return ContinuousBatcher(loaded, entry.params, events)


def restarts_in_place(source: TokenSource) -> bool:
    """Whether a dead loop can be replaced without stopping it first: transformers' manager thread has ended and
    holds nothing more; a native model's other loop or vLLM's processes must be freed before their replacement."""
    return isinstance(source, ContinuousBatcher)
