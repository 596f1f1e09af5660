"""Engine parameters every protocol shares: a tool's spec, and the seed of each of the `n` choices."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from ..clients.text_engine import GenerationParams, ToolSpec

TOP_K_MAX = 2**32 - 1


def tool_spec(name: str, description: str | None, parameters: dict[str, Any] | None, strict: bool | None) -> ToolSpec:
    """A function the model may call, whichever protocol declared it (`parameters`: its JSON Schema; None: any
    object)."""
    return ToolSpec(name, description or "", json.dumps(parameters) if parameters is not None else "", bool(strict))


def top_k(value: int | None) -> int | None:
    """Any top_k past the vocabulary keeps every token; past uint32 (the proto's type) it could not be sent."""
    return None if value is None else min(value, TOP_K_MAX)


def choice_params(params: GenerationParams, index: int) -> GenerationParams:
    """The parameters of choice `index` of n: with a seed, choice i samples with seed + i (wrapped into int64),
    so the whole request is reproducible and the choices still differ."""
    if params.seed is None or index == 0:
        return params
    return replace(params, seed=(params.seed + index + 2**63) % 2**64 - 2**63)
