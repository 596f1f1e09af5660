"""Whatever a load raises, the lifecycle ends FAILED with one line saying why (never a crash, never stuck
in LOADING), and `status` says what a load is doing while it runs."""

from __future__ import annotations

import asyncio
import threading

import pytest

from services.common.config import load_models_config
from services.common.errors import EngineUnavailableError
from services.common.hf_models import ModelLoadError, check_local_source
from services.common.lifecycle import ModelLifecycle, ModelState, describe_load_error


def failing(exc: BaseException):
    def load():
        raise exc

    return load


def missing_module() -> ImportError:
    try:
        import accelerate_that_is_not_installed  # noqa: F401
    except ImportError as exc:
        return exc
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            ModelLoadError("cannot load weights from '/m': no file named model.safetensors"),
            "cannot load weights from '/m': no file named model.safetensors",
        ),
        (
            missing_module(),
            "a Python module the model needs is missing ('accelerate_that_is_not_installed'): "
            "No module named 'accelerate_that_is_not_installed'",
        ),
        (KeyError("lm_head.weight"), "KeyError: 'lm_head.weight'"),
        (AssertionError(), "AssertionError"),
        (
            RuntimeError("CUDA out of memory.\n  Tried to allocate 2 GiB"),
            "RuntimeError: CUDA out of memory. Tried to allocate 2 GiB",
        ),
        (SystemExit(3), "SystemExit: 3"),
    ],
)
async def test_every_load_error_becomes_failed_with_one_line(exc, expected, caplog):
    serving: list[bool] = []
    lifecycle = ModelLifecycle("m", failing(exc), lambda r: None, idle_unload_secs=0, on_serving_change=serving.append)
    await lifecycle.start()
    assert (lifecycle.state, lifecycle.error, lifecycle.status) == (ModelState.FAILED, expected, f"failed: {expected}")
    assert serving == [False] and not lifecycle.serving
    assert f"Model m failed to load: {expected}" in caplog.text
    # Our own error needs no traceback; anything else is a bug worth one.
    assert bool(caplog.records[-1].exc_info) != isinstance(exc, ModelLoadError)
    with pytest.raises(EngineUnavailableError, match=f"Model m is not available: {expected[:20]}"):
        async with lifecycle.use():
            pass


def test_describe_load_error_keeps_a_load_error_as_written():
    assert describe_load_error(ModelLoadError("")) == "ModelLoadError"


async def test_status_follows_the_load_and_clears_when_ready():
    reached, go = threading.Event(), threading.Event()
    lifecycle: ModelLifecycle[str] = None  # type: ignore[assignment]

    def load() -> str:
        lifecycle.report("downloading model.safetensors 1.2/7.5 GB")
        reached.set()
        go.wait(10)
        lifecycle.report("building KV cache")
        return "model"

    lifecycle = ModelLifecycle("m", load, lambda r: None, idle_unload_secs=0)
    start = asyncio.create_task(lifecycle.start())
    await asyncio.to_thread(reached.wait, 10)
    assert (lifecycle.state, lifecycle.status) == (ModelState.LOADING, "downloading model.safetensors 1.2/7.5 GB")
    go.set()
    await start
    assert (lifecycle.state, lifecycle.status, lifecycle.error) == (ModelState.READY, "", "")
    await lifecycle.stop()


async def test_a_missing_local_path_fails_in_one_line_naming_the_path_and_the_fix(tmp_path, caplog):
    """Not transformers' "Repo id must be in the form 'repo_name' or 'namespace/repo_name'": the path (relative
    to models.yaml, so resolved against it) and what to do about it."""
    (tmp_path / "models" / "present").mkdir(parents=True)
    (tmp_path / "models" / "a-file").write_text("not a checkpoint")
    (tmp_path / "models.yaml").write_text(
        "models:\n"
        "  - {name: text, local_path: models/missing, endpoint: '127.0.0.1:1'}\n"
        "  - {name: vision, hf_id: org/vision, endpoint: '127.0.0.1:2',\n"
        "     capabilities: {vision_mode: proxy, vision_proxy: {local_path: models/a-file}}}\n"
        "  - {name: here, local_path: models/present, endpoint: '127.0.0.1:3'}\n"
        "  - {name: hub, hf_id: org/model, endpoint: '127.0.0.1:4'}\n"
    )
    text, vision, here, hub = load_models_config(tmp_path / "models.yaml").models
    with pytest.raises(ModelLoadError) as info:
        check_local_source(text)
    assert str(info.value) == (
        f"local_path {tmp_path}/models/missing does not exist (model 'text'; a relative path is relative to "
        "models.yaml): point local_path at a checkpoint directory on this machine, or set hf_id instead to "
        "download one from the Hugging Face hub"
    )
    with pytest.raises(ModelLoadError) as info:
        check_local_source(vision)
    assert str(info.value).startswith(
        f"capabilities.vision_proxy.local_path {tmp_path}/models/a-file is not a directory (model 'vision'; "
    )
    assert "or set capabilities.vision_proxy.hf_id instead" in str(info.value)
    check_local_source(here)  # a directory: transformers reads it
    check_local_source(hub)  # a hub id: fetch_checkpoint downloads it

    # As the engines run it: the load fails at start with that line, and no traceback.
    lifecycle = ModelLifecycle("text", lambda: check_local_source(text), lambda r: None, idle_unload_secs=0)
    await lifecycle.start()
    assert lifecycle.state is ModelState.FAILED
    assert f"Model text failed to load: local_path {tmp_path}/models/missing does not exist" in caplog.text
    assert not caplog.records[-1].exc_info
