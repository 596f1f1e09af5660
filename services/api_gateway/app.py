"""`build_app(config)`: the FastAPI gateway, with its engine channels opened and closed in the lifespan."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.common.config import ModelsConfig

from .auth import install_api_keys
from .clients.routing import AffinityRouting, Routing, open_routing
from .clients.text_engine import TextEngineClient
from .clients.vision_engine import VisionEngineClient
from .errors import install_error_handlers
from .limits import RequestLimitsMiddleware
from .media.fetcher import ImageFetcher
from .metrics import GatewayMetrics
from .middleware import RequestIdMiddleware
from .openapi import install_openapi
from .routers import anthropic, chat, completions, health, metrics as metrics_router, models, responses, ui
from .serving.core import GenerationCore
from .serving.image_policy import ImagePolicies
from .serving.images import ImageLoader
from .serving.registry import EngineRegistry
from .serving.response_store import open_response_store
from .serving.vision_rewrite import ProxyVisionRewriter
from .serving.vision_status import VisionBackend
from .state import Drain, GatewayState

log = logging.getLogger(__name__)


def build_app(
    config: ModelsConfig, *, ui_server: bool = False, fetcher: ImageFetcher | None = None, drain: Drain | None = None
) -> FastAPI:
    """The gateway app for `config`; every model must have an `endpoint`. `drain` is shared with the server
    that runs the app (it flips it on SIGTERM)."""
    missing = [m.name for m in config.models if not m.endpoint]
    if missing:
        raise ValueError(f"no engine endpoint for model(s): {', '.join(missing)} (set models[].endpoint or --endpoint)")

    metrics = GatewayMetrics()
    drain = drain or Drain()
    metrics.running.set_function(lambda: drain.inflight)  # one count of requests in flight: the drain's

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        routings = open_routings(config, metrics)
        vision_entry = config.vision_model
        registry = EngineRegistry(
            config=config,
            text={m.name: TextEngineClient(routings[m.name], m.name) for m in config.text_models},
            vision=VisionEngineClient(routings[vision_entry.name], vision_entry.name) if vision_entry else None,
        )
        await asyncio.gather(*(routing.start() for routing in routings.values()))
        image_fetcher = fetcher or ImageFetcher(config.gateway.images)
        backend = VisionBackend(registry.vision)
        timeout = config.gateway.request_timeout_secs
        loader = ImageLoader(image_fetcher, config.gateway.images, metrics)
        images = ImagePolicies(config, loader, ProxyVisionRewriter(loader, backend, timeout))
        core = GenerationCore(
            registry,
            images,
            timeout,
            metrics=metrics,
            max_n=config.gateway.max_n,
            show_captions=config.gateway.show_captions,
        )
        store = open_response_store(config)
        app.state.gateway = GatewayState(config, registry, core, backend, int(time.time()), metrics, drain, store)
        await backend.start()
        log.info(
            "Gateway ready: text models %s, default %s", [m.name for m in config.text_models], config.default_model_name
        )
        try:
            yield
        finally:
            await backend.stop()
            await image_fetcher.aclose()
            await store.aclose()
            for routing in routings.values():
                await routing.close()

    app = FastAPI(
        title="ProxyVision",
        summary="OpenAI-compatible chat completions that give a text-only model eyes",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    # Innermost middleware: a 413 gets its request id and access line, and an API key is checked before a body is read.
    app.add_middleware(RequestLimitsMiddleware, limits=config.gateway.limits)
    key_policy = install_api_keys(app, config.gateway)  # before RequestIdMiddleware: a 401 gets its id and access line
    install_openapi(app, key_policy=key_policy)
    app.include_router(chat.router)
    app.include_router(anthropic.router)
    app.include_router(responses.router)
    app.include_router(completions.router)
    app.include_router(models.router)
    app.include_router(health.router)
    app.include_router(metrics_router.router)
    ui.install(app, enabled=ui_server)
    app.add_middleware(RequestIdMiddleware, metrics=metrics, drain=drain)
    return app


def open_routings(config: ModelsConfig, metrics: GatewayMetrics) -> dict[str, Routing]:
    """Each model's engine routing, as `gateway.routing` says for its kind (text or vision), counted in `metrics`:
    routes per outcome, and for affinity the replicas ready and unavailable."""
    settings = config.gateway.routing
    vision = config.vision_model
    routings: dict[str, Routing] = {}
    for entry in config.models:
        is_vision = vision is not None and entry.name == vision.name
        policy = settings.vision if is_vision else settings.text
        routing = open_routing(
            entry.name,
            entry.endpoint,
            policy,
            config.tls,
            settings,
            load_guard=not is_vision,
            close_grace=config.gateway.request_timeout_secs,
            count_route=lambda outcome, m=entry.name, p=policy: metrics.routes.labels(m, p, outcome).inc(),
        )
        if isinstance(routing, AffinityRouting):
            replicas = routing.replicas
            metrics.replicas.labels(entry.name, "ready").set_function(replicas.ready_count)
            metrics.replicas.labels(entry.name, "unavailable").set_function(replicas.unavailable_count)
        routings[entry.name] = routing
    return routings
