"""The CaptionEngine in-process with the tiny Qwen2-VL: cross-request batching, cancellation, single flight,
and the processor pieces that replace AutoProcessor (no torchvision) surviving a save/load round trip."""

from __future__ import annotations

import asyncio
import shutil
import threading

import pytest
import torch

from services.common.captions import CaptionDelta, CaptionDone
from services.common.errors import OverloadedError, ShuttingDownError
from services.common.generation import Detail, ImageBytes
from services.common.lifecycle import ModelState
from services.vision_engine.captioner.engine import CaptionEngine
from services.vision_engine.captioner.loader import load_vision_model
from services.vision_engine.captioner.prompts import render_prompt
from services.vision_engine.captioner.types import DescribeJob
from tests.support.images import png
from tests.support.models_yaml import entry_for
from tests.support.processes import wait_until_async


def caption_entry(tiny_models, **params):
    return entry_for(tiny_models["vision"], {"mem": 256, "dtype": "f32", "max_num_seqs": 4, **params}, vision=True)


def job(*images: bytes, max_tokens: int = 8) -> DescribeJob:
    return DescribeJob("t", tuple(ImageBytes(d, "image/png", Detail.LOW) for d in images), max_tokens=max_tokens)


async def collect(engine, j):
    return [e async for e in engine.describe(j)]


@pytest.mark.asyncio(loop_scope="function")
async def test_images_of_concurrent_requests_share_a_batch(tiny_models):
    """While one caption runs, three requests arrive; the next batch takes all three at once."""
    engine = CaptionEngine(caption_entry(tiny_models), device="cpu", idle_unload_secs=0)
    await engine.start()
    try:
        batcher = engine.lifecycle.resource
        long_one = engine.describe(job(png((200, 1, 1)), max_tokens=100_000))
        await anext(long_one)  # the batcher is busy with it now
        waiting = [asyncio.ensure_future(collect(engine, job(png((i, 50, 50))))) for i in range(3)]
        deadline = asyncio.get_running_loop().time() + 20
        while batcher.waiting < 3:
            assert asyncio.get_running_loop().time() < deadline, "requests never queued"
            await asyncio.sleep(0.01)
        await long_one.aclose()  # frees the batcher
        results = await asyncio.gather(*waiting)
        assert all(isinstance(r[-1], CaptionDone) for r in results)
        assert list(batcher.batch_sizes) == [1, 3]  # never one-by-one when more are waiting
    finally:
        await engine.stop()


@pytest.mark.asyncio(loop_scope="function")
async def test_identical_concurrent_requests_are_computed_once(tiny_models):
    engine = CaptionEngine(caption_entry(tiny_models), device="cpu", idle_unload_secs=0)
    await engine.start()
    try:
        image = png((7, 7, 7))
        a, b = await asyncio.gather(collect(engine, job(image)), collect(engine, job(image)))
        assert a[-1].caption == b[-1].caption
        assert engine.lifecycle.resource.captioned == 1
        again = await collect(engine, job(image))
        assert again[-1].cached and engine.lifecycle.resource.captioned == 1
    finally:
        await engine.stop()


