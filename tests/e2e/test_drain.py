"""SIGTERM drains: running streams finish within the grace period, new work gets 503 / UNAVAILABLE, exit 0;
streams longer than the grace end with an SSE error event, never a hang."""

from __future__ import annotations

import signal

import grpc
import httpx
import pytest

from services.common.pb.proxyvision.v1 import text_engine_pb2 as pb
from tests.support.chat_streams import errors, finish_reasons, start_streams
from tests.support.models_yaml import BENCH_MODEL as BENCH
from tests.support.processes import wait_until
from tests.support.stack import bench_stack

pytestmark = pytest.mark.e2e

STREAMS = 4
# Streams that drain gracefully run for seconds on 2 CPU cores (4 x 160 tokens of the bench model), so the
# checks made while draining (/ready, a late request) happen while they are still running.


@pytest.fixture
def stack(tmp_path, bench_model):
    stack = bench_stack(
        tmp_path, bench_model, params={"max_num_seqs": STREAMS}, env={"PROXYVISION_DRAIN_GRACE_SECS": "30"}
    )
    yield stack
    stack.stop()


def test_gateway_drains_on_sigterm(stack):
    stack.start_gateway("--drain-grace-secs", "60")
    threads, results = start_streams(stack.base_url, BENCH, STREAMS, max_tokens=160)
    wait_until(lambda: stack.engine.info().running == STREAMS, timeout=30, message="4 streams running")
    stack.gateway.proc.send_signal(signal.SIGTERM)
    stack.gateway.wait_for_log("Draining: 4 request(s) in flight")

    ready = httpx.get(f"{stack.base_url}/ready", timeout=5)
    assert ready.status_code == 503 and ready.json()["status"] == "draining"
    late = httpx.post(
        f"{stack.base_url}/v1/chat/completions",
        timeout=5,
        json={"model": BENCH, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert late.status_code == 503 and late.headers["retry-after"] == "1"
    assert late.json()["error"]["code"] == "server_shutting_down"

    for thread in threads:
        thread.join(60)
    for i in range(STREAMS):
        assert finish_reasons(results[i]) == ["length"] and not errors(results[i]) and results[i][-1] == "[DONE]"
    assert stack.gateway.proc.wait(30) == 0


def test_gateway_grace_shorter_than_the_streams_ends_them_with_an_error_event(stack):
    stack.start_gateway("--drain-grace-secs", "1")
    threads, results = start_streams(stack.base_url, BENCH, STREAMS, max_tokens=1000)
    wait_until(lambda: stack.engine.info().running == STREAMS, timeout=30, message="4 streams running")
    stack.gateway.proc.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive(), "a stream hung past the grace period"
    for i in range(STREAMS):
        (error,) = errors(results[i])
        assert error["code"] == "server_shutting_down" and results[i][-1] == "[DONE]"
        assert finish_reasons(results[i]) == []
    assert stack.gateway.proc.wait(30) == 0
    wait_until(lambda: stack.engine.info().running == 0, timeout=15, message="engine slots freed")


def test_engine_drains_on_sigterm_and_refuses_new_calls(stack):
    threads, results = start_streams(stack.base_url, BENCH, STREAMS, max_tokens=160)
    wait_until(lambda: stack.engine.info().running == STREAMS, timeout=30, message="4 streams running")
    stack.text.proc.send_signal(signal.SIGTERM)
    stack.text.wait_for_log("Draining: 4 request(s) in flight")
    request = pb.GenerateRequest(model=BENCH, messages=[pb.ChatMessage(role="user", content="hi")])
    with pytest.raises(grpc.RpcError) as refused:
        list(stack.engine.stub.Generate(request, timeout=10))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    for thread in threads:
        thread.join(60)
    for i in range(STREAMS):
        assert finish_reasons(results[i]) == ["length"] and not errors(results[i])
    assert stack.text.proc.wait(30) == 0


def test_engine_grace_shorter_than_the_streams_ends_them_with_an_error_event(tmp_path, bench_model):
    stack = bench_stack(
        tmp_path, bench_model, params={"max_num_seqs": STREAMS}, env={"PROXYVISION_DRAIN_GRACE_SECS": "1"}
    )
    try:
        threads, results = start_streams(stack.base_url, BENCH, STREAMS, max_tokens=1000)
        wait_until(lambda: stack.engine.info().running == STREAMS, timeout=30, message="4 streams running")
        stack.text.proc.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(30)
            assert not thread.is_alive(), "a stream hung past the grace period"
        for i in range(STREAMS):
            (error,) = errors(results[i])
            assert error["code"] == "server_shutting_down" and "drain grace" in error["message"]
        assert stack.text.proc.wait(30) == 0
    finally:
        stack.stop()
