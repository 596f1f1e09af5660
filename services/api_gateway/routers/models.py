"""GET /v1/models and /v1/models/{id}: the OpenAI model list, default first."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends

from services.common.config import SamplingDefaults
from services.common.errors import ModelNotFoundError, ProxyVisionError

from ..dependencies import get_state
from ..openapi import error_responses
from ..state import GatewayState

router = APIRouter(tags=["models"])

INFO_TIMEOUT_SECS = 1.0


async def _describe(state: GatewayState) -> list[dict]:
    config, registry = state.config, state.registry
    engines = registry.all_engines()
    infos = await asyncio.gather(*(c.model_info(INFO_TIMEOUT_SECS) for c in engines.values()), return_exceptions=True)
    by_name = dict(zip(engines, infos))
    default = config.default_model_name
    ordered = sorted(config.models, key=lambda m: (m.name != default, m.is_vision_proxy))
    listing = []
    for entry in ordered:
        info = by_name.get(entry.name)
        item = {
            "id": entry.name,
            "object": "model",
            "created": state.started_at,
            "owned_by": "proxyvision",
            "default": entry.name == default,
            "source": entry.source,
            "role": "vision-proxy" if entry.is_vision_proxy else "text",
            "backend": entry.backend,
            # image_input: whether a chat request to it may carry images (native, or captioned by the proxy).
            "capabilities": {
                "vision_mode": entry.capabilities.vision_mode,
                "image_input": entry.is_native_vision
                or (not entry.is_vision_proxy and config.vision_model is not None),
            },
        }
        if entry.aliases:
            item["aliases"] = list(entry.aliases)
        if entry.description:
            item["description"] = entry.description
        if isinstance(info, ProxyVisionError) or info is None:
            item["state"] = "unreachable"
        else:
            item.update(state=info.state, max_context=info.max_context)
            if info.sampling_defaults is not None:
                item["sampling_defaults"] = _sampling_defaults(info)
            if info.quantization:
                item["quantization"] = info.quantization
            if info.stand_in_for:
                item["stand_in_for"] = info.stand_in_for
                item["note"] = f"offline tiny random-weight stand-in for {info.stand_in_for}"
        listing.append(item)
        # Each alias is listed too (as vLLM lists every served model name), pointing at the model it names.
        canonical = {k: v for k, v in item.items() if k != "aliases"}
        listing += [{**canonical, "id": alias, "default": False, "alias_of": entry.name} for alias in entry.aliases]
    return listing


def _sampling_defaults(info) -> dict:
    """What a request that leaves a parameter out gets, and where each value came from (models.yaml,
    generation_config.json or default). `max_tokens: null` means up to the context."""
    values = {name: info.sampling_defaults.get(name) for name in SamplingDefaults.model_fields}
    return {**values, "sources": dict(info.sampling_sources or {})}


@router.get("/v1/models")
async def list_models(state: GatewayState = Depends(get_state)) -> dict:
    """All models; the default one first, flagged `"default": true`, and named in a top-level `default`."""
    return {"object": "list", "data": await _describe(state), "default": state.config.default_model_name}


@router.get("/v1/models/{model_id:path}", responses=error_responses(404))
async def get_model(model_id: str, state: GatewayState = Depends(get_state)) -> dict:
    """One model."""
    for item in await _describe(state):
        if item["id"] == model_id:
            return item
    raise ModelNotFoundError(f"The model '{model_id}' does not exist", param="model")
