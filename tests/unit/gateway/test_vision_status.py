"""VisionBackend over a hand-written fake vision client: the reason a 503 gives is the engine's own."""

from __future__ import annotations

import pytest

from services.api_gateway.clients.base import EngineModelInfo
from services.api_gateway.serving.vision_status import VisionBackend
from services.common.errors import VisionUnavailableError


class FakeVisionClient:
    """Answers health and GetModelInfo as set."""

    def __init__(self, health: str, *, error: str = "", status: str = "", info_fails: bool = False) -> None:
        self.status, self.error, self.load_status, self.info_fails = health, error, status, info_fails

    async def health(self, timeout: float, *, wait_for_ready: bool = False) -> str:
        return self.status

    async def model_info(self, timeout: float) -> EngineModelInfo:
        if self.info_fails:
            raise ConnectionError("gone")
        return EngineModelInfo(
            "qwen2-vl-7b",
            "x",
            "failed" if self.error else "loading",
            0,
            0,
            0,
            "",
            status=self.load_status,
            error=self.error,
        )


@pytest.mark.parametrize(
    "client, reason",
    [
        (
            FakeVisionClient("NOT_SERVING", error="no weights in /models/qwen"),
            "vision model failed to load: no weights in /models/qwen",
        ),
        (
            FakeVisionClient("NOT_SERVING", status="downloading model.safetensors 1.0/7.5 GB"),
            "vision model not ready: downloading model.safetensors 1.0/7.5 GB",
        ),
        (FakeVisionClient("NOT_SERVING", info_fails=True), "vision engine not serving (model not loaded)"),
        (FakeVisionClient("UNKNOWN"), "vision engine unknown"),
    ],
)
async def test_an_unavailable_vision_engine_is_refused_with_its_own_reason(client, reason):
    backend = VisionBackend(client)  # type: ignore[arg-type]
    with pytest.raises(VisionUnavailableError) as info:
        await backend.require()
    assert info.value.message == f"Vision model unavailable: {reason}" and info.value.http_status == 503


async def test_a_serving_vision_engine_is_handed_out():
    client = FakeVisionClient("SERVING")
    assert await VisionBackend(client).require() is client  # type: ignore[arg-type]


async def test_a_vision_model_still_loading_at_start_up_is_news_not_a_warning(caplog):
    loading = FakeVisionClient("NOT_SERVING", status="loading weights")
    with caplog.at_level("INFO", logger="services.api_gateway.serving.vision_status"):
        backend = VisionBackend(loading)  # type: ignore[arg-type]
        await backend.refresh()
        loading.status, loading.error = "NOT_SERVING", "CUDA out of memory"
        await backend.refresh()
    (first, second) = caplog.records
    assert first.levelname == "INFO" and "Vision backend: Unavailable (vision model not ready: loading weights" in (
        first.getMessage()
    )
    assert second.levelname == "WARNING" and "failed to load: CUDA out of memory" in second.getMessage()


async def test_no_vision_model_configured_is_said_at_info(caplog):
    # A text-only deployment is as configured: nothing at a normal start-up is a warning.
    with caplog.at_level("INFO", logger="services.api_gateway.serving.vision_status"):
        await VisionBackend(None).start()
    (record,) = caplog.records
    assert (record.levelname, record.getMessage()) == (
        "INFO",
        "Vision backend: Unavailable (no vision model configured)",
    )


async def test_an_engine_not_listening_yet_at_start_up_is_news_until_vision_was_available(caplog):
    engine = FakeVisionClient("UNAVAILABLE")
    with caplog.at_level("INFO", logger="services.api_gateway.serving.vision_status"):
        backend = VisionBackend(engine)  # type: ignore[arg-type]
        await backend.refresh()  # not listening yet: torch still importing
        engine.status, engine.load_status = "NOT_SERVING", "loading weights"
        await backend.refresh()
        engine.status = "SERVING"
        await backend.refresh()
        engine.status = "UNAVAILABLE"
        await backend.refresh()  # lost after it was available
    assert [r.levelname for r in caplog.records] == ["INFO", "INFO", "INFO", "WARNING"], caplog.text
