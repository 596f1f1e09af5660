"""The InferenceEngine in-process with the tiny Ministral-3 checkpoint: lifecycle paths that are hard to
reach through gRPC (the batching loop dying, idle unload and reload)."""

from __future__ import annotations

import asyncio

import pytest

from services.common.config import parse_models_config
from services.common.generation import ChatTurn, Finished, SamplingParams, TextDelta
from services.common.lifecycle import ModelState
from services.text_engine.engine.engine import InferenceEngine
from services.text_engine.engine.types import GenerationRequest
from tests.support.models_yaml import entry_for
from tests.support.processes import wait_until_async

PARAMS = {"mem": 8, "dtype": "f32", "max_num_seqs": 4, "prefill_chunk_size": 256}


async def run(engine, max_tokens=8, **kw):
    request = GenerationRequest("t", (ChatTurn("user", "hello"),), SamplingParams(max_tokens=max_tokens, **kw))
    events = [e async for e in engine.generate(request)]
    assert isinstance(events[-1], Finished)
    return "".join(e.text for e in events if isinstance(e, TextDelta)), events[-1]


@pytest.mark.asyncio(loop_scope="function")
async def test_dead_batching_loop_is_reported_and_restarted(tiny_models):
    serving_log: list[bool] = []
    engine = InferenceEngine(
        entry_for(tiny_models["text"], PARAMS), device="cpu", idle_unload_secs=0, on_serving_change=serving_log.append
    )
    await engine.start()
    try:
        assert (await run(engine))[1].completion_tokens == 8
        dead = engine.lifecycle.resource.batcher
        # Kill the manager's loop the way a crash would: it stops without our engine asking.
        await asyncio.to_thread(dead.manager.stop, True, 10, False, True)
        await wait_until_async(
            lambda: (
                engine.lifecycle.resource is not None
                and engine.lifecycle.resource.batcher is not dead
                and serving_log[-1]
            )
        )
        assert serving_log[-2:] == [False, True]  # NOT_SERVING while restarting, then SERVING again
        assert (await run(engine))[1].completion_tokens == 8
    finally:
        await engine.stop()


@pytest.mark.asyncio(loop_scope="function")
async def test_idle_model_is_unloaded_and_reloaded_on_demand(tiny_models):
    engine = InferenceEngine(entry_for(tiny_models["text"], PARAMS), device="cpu", idle_unload_secs=1)
    await engine.start()
    try:
        await wait_until_async(lambda: engine.info().state is ModelState.UNLOADED, timeout=15)
        assert engine.serving  # unloaded is still "can serve": the next request reloads
        # Unloaded, the checkpoint is still the stand-in it was (GetModelInfo, /v1/models and the gpu-check say so).
        assert engine.info().stand_in_for == "mistralai/Ministral-3-3B-Reasoning-2512"
        _, finished = await run(engine, max_tokens=3)
        assert finished.completion_tokens == 3 and engine.info().state is ModelState.READY
    finally:
        await engine.stop()


@pytest.mark.asyncio(loop_scope="function")
async def test_missing_checkpoint_fails_load_without_crashing(tmp_path):
    entry = parse_models_config({"models": [{"name": "m", "local_path": str(tmp_path / "nope")}]}).models[0]
    engine = InferenceEngine(entry, device="cpu", idle_unload_secs=0)
    await engine.start()
    try:
        assert engine.info().state is ModelState.FAILED and not engine.serving
        with pytest.raises(Exception, match="not available"):
            await run(engine)
    finally:
        await engine.stop()


@pytest.mark.asyncio(loop_scope="function")
async def test_a_loop_that_keeps_dying_is_reported_failed_not_restarted_forever(tiny_models):
    serving_log: list[bool] = []
    engine = InferenceEngine(
        entry_for(tiny_models["text"], PARAMS), device="cpu", idle_unload_secs=0, on_serving_change=serving_log.append
    )
    engine.MAX_RESTARTS = 1
    await engine.start()
    try:
        runtime = engine.lifecycle.resource
        await asyncio.to_thread(runtime.batcher.manager.stop, True, 10, False, True)
        await wait_until_async(lambda: engine.lifecycle.resource not in (None, runtime))  # restarted once
        await asyncio.to_thread(engine.lifecycle.resource.batcher.manager.stop, True, 10, False, True)
        await wait_until_async(lambda: engine.info().state is ModelState.FAILED)  # dead again: no more restarts
        assert "keeps failing" in engine.info().error
        assert serving_log[-1] is False and not engine.serving
    finally:
        await engine.stop()


def test_a_cache_the_device_cannot_hold_fails_the_load(tiny_models):
    """The manager sizes attention masks from the cache; a cache that cannot be allocated must fail at
    load time with the reason, never as a loop that dies after every restart."""
    from services.common.hf_models import ModelLoadError
    from services.text_engine.engine.batcher import ContinuousBatcher
    from services.text_engine.engine.loader import load_text_model

    loaded = load_text_model(str(tiny_models["text"]), dtype="f32", device="cpu")
    params = entry_for(tiny_models["text"], PARAMS).params.model_copy(
        update={"mem": 10_000_000, "prefill_chunk_size": 100_000}
    )
    with pytest.raises(ModelLoadError, match="failed to start"):
        ContinuousBatcher(loaded, params)


@pytest.mark.parametrize("prefix_caching", [True, False])
@pytest.mark.asyncio(loop_scope="function")
async def test_a_later_turn_reuses_the_conversations_cached_prefix_only_when_prefix_caching_is_on(
    tiny_models, prefix_caching
):
    """Turn 2 re-sends turn 1's history: with `prefix_caching` its full blocks come from the cache (counted in
    proxyvision_prefix_cache_hits), without it everything is prefilled again; the answers are the same."""
    entry = entry_for(tiny_models["text"], PARAMS)
    params = entry.params.model_copy(update={"block_size": 16, "prefix_caching": prefix_caching})
    engine = InferenceEngine(entry.model_copy(update={"params": params}), device="cpu", idle_unload_secs=0)
    await engine.start()
    history = (ChatTurn("user", "Tell me about the lighthouse keeper and his logbook. " * 6),)

    async def turn(turns) -> str:
        request = GenerationRequest("t", turns, SamplingParams(max_tokens=6, temperature=0.0))
        events = [e async for e in engine.generate(request)]
        return "".join(e.text for e in events if isinstance(e, TextDelta))

    try:
        first = await turn(history)
        batcher = engine.lifecycle.resource.batcher
        hits_before = batcher.prefix_hit_tokens
        second = (*history, ChatTurn("assistant", first), ChatTurn("user", "And then?"))
        await turn(second)
        reused = batcher.prefix_hit_tokens - hits_before
        sample = engine.metrics.registry.get_sample_value("proxyvision_prefix_cache_hits_total", {"model": "m"})
        if prefix_caching:
            assert reused >= 16 * 4 and sample == batcher.prefix_hit_tokens  # turn 1's prompt: several blocks
        else:
            assert reused == 0 and not sample  # no lookups counted as hits (the series has no sample yet)
        assert await turn(history) == first  # greedy, with or without reused blocks
    finally:
        await engine.stop()
