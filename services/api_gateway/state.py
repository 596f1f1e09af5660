"""The gateway's per-app state, built in the lifespan and handed to routes through a dependency."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.common.config import ModelsConfig

from .metrics import GatewayMetrics
from .serving.chat import ChatService
from .serving.registry import EngineRegistry
from .serving.vision_status import VisionBackend


@dataclass
class Drain:
    """Whether the gateway is draining (SIGTERM): `/ready` says 503 and new chats get 503."""

    draining: bool = False
    inflight: int = 0  # chat completion requests not finished yet (counted by the middleware)


@dataclass
class GatewayState:
    """What the routes use."""

    config: ModelsConfig
    registry: EngineRegistry
    chat: ChatService
    vision: VisionBackend
    started_at: int
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    drain: Drain = field(default_factory=Drain)
