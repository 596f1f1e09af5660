"""`python -m services.vision_engine --models-config models.yaml --model NAME --port 50052`."""

from __future__ import annotations

import sys

from services.common.config import ConfigError, ModelEntry, ModelsConfig
from services.common.engine_main import engine_main
from services.common.engine_server import EngineOptions

from .server import VisionEngineServer


def pick_model(config: ModelsConfig, name: str | None) -> ModelEntry:
    """The named model, or the config's proxy vision model; it must have vision_mode 'proxy'."""
    if name is None:
        if config.vision_model is None:
            raise ConfigError("no model has capabilities.vision_mode 'proxy'")
        return config.vision_model
    try:
        entry = config.model(name)
    except KeyError:
        raise ConfigError(f"no model named {name!r}") from None
    if not entry.is_vision_proxy:
        raise ConfigError(f"model {name!r} is not a vision model (capabilities.vision_mode must be 'proxy')")
    return entry


def build(config: ModelsConfig, entry: ModelEntry, options: EngineOptions) -> VisionEngineServer:
    return VisionEngineServer(entry, options, idle_unload_secs=config.idle_unload_secs_for(entry))


if __name__ == "__main__":
    sys.exit(engine_main(service="vision_engine", default_port=50052, pick_model=pick_model, build_server=build))
