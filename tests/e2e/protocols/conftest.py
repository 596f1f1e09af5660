"""One stack for every protocol's end-to-end tests (Responses, Anthropic Messages, legacy Completions): started
once for the package and stopped after its last test. It serves the Ministral-3 stand-in (TEXT_MODEL) with the proxy
vision model, the scripted reasoning model and the Qwen3 stand-in (it has fill-in-the-middle tokens)."""

from __future__ import annotations

import pytest

from services.model_builder import build_all
from tests.support.processes import REPO_ROOT
from tests.support.stack import make_stack

SCRIPTED = "scripted-reasoning"
QWEN3 = "qwen3-tiny"


@pytest.fixture(scope="package")
def models():
    return build_all(REPO_ROOT / "models" / "tiny", only={"text", "vision", "reasoning", "qwen3"})


@pytest.fixture(scope="package")
def stack(models, tmp_path_factory):
    s = make_stack(
        tmp_path_factory.mktemp("protocols"),
        {"text": models["text"], "vision": models["vision"]},
        vision=True,
        more_text={SCRIPTED: models["reasoning"], QWEN3: models["qwen3"]},
    )
    yield s
    s.stop()