class DecodeAfterGate(CaptionEngine):
    """The real engine, but the second request's image decoding waits for `gate`: it lets a test put the
    landing of another request's caption exactly between a cache check and the flight lookup."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.decodes = 0

    def _decode(self, job, indices):
        self.decodes += 1
        if self.decodes == 2:
            assert self.gate.wait(30)
        return super()._decode(job, indices)


@pytest.mark.asyncio(loop_scope="function")
async def test_a_caption_that_lands_while_a_request_decodes_is_not_computed_again(tiny_models):
    engine = DecodeAfterGate(caption_entry(tiny_models), device="cpu", idle_unload_secs=0)
    await engine.start()
    try:
        image = png((9, 9, 9))
        first = asyncio.ensure_future(collect(engine, job(image)))
        second = asyncio.ensure_future(collect(engine, job(image)))  # misses the cache, then decodes slowly
        await first  # its caption lands in the cache while the second request is still decoding
        engine.gate.set()
        done = (await second)[-1]
        assert done.cached and done.caption == (await first)[-1].caption
        assert engine.lifecycle.resource.captioned == 1
    finally:
        await engine.stop()


@pytest.mark.asyncio(loop_scope="function")
async def test_a_cancelled_request_stops_its_caption(tiny_models):
    engine = CaptionEngine(caption_entry(tiny_models, max_num_seqs=1), device="cpu", idle_unload_secs=0)
    await engine.start()
    try:
        stream = engine.describe(job(png((1, 99, 1)), max_tokens=100_000))
        first = await anext(stream)
        assert isinstance(first, CaptionDelta)
        await stream.aclose()  # the caller went away
        batcher = engine.lifecycle.resource
        deadline = asyncio.get_running_loop().time() + 20
        while batcher.running:
            assert asyncio.get_running_loop().time() < deadline, "the cancelled caption kept running"
            await asyncio.sleep(0.05)
        done = await collect(engine, job(png((2, 2, 2))))  # the engine serves the next request
        assert isinstance(done[-1], CaptionDone)
    finally:
        await engine.stop()


@pytest.mark.asyncio(loop_scope="function")
async def test_a_full_queue_is_refused_at_once_and_a_drain_aborts_running_requests(tiny_models):
    engine = CaptionEngine(caption_entry(tiny_models, max_num_seqs=1, max_queue=1), device="cpu", idle_unload_secs=0)
    await engine.start()
    try:
        batcher = engine.lifecycle.resource
        running = engine.describe(job(png((3, 1, 1)), max_tokens=100_000))
        await anext(running)
        queued = asyncio.ensure_future(collect(engine, job(png((4, 1, 1)))))
        await wait_until_async(lambda: batcher.waiting >= 1, 20, "the second request queued")
        with pytest.raises(OverloadedError, match="max_queue=1"):
            await collect(engine, job(png((5, 1, 1))))
        assert (
            engine.metrics.registry.get_sample_value(
                "proxyvision_requests_total", {"model": "v", "status": "overloaded"}
            )
            == 1
        )

        engine.lifecycle.begin_drain()
        engine.abort_all("shutting down")  # what the server does when the grace period is over
        with pytest.raises(ShuttingDownError):
            async for _ in running:  # deltas already produced come first, then the error
                pass
        with pytest.raises(ShuttingDownError):
            await queued
    finally:
        await engine.stop()


def test_saved_processor_pieces_round_trip(tiny_models, tmp_path):
    """What replaces AutoProcessor (tokenizer + chat template + image processor) saves and reloads
    to the same inputs, so a checkpoint re-saved by us loads like the original."""
    original = load_vision_model(str(tiny_models["vision"]), dtype="f32", device="cpu")
    copy = tmp_path / "resaved"
    shutil.copytree(tiny_models["vision"], copy)
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json", "chat_template.jinja"):
        (copy / name).unlink(missing_ok=True)
    original.tokenizer.save_pretrained(copy)
    original.family.image_processor.save_pretrained(copy)
    reloaded = load_vision_model(str(copy), dtype="f32", device="cpu")
    from PIL import Image

    image = Image.new("RGB", (123, 77), (10, 200, 30))
    a, b = original.family.encode(image, 256), reloaded.family.encode(image, 256)
    assert torch.equal(a.tensors["pixel_values"], b.tensors["pixel_values"])
    assert torch.equal(a.tensors["image_grid_thw"], b.tensors["image_grid_thw"]) and a.tokens == b.tokens
    prompt_a = render_prompt(original.tokenizer, original.family.placeholder, "Describe")
    prompt_b = render_prompt(reloaded.tokenizer, reloaded.family.placeholder, "Describe")
    assert prompt_a == prompt_b and prompt_a.count("<|image_pad|>") == 1
    assert original.tokenizer(prompt_a)["input_ids"] == reloaded.tokenizer(prompt_b)["input_ids"]


@pytest.mark.asyncio(loop_scope="function")
async def test_an_idle_unloaded_caption_model_still_says_what_it_stands_in_for(tiny_models):
    engine = CaptionEngine(caption_entry(tiny_models), device="cpu", idle_unload_secs=0)
    await engine.start()
    try:
        loaded = engine.info().stand_in_for
        assert loaded == "Qwen/Qwen2-VL-7B-Instruct"
        assert await engine.lifecycle.unload_idle()
        assert engine.info().state is ModelState.UNLOADED and engine.info().stand_in_for == loaded
    finally:
        await engine.stop()
