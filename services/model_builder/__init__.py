"""Offline tiny models: random-weight checkpoints of the brief's real architectures, built with no network.

`python -m services.model_builder --out models/tiny` writes `ministral-3-tiny/`, `qwen2-vl-tiny/`,
`ministral-3-reasoning-scripted/` (greedy output fixed by `scripted.py`) and `bench-text/`; `make demo` and the tests use them. They load through the same `from_pretrained` paths as
hub checkpoints; `is_tiny_stand_in(path)` tells them apart from real ones.
"""

from .build import build_all, build_bench_model, build_reasoning_model, build_text_model, build_vision_model
from .checkpoint import is_tiny_stand_in
from .text_model import text_only_key_mapping

__all__ = [
    "build_all",
    "build_bench_model",
    "build_reasoning_model",
    "build_text_model",
    "build_vision_model",
    "is_tiny_stand_in",
    "text_only_key_mapping",
]
