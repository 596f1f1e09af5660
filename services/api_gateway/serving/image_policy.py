"""What happens to a request's images, per model, decided once from models.yaml.

- `native`: the model sees images itself (`vision_mode: native`, served by a text engine with its vision
  weights): the images travel to that engine as `ChatTurn.parts`, in the user's order; nothing is captioned.
- `proxy`: a text-only model, with a proxy vision model configured: images are captioned and the captions
  replace them (vision_rewrite.py). A proxy that is down is a 503 `Vision model unavailable: <reason>`.
- `refuse`: a text-only model and no proxy: a request with images is a 400 that names the model and says how
  to enable images.

Either way the gateway finds, fetches and checks the images itself first (`ImageLoader`): the same limits and
400s for every model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from services.common.config import ModelsConfig
from services.common.errors import InvalidRequestError
from services.common.generation import ChatTurn

from .conversation import Conversation
from .images import ImageLoader
from .turns import engine_turn, native_turn
from .vision_rewrite import PendingImages, ProxyVisionRewriter

log = logging.getLogger(__name__)

ImageMode = Literal["native", "proxy", "refuse"]


@dataclass(frozen=True)
class ImagePolicy:
    """How one served model takes images."""

    model: str
    mode: ImageMode

    def refusal(self, param: str = "messages") -> InvalidRequestError:
        """The 400 for images sent to a model that cannot take them."""
        return InvalidRequestError(
            f"The model '{self.model}' cannot take images: it is text-only (vision_mode 'disabled') and no vision "
            "model is configured to describe images for it. To enable images, add a model with "
            "capabilities.vision_mode 'proxy' to models.yaml (it captions images for text models), or serve a "
            "vision-language model with capabilities.vision_mode 'native'; or send text only.",
            param=param,
            code="images_not_supported",
        )


def decide(config: ModelsConfig) -> dict[str, ImagePolicy]:
    """Every chat model's policy: native if it sees images itself, else proxy if a vision model captions, else
    refuse."""
    has_proxy = config.vision_model is not None
    return {
        m.name: ImagePolicy(m.name, "native" if m.is_native_vision else "proxy" if has_proxy else "refuse")
        for m in config.text_models
    }


class ImagePolicies:
    """The per-model policies and what they do with a request's messages."""

    def __init__(self, config: ModelsConfig, loader: ImageLoader, rewriter: ProxyVisionRewriter) -> None:
        self.policies = decide(config)
        self._loader = loader
        self._rewriter = rewriter
        log.info("Image policy: %s", ", ".join(f"{p.model}={p.mode}" for p in self.policies.values()))

    def of(self, model: str) -> ImagePolicy:
        """The policy of a served chat model."""
        return self.policies[model]

    async def prepare(self, model: str, conversation: Conversation, timeout: float) -> list[ChatTurn] | PendingImages:
        """The engine's turns, ready now (text only, or a native model's images as parts), or the images still
        to be captioned (proxy). Raises our 4xx/503 errors before any response starts."""
        messages = conversation.messages
        refs = self._loader.find(messages, conversation.messages_param)
        if not refs:
            return [engine_turn(m) for m in messages]
        policy = self.of(model)
        if policy.mode == "refuse":
            raise policy.refusal(conversation.messages_param)
        if policy.mode == "proxy":
            return await self._rewriter.prepare(messages, refs=refs, timeout=timeout)  # type: ignore[return-value]
        log.info("Processing multimodal request with %d images (native: %s)", len(refs), model)
        loaded = await self._loader.load(refs)
        return [
            native_turn(m, loaded.by_message[i]) if i in loaded.by_message else engine_turn(m)
            for i, m in enumerate(messages)
        ]
