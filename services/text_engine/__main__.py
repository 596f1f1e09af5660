"""`python -m services.text_engine --models-config models.yaml --model NAME --port 50051`."""

from __future__ import annotations

import sys

from services.common.config import ConfigError, ModelEntry, ModelsConfig
from services.common.engine_main import engine_main, named_model

from .server import TextEngineServer


def pick_model(config: ModelsConfig, name: str | None) -> ModelEntry:
    """The named text model, or the default one."""
    name = name or config.default_model_name
    entry = named_model(config, name)
    if entry.is_vision_proxy:
        raise ConfigError(f"model {name!r} is a vision model; serve it with services.vision_engine")
    return entry


if __name__ == "__main__":
    sys.exit(engine_main(service="text_engine", default_port=50051, pick_model=pick_model, server=TextEngineServer))
