"""CountTokens over real gRPC: text engines on port 0 in this process, serving the tiny stand-ins. The count is
Generate's `Accepted.prompt_tokens` for the same request (chat with tools, raw prompt), without admission, and
it never loads an idle-unloaded model."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager

import grpc
import pytest
import pytest_asyncio

from services.common.config import parse_models_config
from services.common.engine_server import EngineOptions
from services.common.pb.proxyvision.v1 import common_pb2, text_engine_pb2 as pb, text_engine_pb2_grpc
from services.model_builder import build_all
from services.text_engine.server import TextEngineServer
from tests.support.images import png
from tests.support.models_yaml import ModelsYaml
from tests.support.processes import REPO_ROOT, wait_until_async

PARAMS = {"mem": 16, "dtype": "f32", "max_num_seqs": 4, "prefill_chunk_size": 256}
WEATHER = pb.Tool(
    name="get_weather",
    description="The weather in a city",
    parameters=json.dumps({"type": "object", "properties": {"city": {"type": "string"}}}),
)


@asynccontextmanager
async def serve(name: str, path, *, idle_unload_secs: int = 300, native: bool = False, **fields):
    config = (
        ModelsYaml().native(name, local_path=path, params=PARAMS)
        if native
        else ModelsYaml().text(name, local_path=path, params=PARAMS, **fields)
    )
    entry = parse_models_config(config.to_dict()).models[0]
    server = TextEngineServer(entry, EngineOptions(device="cpu"), idle_unload_secs=idle_unload_secs)
    await server.start()
    channel = grpc.aio.insecure_channel(server.address)
    try:
        yield text_engine_pb2_grpc.TextEngineStub(channel)
    finally:
        await channel.close()
        await server.stop(grace=0)


@pytest_asyncio.fixture(scope="module")
async def ministral(tiny_models):
    async with serve("ministral-3-tiny", tiny_models["text"]) as stub:
        yield stub


@pytest_asyncio.fixture(scope="module")
async def qwen3():
    async with serve("qwen3-tiny", build_all(REPO_ROOT / "models" / "tiny", only={"qwen3"})["qwen3"]) as stub:
        yield stub


def chat_with_tools(model: str) -> pb.GenerateRequest:
    messages = [
        pb.ChatMessage(role="system", content="You are terse."),
        pb.ChatMessage(role="user", content="Weather in Paris?"),
        pb.ChatMessage(
            role="assistant",
            tool_calls=[pb.ToolCall(id="call_abcdefghi", name="get_weather", arguments='{"city": "Paris"}')],
        ),
        pb.ChatMessage(role="tool", content="sunny", tool_call_id="call_abcdefghi"),
    ]
    return pb.GenerateRequest(model=model, messages=messages, tools=[WEATHER], sampling=pb.SamplingParams(max_tokens=1))


async def accepted_tokens(stub, request: pb.GenerateRequest) -> int:
    responses = [r async for r in stub.Generate(request, timeout=60)]
    assert responses[0].HasField("accepted") and responses[-1].HasField("finished")
    assert responses[-1].finished.usage.prompt_tokens == responses[0].accepted.prompt_tokens
    return responses[0].accepted.prompt_tokens


async def count(stub, request: pb.GenerateRequest) -> int:
    return (await stub.CountTokens(request, timeout=30)).prompt_tokens


async def test_a_chat_with_tools_counts_what_generate_accepts(ministral, qwen3):
    """Mistral's tool format (ministral) and Hermes' (qwen3), each through its own chat template."""
    for stub, name in ((ministral, "ministral-3-tiny"), (qwen3, "qwen3-tiny")):
        chat = chat_with_tools(name)
        tokens = await count(stub, chat)
        assert tokens == await accepted_tokens(stub, chat), name
        without_tools = pb.GenerateRequest(model=name, messages=chat.messages, sampling=chat.sampling)
        assert tokens > await count(stub, without_tools), name  # the template renders the tools: they count


async def test_a_raw_prompt_counts_what_generate_accepts(qwen3):
    for prompt in (
        pb.RawPrompt(text="def add(a, b):"),
        pb.RawPrompt(token_ids=[10, 20, 30]),
        pb.RawPrompt(text="def add(a, b):\n    return", suffix="\nprint(add(1, 2))"),
    ):
        request = pb.GenerateRequest(model="qwen3-tiny", prompt=prompt, sampling=pb.SamplingParams(max_tokens=1))
        assert await count(qwen3, request) == await accepted_tokens(qwen3, request) > 0


async def test_a_natively_seeing_model_counts_the_image_tokens_generate_accepts(tiny_models):
    """Qwen2-VL served with `vision_mode: native`: each image's tokens (by its size and detail) are in the count."""
    async with serve("qwen2-vl", tiny_models["vision"], native=True) as stub:

        def request(*images: bytes, detail=common_pb2.DETAIL_AUTO) -> pb.GenerateRequest:
            parts = [pb.ContentPart(text="What is in this picture?")]
            parts += [
                pb.ContentPart(image=common_pb2.ImageInput(data=d, mime_type="image/png", detail=detail))
                for d in images
            ]
            return pb.GenerateRequest(
                model="qwen2-vl",
                messages=[pb.ChatMessage(role="user", parts=parts)],
                sampling=pb.SamplingParams(max_tokens=1),
            )

        text_only = await count(stub, request())
        for req in (request(png(size=(96, 64))), request(png(size=(160, 120)), png(), detail=common_pb2.DETAIL_LOW)):
            tokens = await count(stub, req)
            assert tokens == await accepted_tokens(stub, req) > text_only + 4


