"""Shared fixtures: the offline tiny models (built once, through the product's builder)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.support.processes import REPO_ROOT

TEXT_MODEL = "ministral-3-3b-reasoning"
VISION_MODEL = "qwen2-vl-7b"


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, Path]:
    """Tiny random-weight checkpoints of the brief's architectures (a no-op when `make` built them)."""
    from services.model_builder import build_all

    return build_all(REPO_ROOT / "models" / "tiny", only={"text", "vision"})


@pytest.fixture(scope="session")
def bench_model() -> Path:
    """The 58M-parameter bench checkpoint (232 MB of f32 weights): big enough to see memory freed and slow
    enough on a CPU (tens of tokens/s) to hold requests in flight for seconds."""
    from services.model_builder import build_all

    return build_all(REPO_ROOT / "models" / "tiny", only={"bench"})["bench"]


def write_models_yaml(path: Path, tiny_models: dict[str, Path], *, endpoints: dict[str, str] | None = None,
                      vision: bool = False, extra: dict | None = None, text_params: dict | None = None) -> Path:  # fmt: skip
    """A models.yaml of the brief's shape pointing at the tiny checkpoints."""
    endpoints = endpoints or {}
    text = {
        "name": TEXT_MODEL,
        "local_path": str(tiny_models["text"]),
        "params": {"mem": 16, "dtype": "f32", "max_num_seqs": 16, "prefill_chunk_size": 512, **(text_params or {})},
        "capabilities": {"vision_mode": "disabled"},
    }
    models = [text]
    if vision:
        models.append({
            "name": VISION_MODEL,
            "local_path": str(tiny_models["vision"]),
            "params": {"mem": 64, "dtype": "f32", "max_num_seqs": 4},
            "capabilities": {"vision_mode": "proxy", "vision_proxy": {"prompt_template": "Describe this image in detail:"}},
        })  # fmt: skip
    for model in models:
        if model["name"] in endpoints:
            model["endpoint"] = endpoints[model["name"]]
    data = {"models": models, "idle_unload_secs": 300, **(extra or {})}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
