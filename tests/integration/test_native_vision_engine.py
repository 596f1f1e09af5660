"""`vision_mode: native` over real gRPC: a text engine on port 0 serving each native stand-in answers images itself.

The stand-ins are the tiny random Qwen2-VL (for Qwen/Qwen2-VL-7B-Instruct) and Ministral-3 (Mistral3 with a
Pixtral tower) checkpoints, loaded whole (vision tower included) by the real TextEngineServer in this
process, so the test can also hold the image batcher still (its model's forward lock) to see 4 requests
share one `generate()` batch for sure, not by timing luck.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio
from PIL import Image

from services.common.config import parse_models_config
from services.common.engine_server import EngineOptions
from services.common.errors import PARAM_METADATA_KEY
from services.common.pb.proxyvision.v1 import common_pb2, text_engine_pb2 as pb, text_engine_pb2_grpc
from services.model_builder import build_all
from services.model_builder.scripted import SCRIPTED_ANSWER, SCRIPTED_REASONING
from services.text_engine.engine.native import forward_lock
from services.text_engine.server import TextEngineServer
from tests.support.images import encode, png
from tests.support.models_yaml import ModelsYaml
from tests.support.processes import REPO_ROOT, wait_until_async

NATIVE_PARAMS = {"mem": 16, "dtype": "f32", "max_num_seqs": 8, "prefill_chunk_size": 512}
STAND_INS = {"qwen2-vl": "vision", "ministral-3": "text"}  # model name -> tiny_models kind
RED = png((220, 30, 30), (96, 64))
NOISE = encode(Image.effect_noise((112, 84), 80).convert("RGB"))


def native_entry(name: str, path, *, params: dict | None = None):
    config = ModelsYaml().native(name, local_path=path, params={**NATIVE_PARAMS, **(params or {})})
    return parse_models_config(config.to_dict()).models[0]


def text_entry(name: str, path):
    return parse_models_config(ModelsYaml().text(name, local_path=path, params=NATIVE_PARAMS).to_dict()).models[0]


@dataclass
class Engine:
    name: str
    server: TextEngineServer
    stub: text_engine_pb2_grpc.TextEngineStub

    @property
    def runtime(self):
        return self.server.engine.lifecycle.resource


async def serve(entry, idle_unload_secs: int = 300):
    server = TextEngineServer(entry, EngineOptions(device="cpu"), idle_unload_secs=idle_unload_secs)
    await server.start()
    channel = grpc.aio.insecure_channel(server.address)
    return server, channel


@pytest_asyncio.fixture(scope="module", loop_scope="session", params=sorted(STAND_INS))
async def native(request, tiny_models):
    name = request.param
    server, channel = await serve(native_entry(name, tiny_models[STAND_INS[name]]))
    try:
        yield Engine(name, server, text_engine_pb2_grpc.TextEngineStub(channel))
    finally:
        await channel.close()
        await server.stop(grace=0)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def text_only(tiny_models):
    """The Ministral-3 stand-in served as a plain text model (vision_mode disabled, text weights only)."""
    server, channel = await serve(text_entry("ministral-3-text", tiny_models["text"]))
    try:
        yield Engine("ministral-3-text", server, text_engine_pb2_grpc.TextEngineStub(channel))
    finally:
        await channel.close()
        await server.stop(grace=0)


def image_request(
    model: str,
    *images: bytes,
    text: str = "What is in this picture?",
    max_tokens: int = 8,
    detail=common_pb2.DETAIL_AUTO,
    **sampling,
) -> pb.GenerateRequest:
    parts = [pb.ContentPart(text=text)]
    parts += [pb.ContentPart(image=common_pb2.ImageInput(data=d, mime_type="image/png", detail=detail)) for d in images]
    return pb.GenerateRequest(
        model=model,
        messages=[pb.ChatMessage(role="user", parts=parts)],
        sampling=pb.SamplingParams(max_tokens=max_tokens, temperature=0, **sampling),
    )


def text_request(model: str, text: str = "Hello, how are you?", max_tokens: int = 8) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        model=model,
        messages=[pb.ChatMessage(role="user", content=text)],
        sampling=pb.SamplingParams(max_tokens=max_tokens, temperature=0),
    )


@dataclass
class Answer:
    text: str  # answer and reasoning text, in order
    finished: pb.Finished
    prompt_tokens: int
    deltas: int
    logprobs: list


async def generate(stub, request) -> Answer:
    responses = [r async for r in stub.Generate(request, timeout=60)]
    assert responses[0].HasField("accepted") and responses[-1].HasField("finished")
    text = "".join(r.delta.text if r.HasField("delta") else r.reasoning.text for r in responses[1:-1])
    logprobs = [lp for r in responses if r.HasField("delta") for lp in r.delta.logprobs]
    deltas = sum(r.HasField("delta") or r.HasField("reasoning") for r in responses)
    return Answer(text, responses[-1].finished, responses[0].accepted.prompt_tokens, deltas, logprobs)


async def refused(stub, request) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await generate(stub, request)
    return caught.value


def trailer(error: grpc.aio.AioRpcError, key: str) -> str | None:
    return dict(error.trailing_metadata() or ()).get(key)


async def test_model_info_says_native_and_splits_mem(native, text_only):
    info = await native.stub.GetModelInfo(common_pb2.GetModelInfoRequest(), timeout=10)
    assert info.vision_mode == "native" and info.state == common_pb2.MODEL_STATE_READY
    assert info.memory_budget_bytes == NATIVE_PARAMS["mem"] * 1024 * 1024
    assert info.memory_used_bytes + info.memory_free_bytes == info.memory_budget_bytes
    batcher = native.runtime.batcher
    # Half of mem is the paged KV cache, half the image batches.
    kv_bytes = info.kv_cache_tokens * batcher.budget.bytes_per_token
    image_bytes = batcher.image_capacity_tokens * batcher.image_bytes_per_token
    assert kv_bytes <= info.memory_budget_bytes // 2 and image_bytes <= info.memory_budget_bytes // 2
    assert kv_bytes + image_bytes > 0.99 * info.memory_budget_bytes
    plain = await text_only.stub.GetModelInfo(common_pb2.GetModelInfoRequest(), timeout=10)
    assert plain.vision_mode == ""


async def test_streams_an_answer_about_an_image(native):
    answer = await generate(native.stub, image_request(native.name, RED, max_tokens=12, ignore_eos=True))
    text_alone = await generate(native.stub, text_request(native.name, "What is in this picture?"))
    assert answer.finished.finish_reason == pb.FINISH_REASON_LENGTH and answer.finished.usage.completion_tokens == 12
    assert answer.deltas >= 2 and answer.text  # streamed in pieces, not one blob at the end
    # The prompt counts the image's tokens (the text prompt alone is far shorter).
    assert answer.prompt_tokens == answer.finished.usage.prompt_tokens > text_alone.prompt_tokens + 4


async def test_greedy_answers_depend_on_the_image_and_only_on_it(native):
    first = await generate(native.stub, image_request(native.name, RED, top_logprobs=5))
    again = await generate(native.stub, image_request(native.name, RED, top_logprobs=5))
    other = await generate(native.stub, image_request(native.name, NOISE, top_logprobs=5))
    assert first.text == again.text and first.finished.usage == again.finished.usage
    assert [lp.logprob for lp in first.logprobs] == [lp.logprob for lp in again.logprobs]

    def distribution(answer):
        return [(a.token, round(a.logprob, 5)) for a in answer.logprobs[0].top_logprobs]

    assert first.logprobs and other.logprobs
    assert distribution(first) != distribution(other)  # the model saw the pixels: its first choice differs


async def test_four_image_requests_in_one_batch_answer_as_alone(native):
    images = [RED, NOISE, png((20, 200, 40), (64, 64)), png((30, 30, 230), (140, 56))]
    alone = [await generate(native.stub, image_request(native.name, image, max_tokens=10)) for image in images]
    batcher = native.runtime.batcher.images
    lock = forward_lock(native.runtime.loaded.model)
    blocker_sizes = len(batcher.batch_sizes)
    lock.acquire()  # the image loop stops at its next forward pass; requests queue behind it
    try:
        blocker = asyncio.create_task(generate(native.stub, image_request(native.name, RED, max_tokens=2)))
        await wait_until_async(lambda: len(batcher.batch_sizes) > blocker_sizes, message="the blocker's batch")
        tasks = [
            asyncio.create_task(generate(native.stub, image_request(native.name, image, max_tokens=10)))
            for image in images
        ]
        await wait_until_async(lambda: batcher.waiting == 4, message="4 queued image requests")
    finally:
        lock.release()
    batched = await asyncio.gather(*tasks)
    await blocker
    assert list(batcher.batch_sizes)[-1] == 4
    assert [b.text for b in batched] == [a.text for a in alone]
    assert [b.finished.usage for b in batched] == [a.finished.usage for a in alone]


async def test_stop_string_ends_an_image_answer(native):
    full = await generate(native.stub, image_request(native.name, NOISE, max_tokens=24, ignore_eos=True))
    assert len(full.text) >= 6, full.text
    stop = full.text[len(full.text) // 2 : len(full.text) // 2 + 2]
    cut = await generate(native.stub, image_request(native.name, NOISE, max_tokens=24, ignore_eos=True, stop=[stop]))
    assert cut.finished.finish_reason == pb.FINISH_REASON_STOP
    assert cut.text == full.text[: full.text.index(stop)]


async def test_cancelled_image_request_frees_its_slot(native):
    call = native.stub.Generate(image_request(native.name, NOISE, max_tokens=2000, ignore_eos=True), timeout=60)
    seen = 0
    async for response in call:
        seen += response.HasField("delta") or response.HasField("reasoning")
        if seen >= 2:
            break
    call.cancel()

    async def idle():
        info = await native.stub.GetModelInfo(common_pb2.GetModelInfoRequest(), timeout=10)
        return info.running == 0 and info.waiting == 0 and native.runtime.batcher.images.tokens_in_flight == 0

    await wait_until_async(idle, message="the cancelled request to leave its slot and batch")
    after = await generate(native.stub, image_request(native.name, RED, max_tokens=4))
    assert after.finished.finish_reason in (pb.FINISH_REASON_LENGTH, pb.FINISH_REASON_STOP)


async def test_text_only_requests_use_continuous_batching_over_the_vlm(native, text_only):
    batches = len(native.runtime.batcher.images.batch_sizes)
    answers = await asyncio.gather(
        *[generate(native.stub, text_request(native.name, f"Question {i}?")) for i in range(3)]
    )
    assert all(a.finished.usage.completion_tokens > 0 for a in answers)
    assert len(native.runtime.batcher.images.batch_sizes) == batches  # none went through the image batcher
    if native.name == "ministral-3":
        # The same checkpoint served text-only (its language model loaded alone) answers the same, token for token.
        plain = [await generate(text_only.stub, text_request(text_only.name, f"Question {i}?")) for i in range(3)]
        assert [a.text for a in answers] == [p.text for p in plain]


async def test_bad_image_is_invalid_argument_naming_its_part(native):
    error = await refused(native.stub, image_request(native.name, RED, b"not an image"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "Invalid image" in error.details()
    assert trailer(error, PARAM_METADATA_KEY) == "messages[0].parts[2].image"


async def test_image_to_a_text_only_engine_is_invalid_argument(text_only):
    error = await refused(text_only.stub, image_request(text_only.name, RED))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "model ministral-3-text does not take images (vision_mode 'disabled')" in error.details()
    assert (await generate(text_only.stub, text_request(text_only.name))).finished.usage.completion_tokens > 0


async def test_image_tokens_count_against_the_context(tiny_models):
    # A model whose context cannot hold the image: refused before it takes a slot, the image tokens counted.
    entry = native_entry("small", tiny_models["text"], params={"max_num_seqs": 2})
    entry = entry.model_copy(update={"max_model_len": 64})
    server, channel = await serve(entry)
    try:
        stub = text_engine_pb2_grpc.TextEngineStub(channel)
        error = await refused(stub, image_request("small", NOISE, detail=common_pb2.DETAIL_HIGH))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "image tokens" in error.details()
    finally:
        await channel.close()
        await server.stop(grace=0)


@pytest.mark.parametrize("name", sorted(STAND_INS))
async def test_idle_unload_frees_the_vlm_and_the_next_request_reloads_it(tiny_models, name):
    server, channel = await serve(native_entry(name, tiny_models[STAND_INS[name]]), idle_unload_secs=1)
    try:
        stub = text_engine_pb2_grpc.TextEngineStub(channel)
        first = await generate(stub, image_request(name, RED))
        vlm = weakref.ref(server.engine.lifecycle.resource.loaded.model)
        inner = server.engine.lifecycle.resource.loaded.model.model
        tower = weakref.ref(getattr(inner, "vision_tower", None) or inner.visual)  # Mistral3's name, Qwen2-VL's
        del inner

        async def unloaded():
            info = await stub.GetModelInfo(common_pb2.GetModelInfoRequest(), timeout=10)
            return info.state == common_pb2.MODEL_STATE_UNLOADED

        await wait_until_async(unloaded, message="the idle unload")
        assert server.engine.lifecycle.resource is None  # model, vision tower and both loops dropped
        assert vlm() is None and tower() is None  # and freed: nothing keeps the weights alive
        again = await generate(stub, image_request(name, RED))
        assert again.text == first.text
        assert server.engine.lifecycle.resource.loaded.family is not None
    finally:
        await channel.close()
        await server.stop(grace=0)


async def test_reasoning_is_split_from_the_answer_as_for_text():
    """The scripted Ministral-3 stand-in writes [THINK]..[/THINK]It is four. after any prompt: with an image
    too, the reasoning and the answer arrive apart, as they do for a text request."""
    path = build_all(REPO_ROOT / "models" / "tiny", only={"reasoning"})["reasoning"]
    server, channel = await serve(native_entry("reasoner", path))
    try:
        stub = text_engine_pb2_grpc.TextEngineStub(channel)
        for request in (image_request("reasoner", RED, max_tokens=64), text_request("reasoner", max_tokens=64)):
            responses = [r async for r in stub.Generate(request, timeout=60)]
            reasoning = "".join(r.reasoning.text for r in responses if r.HasField("reasoning"))
            answer = "".join(r.delta.text for r in responses if r.HasField("delta"))
            finished = responses[-1].finished
            assert (reasoning, answer) == (SCRIPTED_REASONING, SCRIPTED_ANSWER)
            assert finished.finish_reason == pb.FINISH_REASON_STOP and finished.usage.reasoning_tokens > 0
    finally:
        await channel.close()
        await server.stop(grace=0)


async def test_max_num_seqs_and_the_queue_bound_span_image_and_text_requests(tiny_models):
    """One slot (max_num_seqs 1) and one queue place (max_queue 1) for both paths: an image request holding the
    slot makes a text request wait and a third request of either kind is refused with RESOURCE_EXHAUSTED."""
    entry = native_entry("one", tiny_models["text"], params={"max_num_seqs": 1, "max_queue": 1})
    server, channel = await serve(entry)
    try:
        stub = text_engine_pb2_grpc.TextEngineStub(channel)
        runtime = server.engine.lifecycle.resource
        lock = forward_lock(runtime.loaded.model)

        async def load():
            info = await stub.GetModelInfo(common_pb2.GetModelInfoRequest(), timeout=10)
            return info.running, info.waiting

        lock.acquire()  # the image request takes the slot and stays in its first forward pass
        try:
            image = asyncio.create_task(generate(stub, image_request("one", RED, max_tokens=4)))
            await wait_until_async(lambda: len(runtime.batcher.images.batch_sizes) == 1, message="the image batch")
            text = asyncio.create_task(generate(stub, text_request("one", max_tokens=4)))

            # Admitted and queued for the slot (not still templating): the queue bound counts it from here.
            await wait_until_async(lambda: server.engine.queued == 1, message="the text request to wait for the slot")
            assert await load() == (1, 1)
            for third in (image_request("one", NOISE), text_request("one")):
                error = await refused(stub, third)
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "at capacity" in error.details()
        finally:
            lock.release()
        done = await asyncio.gather(image, text)
        assert all(a.finished.usage.completion_tokens == 4 for a in done)
        assert await load() == (0, 0)
    finally:
        await channel.close()
        await server.stop(grace=0)
