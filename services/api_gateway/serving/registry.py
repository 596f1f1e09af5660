"""Which engine serves which model: the gateway's map from model names to engine clients."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.config import ModelEntry, ModelsConfig
from services.common.errors import InvalidRequestError, ModelNotFoundError

from ..clients.text_engine import TextEngineClient
from ..clients.vision_engine import VisionEngineClient

DEFAULT_ALIAS = "default"


@dataclass
class EngineRegistry:
    """Clients for every configured engine (built in the app's lifespan)."""

    config: ModelsConfig
    text: dict[str, TextEngineClient]
    vision: VisionEngineClient | None

    def __post_init__(self) -> None:
        self._aliased = {alias: entry.name for entry in self.config.models for alias in entry.aliases}

    def text_client(self, model: str) -> tuple[ModelEntry, TextEngineClient]:
        """The text model a request names, by name or alias (or the default for "default"); 404 for unknown names."""
        name = self.config.default_model_name if model == DEFAULT_ALIAS else self._aliased.get(model, model)
        if name not in self.text:
            vision = self.config.vision_model
            if vision is not None and name == vision.name:
                raise InvalidRequestError(
                    f"The model '{name}' is the vision model that describes images; chat with a text model "
                    f"(e.g. '{self.config.default_model_name}') and send the images to it.",
                    param="model",
                    code="model_not_supported",
                )
            raise ModelNotFoundError(f"The model '{model}' does not exist", param="model")
        return self.config.model(name), self.text[name]

    def all_engines(self) -> dict[str, TextEngineClient | VisionEngineClient]:
        """Every engine by model name (for readiness)."""
        engines: dict = dict(self.text)
        if self.vision is not None:
            engines[self.vision.model] = self.vision
        return engines

    def abort_calls(self) -> int:
        """Cancel every engine call in flight (end of a drain); their streams end with an error event."""
        return sum(client.abort_calls() for client in self.all_engines().values())
