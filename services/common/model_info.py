"""GetModelInfo's part that every engine fills (the model, its state, where it runs and its load), and its one
mapping to the proto's `ModelInfo`. Each engine's snapshot extends it with its own fields (`EngineInfo`: the KV
cache and sampling defaults; `VisionEngineInfo`: the caption caches)."""

from __future__ import annotations

from dataclasses import dataclass

from .grpc_server import MODEL_STATE_TO_PB
from .hf_models import MIB
from .lifecycle import ModelState
from .pb.proxyvision.v1 import common_pb2


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """A snapshot of one engine's model for GetModelInfo (and the metrics' state gauges)."""

    name: str
    source: str
    backend: str  # models.yaml `backend`: what runs the forward passes
    state: ModelState
    error: str
    status: str  # what a load is doing now ("downloading ...", "loading weights"); "" when serving
    last_load_seconds: float
    dtype: str
    device: str
    stand_in_for: str
    max_context: int
    running: int
    waiting: int
    max_num_seqs: int
    max_queue: int
    memory_budget_mib: int
    memory_used_bytes: int

    @property
    def memory_budget_bytes(self) -> int:
        """`params.mem` in bytes."""
        return self.memory_budget_mib * MIB


def model_info_to_pb(info: ModelInfo, **specific) -> common_pb2.ModelInfo:
    """GetModelInfo's answer: `info`'s fields, and the engine's `specific` ones (proto field names)."""
    return common_pb2.ModelInfo(
        name=info.name,
        hf_id=info.source,
        backend=info.backend,
        state=MODEL_STATE_TO_PB[info.state],
        error=info.error,
        status=info.status,
        last_load_seconds=info.last_load_seconds,
        dtype=info.dtype,
        device=info.device,
        stand_in_for=info.stand_in_for,
        max_context=info.max_context,
        running=info.running,
        waiting=info.waiting,
        max_num_seqs=info.max_num_seqs,
        max_queue=info.max_queue,
        memory_budget_mib=info.memory_budget_mib,
        memory_budget_bytes=info.memory_budget_bytes,
        memory_used_bytes=info.memory_used_bytes,
        memory_free_bytes=max(0, info.memory_budget_bytes - info.memory_used_bytes),
        **specific,
    )
