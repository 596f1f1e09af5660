"""How fast this machine could decode the bench model at best: its memory bandwidth and matmul throughput,
measured in the same run as the contenders, and the roofline of one decode step at a given batch size.

A decode step of B rows must read every weight it multiplies by once (the linear layers and the output
projection; the embedding is a lookup of B rows) and do 2 FLOPs per weight per row. So a step takes at
least max(weight bytes / bandwidth, 2 * weights * B / FLOP/s), and a batch of B makes B tokens per step.
KV-cache reads, attention FLOPs and the sampler are left out: the bound is optimistic, so the fraction of it
a contender reaches is an upper bound on how close it is.

Bandwidth is measured by torch itself (a large `sum`: read-only streaming, as a decode step's weight reads
are), matmul throughput by a square f32 `mm` with torch's own thread count: the numbers the engine's
kernels can reach on this machine, not the vendor's peak.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open


@dataclass(frozen=True)
class Machine:
    """This machine, measured: bytes/s streamed from memory, f32 FLOP/s of a large matmul."""

    bandwidth: float
    flops: float
    threads: int

    def describe(self) -> str:
        return f"memory {self.bandwidth / 1e9:.1f} GB/s (torch sum), f32 matmul {self.flops / 1e9:.1f} GFLOP/s ({self.threads} threads)"


def _best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: page faults, thread pool start
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def measure_machine(megabytes: int = 512, matmul_size: int = 2048, repeats: int = 5) -> Machine:
    """A few seconds: best of `repeats` of a read of `megabytes` and of one `matmul_size`^2 f32 matmul."""
    data = torch.ones(megabytes * 1024 * 1024 // 4, dtype=torch.float32)
    read = _best_seconds(lambda: data.sum(), repeats)
    a = torch.randn(matmul_size, matmul_size)
    b = torch.randn(matmul_size, matmul_size)
    mm = _best_seconds(lambda: torch.mm(a, b), repeats)
    return Machine(data.numel() * 4 / read, 2 * matmul_size**3 / mm, torch.get_num_threads())


@dataclass(frozen=True)
class ModelCost:
    """What one decode row costs the bench model: the weights a step reads, in parameters and bytes."""

    step_params: int  # parameters multiplied per row (linear layers + output projection)
    step_bytes: int  # bytes of those parameters

    @classmethod
    def of_checkpoint(cls, model_dir: str | Path) -> ModelCost:
        """From the checkpoint's safetensors and config: every weight but the embedding lookup (which is the
        output projection too when the embeddings are tied)."""
        model_dir = Path(model_dir)
        config = json.loads((model_dir / "config.json").read_text())
        tied = config.get("tie_word_embeddings", config.get("text_config", {}).get("tie_word_embeddings", False))
        params = nbytes = 0
        for path in sorted(model_dir.glob("*.safetensors")):
            with safe_open(path, "pt") as f:
                for name in f.keys():  # noqa: SIM118 - safe_open is not iterable
                    if "embed_tokens" in name and not tied:
                        continue
                    tensor = f.get_slice(name)
                    count = 1
                    for dim in tensor.get_shape():
                        count *= dim
                    params += count
                    nbytes += count * _DTYPE_BYTES[tensor.get_dtype()]
        return cls(params, nbytes)


_DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "I64": 8, "I32": 4, "U8": 1, "BOOL": 1}


def roofline_tokens_per_sec(machine: Machine, cost: ModelCost, batch: int) -> float:
    """The most tokens/s a decode step of `batch` rows can make on `machine` (see the module docstring)."""
    step = max(cost.step_bytes / machine.bandwidth, 2 * cost.step_params * batch / machine.flops)
    return batch / step


def bound_by(machine: Machine, cost: ModelCost, batch: int) -> str:
    """'memory' or 'compute': which limit sets the step time at `batch` rows."""
    return (
        "memory" if cost.step_bytes / machine.bandwidth >= 2 * cost.step_params * batch / machine.flops else "compute"
    )
