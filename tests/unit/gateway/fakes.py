"""A hand-written fake text engine (`TextEngineClient`'s public methods) and the gateway pieces around it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from services.api_gateway.clients.base import EngineModelInfo
from services.api_gateway.clients.text_engine import OutputOptions
from services.api_gateway.serving.core import GenerationCore
from services.api_gateway.serving.image_policy import ImagePolicies
from services.api_gateway.serving.images import ImageLoader
from services.api_gateway.serving.protocols.chat import ChatCompletions
from services.api_gateway.serving.registry import EngineRegistry
from services.api_gateway.serving.vision_rewrite import ProxyVisionRewriter
from services.api_gateway.serving.vision_status import VisionBackend
from services.api_gateway.state import GatewayState
from services.common.captions import CaptionDone
from services.common.config import ImageLimits, ModelsConfig, parse_models_config
from services.common.generation import (
    Accepted,
    ChatTurn,
    Finished,
    FinishReason,
    RawPrompt,
    ReasoningDelta,
    SamplingParams,
    TextDelta,
)

TEXT = "ministral-3-3b-reasoning"
OTHER = "other-text-model"
VISION = "qwen2-vl-7b"


@dataclass
class Call:
    """One generate() (or count_tokens()) call as the fake saw it."""

    messages: list[ChatTurn]
    params: SamplingParams
    request_id: str
    timeout: float | None
    options: OutputOptions = OutputOptions()
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    affinity_key: str = ""  # the conversation key the serving layer routed the call by
    prompt: RawPrompt | None = None  # a raw prompt (legacy completions) instead of messages


class FakeTextEngine:
    """Replays `script` (events, or an exception to raise at that point) for every call; with `scripts`, the
    i-th call replays scripts[i] (n > 1: each choice its own answer). count_tokens() answers `prompt_tokens`
    (or raises it when it is an exception) and records its call in `counts`."""

    def __init__(
        self,
        model: str,
        script: Sequence = (),
        *,
        health: str = "SERVING",
        scripts: Sequence[Sequence] = (),
        prompt_tokens: int | BaseException = 7,
    ) -> None:
        self.model = model
        self.script = list(script)
        self.scripts = [list(s) for s in scripts]
        self.status = health
        self.prompt_tokens = prompt_tokens
        self.calls: list[Call] = []
        self.counts: list[Call] = []

    def generate(self, messages, params, *, request_id, timeout, options=OutputOptions(), affinity_key="", prompt=None):
        call = Call(list(messages), params, request_id, timeout, options, affinity_key=affinity_key, prompt=prompt)
        script = self.scripts[len(self.calls)] if self.scripts else self.script
        self.calls.append(call)
        return self._replay(call, script)

    async def count_tokens(
        self, messages, options=OutputOptions(), *, prompt=None, request_id, timeout, affinity_key=""
    ) -> int:
        self.counts.append(
            Call(
                list(messages),
                SamplingParams(),
                request_id,
                timeout,
                options,
                affinity_key=affinity_key,
                prompt=prompt,
            )
        )
        if isinstance(self.prompt_tokens, BaseException):
            raise self.prompt_tokens
        return self.prompt_tokens

    @staticmethod
    async def _replay(call: Call, script: list):
        try:
            for item in script:
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, asyncio.Event):  # a gate: the request waits (queued) until it opens
                    await item.wait()
                    continue
                yield item
        finally:
            call.closed.set()  # what the real client turns into call.cancel()

    async def model_info(self, timeout: float) -> EngineModelInfo:
        return EngineModelInfo(self.model, "tiny/" + self.model, "ready", 4096, 0, 0, "mistralai/Big")

    async def health(self, timeout: float, *, wait_for_ready: bool = False) -> str:
        return self.status

    def abort_calls(self) -> int:
        return 0


def finished(
    reason: str = "stop", prompt: int = 7, completion: int = 2, error: str = "", reasoning: int = 0
) -> Finished:
    return Finished(FinishReason(reason), prompt, completion, error, reasoning)


def hello_script() -> list:
    return [Accepted(7), TextDelta("Hello"), TextDelta(""), TextDelta(" wörld"), finished("stop")]


def reasoning_script() -> list:
    """What the engine sends for a reasoning model: reasoning deltas, then the answer."""
    return [
        Accepted(7),
        ReasoningDelta("Let me"),
        ReasoningDelta(" think."),
        TextDelta("Hello"),
        TextDelta("!"),
        finished("stop", completion=6, reasoning=4),
    ]


def make_config(*, vision: bool = False, default: str | None = None) -> ModelsConfig:
    models = [
        {"name": TEXT, "hf_id": "mistralai/Ministral-3-3B-Reasoning-2512", "endpoint": "127.0.0.1:1"},
        {"name": OTHER, "hf_id": "x/other", "endpoint": "127.0.0.1:2"},
    ]
    if vision:
        models.append(
            {
                "name": VISION,
                "hf_id": "Qwen/Qwen2-VL-7B-Instruct",
                "endpoint": "127.0.0.1:3",
                "capabilities": {"vision_mode": "proxy"},
            }
        )
    return parse_models_config({"models": models, "default_model": default})


def make_state(engines: dict[str, FakeTextEngine], config: ModelsConfig | None = None, **options) -> GatewayState:
    """Gateway state over fakes (`options`: GenerationCore keywords, and the chat protocol's `reasoning_field`); text-only requests never touch the fetcher."""
    config = config or make_config()
    registry = EngineRegistry(config, dict(engines), None)
    backend = VisionBackend(None)
    loader = ImageLoader(None, ImageLimits())  # type: ignore[arg-type]
    images = ImagePolicies(config, loader, ProxyVisionRewriter(loader, backend, 5.0))
    reasoning_field = options.pop("reasoning_field", None)
    state = GatewayState(config, registry, GenerationCore(registry, images, 5.0, **options), backend, int(time.time()))
    if reasoning_field is not None:
        state.chat = ChatCompletions(state.core, reasoning_field)
    return state


class FakeVision:
    """A vision engine (the VisionEngineClient surface the gateway uses): `captions` maps an image's sha256 to its
    caption (else 'caption of image <n>' by its place in the call); images whose hash is in `cached` come back
    as cache hits. Records every Describe call as (user_prompt, images); `health` is what its health service says."""

    model = VISION

    def __init__(
        self, captions: dict[str, str] | None = None, cached: set[str] = frozenset(), *, health: str = "SERVING"
    ) -> None:
        self.captions = dict(captions or {})
        self.cached = set(cached)
        self.status = health
        self.calls: list[tuple[str, list]] = []

    async def health(self, timeout: float, *, wait_for_ready: bool = False) -> str:
        return self.status

    async def model_info(self, timeout: float) -> EngineModelInfo:
        return EngineModelInfo(VISION, "tiny/vision", "ready", 4096, 0, 0, "Qwen/Qwen2-VL")

    async def describe(self, images, *, user_prompt, request_id, timeout):
        self.calls.append((user_prompt, list(images)))
        for index in reversed(range(len(images))):  # out of order, as a batching engine may finish them
            image = images[index]
            text = self.captions.get(image.sha256, f"caption of image {index + 1}")
            hit = image.sha256 in self.cached
            yield CaptionDone(index, f" {text} ", "stop", 16, 4, hit, 0.0 if hit else 12.5)

    def abort_calls(self) -> int:
        return 0


async def make_vision_state(
    config: ModelsConfig, engines: dict[str, FakeTextEngine], vision: FakeVision | None, **options
) -> GatewayState:
    """Gateway state over fakes, images included: data URLs are decoded and checked for real (no fetcher: a
    test that needs http URLs builds its own); `vision` None is a config without a proxy."""
    registry = EngineRegistry(config, dict(engines), vision)  # type: ignore[arg-type]
    backend = VisionBackend(vision)  # type: ignore[arg-type]
    await backend.refresh()
    loader = ImageLoader(None, config.gateway.images)  # type: ignore[arg-type]
    images = ImagePolicies(config, loader, ProxyVisionRewriter(loader, backend, 5.0))
    options.setdefault("show_captions", config.gateway.show_captions)
    chat = GenerationCore(registry, images, 5.0, **options)
    return GatewayState(config, registry, chat, backend, int(time.time()))
