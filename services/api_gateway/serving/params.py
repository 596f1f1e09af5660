"""A validated request's engine parameters: sampling (`GenerationParams`), tools and the answer's format
(`OutputOptions`), and the seed of each of the `n` choices."""

from __future__ import annotations

import json
from dataclasses import fields, replace

from ..clients.text_engine import GenerationParams, OutputOptions, ToolSpec
from ..schemas.chat import ChatCompletionRequest
from ..schemas.tools import JsonSchemaFormat, NamedToolChoice

TOP_K_MAX = 2**32 - 1

# Request fields whose body name or form differs from the engine's (the rest are taken by name).
_RENAMED = {
    "max_tokens": lambda r: r.completion_limit,
    # Any top_k past the vocabulary keeps every token; past uint32 (the proto's type) it could not be sent.
    "top_k": lambda r: None if r.top_k is None else min(r.top_k, TOP_K_MAX),
    "stop": lambda r: r.stop_list,
    "stop_token_ids": lambda r: tuple(r.stop_token_ids or ()),
    "logit_bias": lambda r: {int(k): v for k, v in r.logit_bias.items()} if r.logit_bias else None,
    # The engine returns logprobs when top_logprobs is set: logprobs true alone means 0 alternatives.
    "top_logprobs": lambda r: (r.top_logprobs or 0) if r.logprobs else None,
}


def generation_params(request: ChatCompletionRequest) -> GenerationParams:
    """The engine's sampling parameters from a validated request, field by field."""
    return GenerationParams(**{f.name: _RENAMED[f.name](request) if f.name in _RENAMED else getattr(request, f.name)
                               for f in fields(GenerationParams)})  # fmt: skip


def choice_params(params: GenerationParams, index: int) -> GenerationParams:
    """The parameters of choice `index` of n: with a seed, choice i samples with seed + i (wrapped into int64),
    so the whole request is reproducible and the choices still differ."""
    if params.seed is None or index == 0:
        return params
    return replace(params, seed=(params.seed + index + 2**63) % 2**64 - 2**63)


def output_options(request: ChatCompletionRequest) -> OutputOptions:
    """Tools, tool_choice, parallel_tool_calls and response_format for the engine."""
    tools = tuple(ToolSpec(t.function.name, t.function.description or "",
                           json.dumps(t.function.parameters) if t.function.parameters is not None else "",
                           bool(t.function.strict)) for t in request.tools or ())  # fmt: skip
    choice, name = request.tool_choice or "auto", ""
    if isinstance(choice, NamedToolChoice):
        choice, name = "named", choice.function.name
    fmt = request.response_format
    schema = fmt.json_schema if isinstance(fmt, JsonSchemaFormat) else None
    return OutputOptions(
        tools=tools, tool_choice=choice, tool_name=name, parallel_tool_calls=request.parallel_tool_calls,
        response_format=fmt.type if fmt is not None else "text",
        schema=json.dumps(schema.schema_) if schema is not None and schema.schema_ is not None else "",
        schema_name=schema.name if schema is not None else "",
    )  # fmt: skip
