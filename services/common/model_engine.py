"""What both engines are around their model: the models.yaml entry, the metrics exported from the engine's own
snapshot, and the lifecycle that loads the model on the first request and unloads it when idle.

`InferenceEngine` (text) and `CaptionEngine` (vision) subclass `ModelEngine`; each writes its `_build` (one load)
and `info()` (its GetModelInfo snapshot), and calls `_built(loaded)` at the end of a load.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, TypeVar

from .config import ModelEntry
from .lifecycle import ModelLifecycle
from .metrics import EngineMetrics, ModelSnapshot

R = TypeVar("R")


class ModelEngine(Generic[R]):
    """One model entry served on demand: `lifecycle` holds the resource a load produces (an `R`), `metrics` shows
    `_snapshot()` at each scrape, and what the last load said about the checkpoint stays shown while unloaded."""

    def __init__(
        self,
        entry: ModelEntry,
        *,
        device: str,
        idle_unload_secs: int,
        metrics: EngineMetrics,
        on_serving_change: Callable[[bool], None] = lambda serving: None,
    ) -> None:
        """`device` ("auto", "cpu", "cuda:0", ...) and `idle_unload_secs` (0: never) come from the server's options
        and models.yaml; `on_serving_change(serving)` tells the server's health when the model comes and goes."""
        self.entry = entry
        self.metrics = metrics
        self.metrics.watch(self._snapshot)
        self._device = device
        self._idle_unload_secs = idle_unload_secs
        self.lifecycle: ModelLifecycle[R] = ModelLifecycle(
            entry.name,
            self._build,
            self._teardown,
            idle_unload_secs=idle_unload_secs,
            on_serving_change=on_serving_change,
        )
        self._stand_in_for = ""  # what the last load said the checkpoint stands in for

    def _build(self) -> R:
        """Load the model (in a worker thread, called by the lifecycle)."""
        raise NotImplementedError

    def _teardown(self, resource: R) -> None:
        """Free what `_build` made (in a worker thread, at an idle unload or at stop)."""
        raise NotImplementedError

    def _snapshot(self) -> ModelSnapshot:
        """The state gauges, from the engine's GetModelInfo snapshot."""
        raise NotImplementedError

    def _announce(self, log: logging.Logger, **details) -> None:
        """The brief's `Building InferenceEngine for model <name> (...)` line, at each load: the backend, the
        checkpoint, where it runs and its budget, then the engine's own `details` and its idle unload."""
        params = self.entry.params
        parts = {
            "backend": self.entry.backend,
            "source": self.entry.source,
            "dtype": params.dtype,
            "device": self._device,
            "mem": f"{params.mem} MiB",
            "max_num_seqs": params.max_num_seqs,
            **details,
            "idle_unload_secs": self._idle_unload_secs,
        }
        log.info(
            "Building InferenceEngine for model %s (%s)",
            self.entry.name,
            ", ".join(f"{k}={v}" for k, v in parts.items()),
        )

    def _built(self, loaded) -> None:
        """Remember what this load said about the checkpoint (shown while the model is unloaded)."""
        self._stand_in_for = loaded.stand_in_for

    def _model_info(self, loaded, *, running: int, waiting: int, max_context: int, memory_used_bytes: int) -> dict:
        """The `ModelInfo` fields every engine fills, given its load: the entry's, the lifecycle's, and the loaded
        model's dtype, device and stand-in (while unloaded: the configured ones and the last load's stand-in)."""
        entry, params, lifecycle = self.entry, self.entry.params, self.lifecycle
        if loaded is None:
            placement = {"dtype": params.dtype, "device": self._device, "stand_in_for": self._stand_in_for}
        else:
            placement = {
                "dtype": str(loaded.dtype).removeprefix("torch."),
                "device": str(loaded.device),
                "stand_in_for": loaded.stand_in_for,
            }
        return {
            "name": entry.name,
            "source": entry.source,
            "backend": entry.backend,
            "state": lifecycle.state,
            "error": lifecycle.error,
            "status": lifecycle.status,
            "last_load_seconds": lifecycle.last_load_seconds,
            **placement,
            "max_context": max_context,
            "running": running,
            "waiting": waiting,
            "max_num_seqs": params.max_num_seqs,
            "max_queue": params.queue_limit,
            "memory_budget_mib": params.mem,
            "memory_used_bytes": memory_used_bytes,
        }