async def test_errors_are_generates(ministral):
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await count(ministral, pb.GenerateRequest(model="no-such-model", prompt=pb.RawPrompt(text="hi")))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    for bad in (
        pb.GenerateRequest(prompt=pb.RawPrompt(text="hi"), tools=[WEATHER]),
        pb.GenerateRequest(prompt=pb.RawPrompt(token_ids=[99_999])),
        pb.GenerateRequest(prompt=pb.RawPrompt(text="hi", suffix="there")),
        pb.GenerateRequest(),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await count(ministral, bad)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad


async def test_counts_without_loading_an_unloaded_model_and_without_admission(tiny_models):
    """An engine that unloads after 1 s idle and takes 64-token contexts: CountTokens still answers (the last
    load's tokenizer), leaves the model unloaded, and counts a prompt too long for Generate."""
    async with serve("short", tiny_models["text"], idle_unload_secs=1, max_model_len=64) as stub:
        request = pb.GenerateRequest(
            model="short", prompt=pb.RawPrompt(text="hello there"), sampling=pb.SamplingParams(max_tokens=1)
        )
        loaded_count = await count(stub, request)
        assert loaded_count == await accepted_tokens(stub, request)

        async def unloaded() -> bool:
            info = await stub.GetModelInfo(common_pb2.GetModelInfoRequest(), timeout=10)
            return info.state == common_pb2.MODEL_STATE_UNLOADED

        await wait_until_async(unloaded, 30, "the model unloaded", interval=0.1)
        assert await count(stub, request) == loaded_count
        assert await count(stub, chat_with_tools("short")) > 0
        info = await stub.GetModelInfo(common_pb2.GetModelInfoRequest(), timeout=10)
        assert info.state == common_pb2.MODEL_STATE_UNLOADED
        long = pb.GenerateRequest(
            model="short",
            prompt=pb.RawPrompt(token_ids=list(range(100, 200))),
            sampling=pb.SamplingParams(max_tokens=1),
        )
        assert await count(stub, long) == 100
        with pytest.raises(grpc.aio.AioRpcError) as too_long:
            await accepted_tokens(stub, long)
        assert too_long.value.code() == grpc.StatusCode.INVALID_ARGUMENT
