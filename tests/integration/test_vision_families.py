"""The same caption tests for every family's stand-in, through the real CaptionEngine and a real gRPC vision
engine on port 0: Qwen2-VL, Qwen2.5-VL, Qwen3-VL, SmolVLM (Idefics3) and Gemma 3.

Each family is loaded the way an operator points the proxy at it: the entry's own `local_path` is the Qwen2-VL
stand-in and `capabilities.vision_proxy.local_path` names the family's, so every test also shows that the
override is what gets loaded.
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest

from services.common.captions import CaptionDelta, CaptionDone
from services.common.config import DEFAULT_VISION_PROMPT
from services.common.engine_server import EngineOptions
from services.common.errors import InvalidRequestError
from services.common.generation import Detail, ImageBytes
from services.common.multimodal.detail import LOW_DETAIL_TOKENS
from services.common.pb.proxyvision.v1 import common_pb2, vision_engine_pb2 as pb, vision_engine_pb2_grpc
from services.model_builder import build_all
from services.model_builder.build import CHECKPOINTS
from services.vision_engine.captioner.engine import CaptionEngine
from services.vision_engine.captioner.types import DescribeJob
from services.vision_engine.server import VisionEngineServer
from tests.support.images import png
from tests.support.models_yaml import entry_for
from tests.support.processes import REPO_ROOT

# builder kind -> the adapter that must serve it
FAMILIES = {
    "vision": "qwen2_vl",
    "qwen25_vl": "qwen2_5_vl",
    "qwen3_vl": "qwen3_vl",
    "smolvlm": "idefics3",
    "gemma3": "gemma3",
}
MAX_IMAGE_TOKENS = 1024
BIG = (900, 600)


@pytest.fixture(scope="session")
def family_models(tiny_models) -> dict[str, Path]:
    """Every captioning family's stand-in (a no-op where `make models` built them)."""
    return {**tiny_models, **build_all(REPO_ROOT / "models" / "tiny", only=set(FAMILIES) - {"vision"})}


@pytest.fixture(params=sorted(FAMILIES))
def kind(request) -> str:
    return request.param


PARAMS = {"mem": 512, "dtype": "f32", "max_num_seqs": 4}


def proxy_entry(models: dict[str, Path], kind: str, **settings):
    """The proxy entry: its own source the Qwen2-VL stand-in, vision_proxy.local_path the family's."""
    vision_proxy = {"local_path": str(models[kind]), "max_image_tokens": MAX_IMAGE_TOKENS, **settings}
    capabilities = {"vision_mode": "proxy", "vision_proxy": vision_proxy}
    return entry_for(models["vision"], PARAMS, vision=True, capabilities=capabilities)


def job(*images: bytes, detail: str = "low", max_tokens: int = 6, user_prompt: str = "") -> DescribeJob:
    items = tuple(ImageBytes(data, "image/png", Detail(detail)) for data in images)
    return DescribeJob("r", items, max_tokens=max_tokens, user_prompt=user_prompt)


async def collect(engine: CaptionEngine, j: DescribeJob) -> list:
    return [event async for event in engine.describe(j)]


def done(events: list) -> CaptionDone:
    assert isinstance(events[-1], CaptionDone)
    return events[-1]


async def started(models, kind, **settings) -> CaptionEngine:
    engine = CaptionEngine(
        proxy_entry(models, kind, **settings),
        device="cpu",
        idle_unload_secs=0,
        cache_entries=settings.get("cache_max_entries", 1024),
    )
    await engine.start()
    return engine


@pytest.mark.asyncio(loop_scope="function")
async def test_the_vision_proxy_checkpoint_is_loaded_and_the_override_logged(family_models, kind, caplog):
    caplog.set_level(logging.INFO, logger="services.vision_engine.captioner.engine")
    engine = await started(family_models, kind)
    try:
        loaded = engine.lifecycle.resource.loaded
        assert loaded.family.name == FAMILIES[kind]
        assert engine.info().stand_in_for == CHECKPOINTS[kind].stands_in_for
        override = [r.getMessage() for r in caplog.records if "from vision_proxy" in r.getMessage()]
        if kind == "vision":  # the override names the entry's own checkpoint: nothing to say
            assert override == []
        else:
            assert override == [
                f"Vision model v: captioning with {family_models[kind]} from vision_proxy "
                f"(not the entry's own {family_models['vision']})"
            ]
    finally:
        await engine.stop()


