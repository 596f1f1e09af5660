"""Shared fixtures: the offline tiny models (built once, through the product's builder)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.processes import REPO_ROOT

# Every engine a test starts (in its own process or in this one) shares the machine's cores with others: its stack's
# other engine, the other xdist worker's engines. libgomp's default makes a thread that reaches a barrier spin for its
# peers; when a peer is descheduled, each of a forward pass's hundreds of parallel regions costs a time slice, and
# decoding ran 15-30x slower (the "drain stall" of docs/reliability.md). Waiting threads sleep instead. Set before
# torch is imported (libgomp reads it when loaded); children inherit it; a value already set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Tests that need checkpoints: those that take a fixture that builds them, and the unit tests below, which read
# the stand-ins' tokenizers straight from models/tiny/ (built by `make models`). All are marked `needs_models`;
# `make unit` runs tests/unit without them. A new unit test that opens models/tiny/ belongs in this list.
MODEL_FIXTURES = {"tiny_models", "bench_model"}
READS_MODELS_TINY = (
    "tests/unit/text_engine/test_grammar.py::",
    "tests/unit/text_engine/test_tool_constraints.py::",
    "tests/unit/text_engine/test_tool_prompt.py::",
    "tests/unit/text_engine/test_tool_parsers.py::test_a_real_tekken_tokenizers_call_becomes_a_call",
    "tests/unit/text_engine/test_tool_parsers.py::test_a_real_qwen3_tokenizers_calls_become_calls",
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs_models: needs the stand-in checkpoints under models/tiny/ (make models)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())) or item.nodeid.startswith(READS_MODELS_TINY):
            item.add_marker(pytest.mark.needs_models)


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
