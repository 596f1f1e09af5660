"""The paged KV cache running out mid-decode, in-process with the tiny Ministral-3 checkpoint: a
preempted request resumes even when the request that kept running is cancelled.

transformers admits no waiting request after a preemption until an active one finishes; before the
batcher's hook, cancelling the active one left the preempted request, and every new one, waiting forever."""

from __future__ import annotations

import asyncio

import pytest

from services.common.generation import ChatTurn, Finished, SamplingParams
from services.text_engine.engine.engine import InferenceEngine
from services.text_engine.engine.types import GenerationRequest
from tests.support.models_yaml import entry_for
from tests.support.processes import wait_until_async

MAX_TOKENS = 1500  # two of them (plus prompts) overflow the 2048-token cache below, one fits alone


# mem=1 MiB at 512 bytes/token and 16-token blocks: a 2048-token cache.
PARAMS = {"mem": 1, "dtype": "f32", "max_num_seqs": 2, "prefill_chunk_size": 256, "block_size": 16}


class Run:
    """One request consumed in a task."""

    def __init__(self, engine: InferenceEngine, name: str) -> None:
        self.name = name
        self.final: Finished | None = None
        request = GenerationRequest(
            name, (ChatTurn("user", f"Tell me about {name}."),), SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0)
        )
        self.task = asyncio.create_task(self._consume(engine, request))

    async def _consume(self, engine, request) -> None:
        async for event in engine.generate(request):
            if isinstance(event, Finished):
                self.final = event


@pytest.mark.asyncio(loop_scope="function")
async def test_a_preempted_request_resumes_when_the_running_one_is_cancelled(tiny_models):
    engine = InferenceEngine(entry_for(tiny_models["text"], PARAMS), device="cpu", idle_unload_secs=0)
    await engine.start()
    try:
        batcher = engine.lifecycle.resource.batcher
        assert batcher.budget.capacity_tokens == 2048
        runs = [Run(engine, "alpha"), Run(engine, "beta")]
        await wait_until_async(lambda: batcher.preemptions > 0, 120, "the cache running out")
        # Which one kept running: the scheduler's view (the tiny model's text can be all special tokens, so
        # the streams' deltas cannot tell). Request keys are "<request_id>#<n>".
        active = list(batcher.manager.batch_processor.scheduler.active_requests)
        assert len(active) == 1, active
        running = next(run for run in runs if active[0].startswith(run.name + "#"))
        preempted = next(run for run in runs if run is not running)
        running.task.cancel()
        await asyncio.wait_for(preempted.task, 120)  # hung forever before the hook
        assert preempted.final.reason.value == "length" and preempted.final.completion_tokens == MAX_TOKENS
        after = Run(engine, "gamma")
        await asyncio.wait_for(after.task, 120)  # new requests are admitted too
        assert after.final.completion_tokens == MAX_TOKENS
    finally:
        await engine.stop()
