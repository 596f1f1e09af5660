"""GET /health (the gateway process is up) and GET /ready (it can serve chats: not draining, every text
engine SERVING).

The vision engine is reported but not required: without it text chats still work and image requests get
a clear 503 (the brief's degradation), so taking the gateway out of a load balancer would only hurt.
For each engine that answers but is not SERVING, `models` says what its model is doing (GetModelInfo's
state, status and error): "loading" + "downloading model.safetensors 1.2/7.5 GB", or "failed" + why."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from services.common.errors import ProxyVisionError

from ..dependencies import get_state
from ..state import GatewayState

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_SECS = 1.0


@router.get("/health")
async def health() -> dict:
    """Liveness: answers as long as the gateway's event loop runs."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(state: GatewayState = Depends(get_state)) -> JSONResponse:
    """Readiness: 200 when not draining and every text engine answers SERVING, else 503 with each status."""
    engines = state.registry.all_engines()
    statuses = await asyncio.gather(*(c.health(CHECK_TIMEOUT_SECS) for c in engines.values()))
    report = {name: status for name, status in zip(engines, statuses)}
    ok = not state.drain.draining and all(report[name] == "SERVING" for name in state.registry.text)
    status = "draining" if state.drain.draining else ("ready" if ok else "not ready")
    body = {
        "status": status,
        "engines": report,
        "vision": {"available": bool(state.vision.available), "reason": state.vision.reason or None},
    }
    waiting = {name: engines[name] for name, health in report.items() if health == "NOT_SERVING"}
    if waiting:
        infos = await asyncio.gather(*(_model_state(c) for c in waiting.values()))
        body["models"] = {name: info for name, info in zip(waiting, infos) if info is not None}
    return JSONResponse(body, status_code=200 if ok else 503)


async def _model_state(client) -> dict | None:
    """What a model that is not serving is doing, from GetModelInfo (None if the engine does not say)."""
    try:
        info = await client.model_info(CHECK_TIMEOUT_SECS)
    except ProxyVisionError:
        return None
    return {"state": info.state, "status": info.status or None, "error": info.error or None}
