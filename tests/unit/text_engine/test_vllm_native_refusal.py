"""A natively seeing model on vLLM whose family cannot hand its images over sized (its processor sizes them
itself: tiles, a fixed size) is refused at load with one line naming the fix, before vLLM is touched (so this
runs in the project's venv, which has no vLLM)."""

from __future__ import annotations

import pytest

from services.common.hf_models import ModelLoadError
from services.model_builder import build_all
from services.text_engine.engine.loader import load_text_model
from services.text_engine.engine.vllm_source import VllmTokenSource
from tests.support.models_yaml import entry_for
from tests.support.processes import REPO_ROOT


@pytest.mark.parametrize("kind", ["smolvlm", "gemma3"])
def test_a_family_that_sizes_its_own_images_is_refused_on_vllm(kind):
    path = build_all(REPO_ROOT / "models" / "tiny", only={kind})[kind]
    entry = entry_for(path, {"mem": 16, "dtype": "f32"}, backend="vllm", capabilities={"vision_mode": "native"})
    loaded = load_text_model(str(path), dtype="f32", device="cpu", native_vision=True, weights=False)
    with pytest.raises(ModelLoadError) as refused:
        VllmTokenSource(loaded, entry)
    message = str(refused.value)
    assert "vision_mode native on vLLM takes the families" in message and loaded.family.name in message
    assert message.endswith("serve it with backend: transformers") and "\n" not in message
