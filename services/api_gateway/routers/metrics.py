"""GET /metrics: the gateway's Prometheus series, in the text exposition format."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..dependencies import get_state
from ..state import GatewayState

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def metrics(state: GatewayState = Depends(get_state)) -> Response:
    """Prometheus scrape endpoint."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
