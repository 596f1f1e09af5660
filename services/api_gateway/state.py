"""The gateway's per-app state, built in the lifespan and handed to routes through a dependency."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.common.config import ModelsConfig

from .metrics import GatewayMetrics
from .serving.core import GenerationCore
from .serving.protocols.anthropic import AnthropicMessages
from .serving.protocols.chat import ChatCompletions
from .serving.protocols.completions import Completions
from .serving.protocols.responses import Responses
from .serving.registry import EngineRegistry
from .serving.response_store import MemoryResponseStore, ResponseStore
from .serving.vision_status import VisionBackend


@dataclass
class Drain:
    """Whether the gateway is draining (SIGTERM): `/ready` says 503 and new chats get 503."""

    draining: bool = False
    inflight: int = 0  # generation requests not finished yet, every protocol's (counted by the middleware)


@dataclass
class GatewayState:
    """What the routes use: the request core, and each protocol's translator over it."""

    config: ModelsConfig
    registry: EngineRegistry
    core: GenerationCore
    vision: VisionBackend
    started_at: int
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    drain: Drain = field(default_factory=Drain)

    store: ResponseStore | None = None  # stored responses; None: in this gateway's memory

    def __post_init__(self) -> None:
        self.chat = ChatCompletions(self.core, self.config.gateway.reasoning_field)
        self.messages = AnthropicMessages(self.core)
        self.store = self.store or MemoryResponseStore(self.config.gateway.responses)
        self.responses = Responses(self.core, self.store, self.config.gateway.show_captions)
        self.completions = Completions(self.core, self.config.gateway.max_n)
