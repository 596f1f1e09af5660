"""Engine parameters every protocol shares: sampling, a tool's spec, the response format, and the seed of each of
the `n` choices."""

from __future__ import annotations

import json
from dataclasses import fields, replace
from typing import Any

from services.common.generation import ResponseFormat, ResponseFormatType, SamplingParams, Tool

from ..schemas.sampling import SamplingFields
from ..schemas.tools import JsonSchema

TOP_K_MAX = 2**32 - 1


def tool_spec(name: str, description: str | None, parameters: dict[str, Any] | None, strict: bool | None) -> Tool:
    """A function the model may call, whichever protocol declared it (`parameters`: its JSON Schema; None: any
    object)."""
    return Tool(name, description or "", json.dumps(parameters) if parameters is not None else "", bool(strict))


def response_format(kind: str, schema: JsonSchema | None) -> ResponseFormat:
    """The answer's format, whichever protocol asked for it: `kind` is "text", "json_object" or "json_schema" (then
    `schema` is the schema format as Chat Completions spells it; its `schema` absent: any object)."""
    if schema is None:
        return ResponseFormat(ResponseFormatType(kind))
    text = json.dumps(schema.schema_) if schema.schema_ is not None else ""
    return ResponseFormat(ResponseFormatType(kind), text, schema.name)


def top_k(value: int | None) -> int | None:
    """Any top_k past the vocabulary keeps every token; past uint32 (the proto's type) it could not be sent."""
    return None if value is None else min(value, TOP_K_MAX)


# Sampling fields whose body form differs from the engine's (the rest are taken by name).
_RENAMED = {
    "top_k": lambda r: top_k(r.top_k),
    "stop": lambda r: r.stop_list,
    "stop_token_ids": lambda r: tuple(r.stop_token_ids or ()),
    "logit_bias": lambda r: {int(k): v for k, v in (r.logit_bias or {}).items()},
}


def sampling_params(request: SamplingFields, **protocol_fields) -> SamplingParams:
    """The engine's parameters from a validated request's sampling fields, field by field; `protocol_fields` are
    the ones each protocol spells its own way (max_tokens, top_logprobs, min_tokens)."""
    values = {
        f.name: _RENAMED[f.name](request) if f.name in _RENAMED else getattr(request, f.name)
        for f in fields(SamplingParams)
        if f.name in _RENAMED or f.name in SamplingFields.model_fields
    }
    return SamplingParams(**values, **protocol_fields)


def choice_params(params: SamplingParams, index: int) -> SamplingParams:
    """The parameters of choice `index` of n: with a seed, choice i samples with seed + i (wrapped into int64),
    so the whole request is reproducible and the choices still differ."""
    if params.seed is None or index == 0:
        return params
    return replace(params, seed=(params.seed + index + 2**63) % 2**64 - 2**63)
