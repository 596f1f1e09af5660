"""A real text engine process on a free port, called over gRPC by Python and by the real grpcurl."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest

from services.common.errors import CODE_METADATA_KEY
from services.common.pb.proxyvision.v1 import common_pb2, text_engine_pb2 as pb, text_engine_pb2_grpc
from tests.support.models_yaml import TEXT_MODEL, tiny
from tests.support.processes import wait_until
from tests.support.stack import start_text_engine

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")


@pytest.fixture(scope="module")
def engine(tiny_models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("text_engine")
    config = tiny(tiny_models, text_params={"max_num_seqs": 4}).write(tmp / "models.yaml")
    service = start_text_engine(config, tmp)
    try:
        yield service
    finally:
        assert service.stop() == 0, service.log_text()[-3000:]


@pytest.fixture()
def stub(engine):
    with grpc.insecure_channel(engine.address) as channel:
        yield text_engine_pb2_grpc.TextEngineStub(channel)


def chat(text="Hello, how are you?", **sampling):
    return pb.GenerateRequest(
        model=TEXT_MODEL, messages=[pb.ChatMessage(role="user", content=text)], sampling=pb.SamplingParams(**sampling)
    )


def collect(stub, request, metadata=()):
    responses = list(stub.Generate(request, metadata=metadata, timeout=60))
    text = "".join(r.delta.text for r in responses if r.HasField("delta"))
    # accepted first, with the prompt's size; finished last and only there
    assert responses[0].HasField("accepted") and not any(r.HasField("accepted") for r in responses[1:])
    assert responses[-1].HasField("finished") and not any(r.HasField("finished") for r in responses[:-1])
    assert responses[0].accepted.prompt_tokens == responses[-1].finished.usage.prompt_tokens > 0
    return text, responses[-1].finished


def grpcurl(*args, data=None):
    cmd = [GRPCURL, "-plaintext", "-max-time", "60"]
    if data is not None:
        cmd += ["-d", json.dumps(data)]
    result = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_engine_logs_the_brief_line(engine):
    assert f"Building InferenceEngine for model {TEXT_MODEL}" in engine.log_text()


def test_grpcurl_lists_describes_and_checks_health(engine):
    services = grpcurl(engine.address, "list").split()
    assert {"proxyvision.v1.TextEngine", "grpc.health.v1.Health"} <= set(services)
    described = grpcurl(engine.address, "describe", "proxyvision.v1.TextEngine")
    assert (
        "rpc Generate ( .proxyvision.v1.GenerateRequest ) returns ( stream .proxyvision.v1.GenerateResponse )"
        in described
    )
    assert json.loads(grpcurl(engine.address, "grpc.health.v1.Health/Check", data={}))["status"] == "SERVING"


def test_grpcurl_streams_generate(engine):
    out = grpcurl(
        engine.address,
        "proxyvision.v1.TextEngine/Generate",
        data={
            "messages": [{"role": "user", "content": "Hello, how are you?"}],
            "sampling": {"maxTokens": 5, "temperature": 0},
        },
    )
    messages = [json.loads(chunk) for chunk in out.replace("}\n{", "}\x00{").split("\x00")]
    finished = messages[-1]["finished"]
    assert finished["finish_reason"] == "FINISH_REASON_LENGTH"
    assert finished["usage"]["completion_tokens"] == 5 and finished["usage"]["prompt_tokens"] > 0


def test_max_tokens_gives_length_and_usage(stub):
    _, finished = collect(stub, chat(max_tokens=7, temperature=0))
    assert finished.finish_reason == pb.FINISH_REASON_LENGTH
    assert finished.usage.completion_tokens == 7


def test_seed_makes_sampling_reproducible(stub):
    first, _ = collect(stub, chat(max_tokens=24, temperature=1.0, seed=1234))
    second, _ = collect(stub, chat(max_tokens=24, temperature=1.0, seed=1234))
    other, _ = collect(stub, chat(max_tokens=24, temperature=1.0, seed=4321))
    assert first == second
    assert first != other


def test_stop_string_cuts_output_and_is_not_included(stub):
    full, _ = collect(stub, chat(max_tokens=40, temperature=0.8, seed=99))
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    assert stop.strip(), f"need a visible stop string from {full!r}"
    text, finished = collect(stub, chat(max_tokens=40, temperature=0.8, seed=99, stop=[stop]))
    assert finished.finish_reason == pb.FINISH_REASON_STOP
    assert text == full[: full.index(stop)]


def test_context_too_long_is_invalid_argument_with_code(stub):
    with pytest.raises(grpc.RpcError) as info:
        collect(stub, chat(max_tokens=10_000_000))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "maximum context length" in info.value.details()
    assert dict(info.value.trailing_metadata())[CODE_METADATA_KEY] == "context_length_exceeded"


def test_unknown_model_is_not_found(stub):
    request = chat()
    request.model = "no-such-model"
    with pytest.raises(grpc.RpcError) as info:
        collect(stub, request)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_request_id_metadata_reaches_the_engine_log(engine, stub):
    collect(stub, chat(max_tokens=2), metadata=(("x-request-id", "req-grpc-abc123"),))
    engine.wait_for_log("[req-grpc-abc123]")


def test_cancelled_stream_frees_its_slot(engine, stub):
    """Cancel a long stream mid-way: the engine's running count returns to zero."""
    call = stub.Generate(chat(max_tokens=2000, temperature=0), timeout=60)  # greedy runs to max_tokens
    assert next(call).HasField("accepted")

    def running() -> int:
        return stub.GetModelInfo(common_pb2.GetModelInfoRequest()).running

    wait_until(lambda: running() == 1, 10, "the accepted request given its slot", interval=0.01)
    call.cancel()
    wait_until(lambda: running() == 0, 10, "the slot freed after the cancel", interval=0.05)


def test_more_streams_than_slots_wait_fifo_and_all_complete(stub):
    """max_num_seqs is 4 here: 10 concurrent streams all finish, each with its own usage."""
    results: list = [None] * 10

    def worker(i):
        results[i] = collect(stub, chat(f"request {i}", max_tokens=12, temperature=0))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(r is not None and r[1].usage.completion_tokens == 12 for r in results)


def test_model_info(stub):
    info = stub.GetModelInfo(common_pb2.GetModelInfoRequest())
    assert info.name == TEXT_MODEL and info.state == common_pb2.MODEL_STATE_READY
    assert info.stand_in_for == "mistralai/Ministral-3-3B-Reasoning-2512"
    assert info.max_num_seqs == 4 and info.memory_budget_mib == 16 and info.kv_cache_tokens > 0
