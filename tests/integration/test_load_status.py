"""GetModelInfo over real gRPC says what a loading model is doing, and why a load failed.

The load is the real one (the tiny Ministral-3 checkpoint); the test holds it at two points by wrapping
the loader and the batcher with gates, so each status is observed for sure, not caught by timing luck."""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest

from services.common.engine_server import EngineOptions
from services.common.pb.proxyvision.v1 import common_pb2, text_engine_pb2_grpc
from services.text_engine.engine import engine as engine_module
from services.text_engine.server import TextEngineServer
from tests.support.models_yaml import entry_for

PARAMS = {"mem": 8, "dtype": "f32", "max_num_seqs": 2}


def gated(fn, reached: threading.Event, go: threading.Event):
    def wrapper(*args, **kwargs):
        reached.set()
        assert go.wait(30), "the test never opened the gate"
        return fn(*args, **kwargs)

    return wrapper


async def info(stub) -> tuple[str, str, str]:
    reply = await stub.GetModelInfo(common_pb2.GetModelInfoRequest(), timeout=10)
    return common_pb2.ModelState.Name(reply.state), reply.status, reply.error


@pytest.mark.asyncio(loop_scope="function")
async def test_get_model_info_reports_each_phase_of_a_load(tiny_models, monkeypatch):
    weights, batcher = (threading.Event(), threading.Event()), (threading.Event(), threading.Event())
    monkeypatch.setattr(engine_module, "load_model", gated(engine_module.load_model, *weights))
    monkeypatch.setattr(engine_module, "new_token_source", gated(engine_module.new_token_source, *batcher))
    server = TextEngineServer(entry_for(tiny_models["text"], PARAMS), EngineOptions(device="cpu"), idle_unload_secs=0)
    starting = asyncio.create_task(server.start())
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = text_engine_pb2_grpc.TextEngineStub(channel)
            await asyncio.to_thread(weights[0].wait, 30)
            assert await info(stub) == ("MODEL_STATE_LOADING", f"loading weights from {tiny_models['text']}", "")
            weights[1].set()
            await asyncio.to_thread(batcher[0].wait, 30)
            assert await info(stub) == ("MODEL_STATE_LOADING", "building KV cache", "")
            batcher[1].set()
            await starting
            assert await info(stub) == ("MODEL_STATE_READY", "", "")
    finally:
        weights[1].set(), batcher[1].set()
        await asyncio.gather(starting, return_exceptions=True)
        await server.stop(grace=0)


@pytest.mark.asyncio(loop_scope="function")
async def test_get_model_info_says_why_a_load_failed(tiny_models, tmp_path):
    (tmp_path / "config.json").write_text((tiny_models["text"] / "config.json").read_text())
    server = TextEngineServer(entry_for(tmp_path, PARAMS), EngineOptions(device="cpu"), idle_unload_secs=0)
    await server.start()  # a failed load does not raise: the engine stays up to say why
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            state, status, error = await info(text_engine_pb2_grpc.TextEngineStub(channel))
        assert state == "MODEL_STATE_FAILED" and error.startswith(f"cannot load config/tokenizer from '{tmp_path}'")
        assert status == f"failed: {error}" and "\n" not in error
    finally:
        await server.stop(grace=0)