@pytest.mark.asyncio(loop_scope="function")
async def test_captions_stream_and_finish(family_models, kind):
    engine = await started(family_models, kind)
    try:
        events = await collect(engine, job(png((200, 40, 40), (120, 90)), max_tokens=6))
        last = done(events)
        deltas = [e.text for e in events if isinstance(e, CaptionDelta)]
        assert deltas and "".join(deltas) == last.caption  # streamed, then the whole caption once more
        assert last.finish_reason in ("length", "stop") and 0 < last.caption_tokens <= 6
        assert last.image_tokens > 0 and not last.cached
    finally:
        await engine.stop()


@pytest.mark.asyncio(loop_scope="function")
async def test_greedy_captions_are_deterministic(family_models, kind):
    engine = await started(family_models, kind, cache_max_entries=0)  # no cache: both go through the model
    try:
        image = png((30, 90, 200), (100, 70))
        first, second = done(await collect(engine, job(image))), done(await collect(engine, job(image)))
        assert engine.lifecycle.resource.captioned == 2
        assert (first.caption, first.caption_tokens, first.image_tokens) == (
            second.caption,
            second.caption_tokens,
            second.image_tokens,
        )
    finally:
        await engine.stop()


@pytest.mark.asyncio(loop_scope="function")
async def test_a_caption_in_a_batch_equals_the_caption_alone(family_models, kind):
    """Different sizes make different prompt lengths (left padding) and, for tiling families, tile counts."""
    engine = await started(family_models, kind, cache_max_entries=0)
    try:
        images = [png((250, 20, 20), (64, 48)), png((20, 250, 20), (300, 120)), png((20, 20, 250), (90, 260))]
        alone = [done(await collect(engine, job(image, detail="auto"))).caption for image in images]
        batcher = engine.lifecycle.resource
        together = await collect(engine, job(*images, detail="auto"))
        assert list(batcher.batch_sizes)[-1] == 3  # the three went through one generate()
        by_index = {e.image_index: e.caption for e in together if isinstance(e, CaptionDone)}
        assert [by_index[i] for i in range(3)] == alone
    finally:
        await engine.stop()


@pytest.mark.asyncio(loop_scope="function")
async def test_detail_budgets_are_respected(family_models, kind):
    engine = await started(family_models, kind)
    try:
        image = png((120, 120, 30), BIG)
        low, auto, high = [
            done(await collect(engine, job(image, detail=d))).image_tokens for d in ("low", "auto", "high")
        ]
        family = engine.lifecycle.resource.loaded.family
        if family.natural_tokens(64, 64) == family.natural_tokens(*BIG):  # a fixed cost per image (Gemma 3)
            assert low == auto == high == family.natural_tokens(*BIG)
        else:
            assert low <= LOW_DETAIL_TOKENS < high <= MAX_IMAGE_TOKENS and low <= auto <= high
    finally:
        await engine.stop()


@pytest.mark.asyncio(loop_scope="function")
async def test_a_repeat_is_a_cache_hit_and_another_instruction_or_detail_is_not(family_models, kind):
    engine = await started(family_models, kind)
    try:
        image = png((1, 2, 250), (80, 60))
        first = done(await collect(engine, job(image)))
        again = done(await collect(engine, job(image)))
        batcher = engine.lifecycle.resource
        assert again.cached and again.caption == first.caption and batcher.captioned == 1
        assert not done(await collect(engine, job(image, user_prompt="What breed is it?"))).cached
        assert not done(await collect(engine, job(image, detail="high"))).cached
        assert batcher.captioned == 3
    finally:
        await engine.stop()


@pytest.mark.asyncio(loop_scope="function")
async def test_a_bad_image_is_refused_before_any_model_work(family_models, kind):
    engine = await started(family_models, kind)
    try:
        with pytest.raises(InvalidRequestError, match="Invalid image") as info:
            await collect(engine, job(png(), b"definitely not an image"))
        assert info.value.param == "images[1]"
        assert engine.lifecycle.resource.captioned == 0
    finally:
        await engine.stop()


