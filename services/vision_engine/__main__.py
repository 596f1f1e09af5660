"""`python -m services.vision_engine --models-config models.yaml --model NAME --port 50052`."""

from __future__ import annotations

import sys

from services.common.config import ConfigError, ModelEntry, ModelsConfig
from services.common.engine_main import engine_main, named_model

from .server import VisionEngineServer


def pick_model(config: ModelsConfig, name: str | None) -> ModelEntry:
    """The named model, or the config's proxy vision model; it must have vision_mode 'proxy'."""
    if name is None:
        if config.vision_model is None:
            raise ConfigError("no model has capabilities.vision_mode 'proxy'")
        return config.vision_model
    entry = named_model(config, name)
    if not entry.is_vision_proxy:
        raise ConfigError(f"model {name!r} is not a vision model (capabilities.vision_mode must be 'proxy')")
    return entry


if __name__ == "__main__":
    sys.exit(engine_main(service="vision_engine", default_port=50052, pick_model=pick_model, server=VisionEngineServer))