def test_every_familys_template_places_the_image_and_the_default_instruction(family_models, kind):
    """The default instruction (and a `{user_prompt}` template) reach the model's prompt, after the one image."""
    from services.vision_engine.captioner.loader import load_vision_model
    from services.vision_engine.captioner.prompts import build_instruction, render_prompt

    loaded = load_vision_model(str(family_models[kind]), dtype="f32", device="cpu")
    placeholder = loaded.family.placeholder
    prompt = render_prompt(loaded.tokenizer, placeholder, build_instruction(DEFAULT_VISION_PROMPT, ""))
    assert prompt.count(placeholder) == 1 and prompt.index(placeholder) < prompt.index(DEFAULT_VISION_PROMPT)
    template = "Caption this for a user who asked: {user_prompt}. Transcribe text first."
    placed = render_prompt(loaded.tokenizer, placeholder, build_instruction(template, " Is the door open? "))
    assert "Caption this for a user who asked: Is the door open?. Transcribe text first." in placed
    assert placed.endswith(render_prompt(loaded.tokenizer, placeholder, "x").rsplit("x", 1)[1])  # generation prompt


@pytest.mark.asyncio(loop_scope="function")
async def test_a_grpc_vision_engine_serves_the_family(family_models, kind):
    server = VisionEngineServer(
        proxy_entry(family_models, kind), EngineOptions(port=0, device="cpu"), idle_unload_secs=0
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = vision_engine_pb2_grpc.VisionEngineStub(channel)
            request = pb.DescribeRequest(
                max_tokens=5,
                images=[
                    common_pb2.ImageInput(
                        data=png((9, 99, 199), (160, 100)), mime_type="image/png", detail=common_pb2.DETAIL_LOW
                    ),
                    common_pb2.ImageInput(
                        data=png((199, 99, 9), (100, 160)), mime_type="image/png", detail=common_pb2.DETAIL_HIGH
                    ),
                ],
            )
            responses = [r async for r in stub.Describe(request)]
            finished = {r.done.image_index: r.done for r in responses if r.HasField("done")}
            assert sorted(finished) == [0, 1]
            for index, caption in finished.items():
                text = "".join(r.delta.text for r in responses if r.HasField("delta") and r.delta.image_index == index)
                assert caption.caption == text and 0 < caption.caption_tokens <= 5 and caption.image_tokens > 0
            repeat = [r async for r in stub.Describe(request)]
            assert all(r.done.cached for r in repeat if r.HasField("done"))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                bad = pb.DescribeRequest(images=[common_pb2.ImageInput(data=b"\x89PNG\r\n\x1a\nbroken")])
                _ = [r async for r in stub.Describe(bad)]
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "Invalid image" in info.value.details()
    finally:
        await server.stop(grace=1)


def test_the_cache_key_names_the_checkpoint_not_only_the_entry(family_models):
    """Two entries called "v" that caption with different checkpoints (or revisions) never share captions."""
    item = ImageBytes(png(), "image/png", Detail.AUTO)
    keys = {
        CaptionEngine(entry, device="cpu", idle_unload_secs=0).cache_key(item, DEFAULT_VISION_PROMPT, 64)
        for entry in (
            proxy_entry(family_models, "smolvlm"),
            proxy_entry(family_models, "gemma3"),
            proxy_entry(family_models, "gemma3").model_copy(update={"revision": "abc123"}),
        )
    }
    assert len(keys) == 3 and {key.model for key in keys} == {
        str(family_models["smolvlm"]),
        str(family_models["gemma3"]),
    }


@pytest.mark.asyncio(loop_scope="function")
async def test_the_default_instruction_reaches_the_model(family_models):
    """With no prompt_template configured, what the batcher renders for the model is the default instruction
    (visible text verbatim first), followed by the user's text as context."""
    engine = await started(family_models, "smolvlm")
    try:
        runtime = engine.lifecycle.resource
        submitted = []
        submit = runtime.submit
        runtime.submit = lambda j: (submitted.append(j), submit(j))[1]  # record, then queue as usual
        done(await collect(engine, job(png((5, 5, 5)), user_prompt="What does the sign say?")))
        (caption_job,) = submitted
        assert caption_job.instruction.startswith(DEFAULT_VISION_PROMPT)
        assert caption_job.instruction.endswith("What does the sign say?")
        assert "transcribe any text visible" in DEFAULT_VISION_PROMPT
    finally:
        await engine.stop()
