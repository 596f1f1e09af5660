"""A full engine queue is refused at once (503 server_overloaded + Retry-After) and nothing is lost after."""

from __future__ import annotations

import threading

import httpx
import openai
import pytest

from tests.support.models_yaml import BENCH_MODEL as BENCH
from tests.support.processes import wait_until
from tests.support.stack import bench_stack

pytestmark = pytest.mark.e2e


def chat(base_url: str, max_tokens: int, stream: bool = False) -> httpx.Response:
    body = {
        "model": BENCH,
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    }
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=120) as response:
        response.read()
        return response


def test_a_full_queue_answers_503_with_retry_after_and_later_requests_succeed(tmp_path, bench_model):
    stack = bench_stack(tmp_path, bench_model, params={"max_num_seqs": 1, "max_queue": 1})
    try:
        results: dict[str, httpx.Response] = {}

        def hold(name: str) -> None:
            results[name] = chat(stack.base_url, max_tokens=300, stream=True)  # seconds: the checks below run meanwhile

        first = threading.Thread(target=hold, args=("running",))
        first.start()
        wait_until(lambda: stack.engine.info().running == 1, timeout=30, message="one running")
        second = threading.Thread(target=hold, args=("queued",))
        second.start()
        wait_until(lambda: stack.engine.info().waiting == 1, timeout=30, message="one waiting")
        assert stack.engine.info().max_queue == 1
        busy = stack.engine.metrics()
        assert busy.value("proxyvision_requests_running", model=BENCH) == 1
        assert busy.value("proxyvision_requests_waiting", model=BENCH) == 1
        assert 0 < busy.value("proxyvision_kv_cache_usage_ratio", model=BENCH) <= 1
        assert (
            0
            < busy.value("proxyvision_memory_used_bytes", model=BENCH)
            < busy.value("proxyvision_memory_budget_bytes", model=BENCH)
        )
        assert stack.scrape("gateway").value("proxyvision_gateway_requests_running") == 2

        refused = chat(stack.base_url, max_tokens=4)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        error = refused.json()["error"]
        assert (
            error["code"] == "server_overloaded"
            and error["type"] == "server_error"
            and "max_queue=1" in error["message"]
        )

        # The official SDK retries a 503 and honours Retry-After: it gets through once there is room. Room comes
        # when both held streams (600 tokens) are done: tens of seconds on a busy machine, one retry a second.
        sdk = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key="x", max_retries=100, timeout=120)
        answer = sdk.chat.completions.create(model=BENCH, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
        assert answer.usage.completion_tokens == 4

        first.join(120)
        second.join(120)
        for name in ("running", "queued"):
            assert results[name].status_code == 200 and results[name].text.rstrip().endswith("data: [DONE]"), name
        for _ in range(4):
            assert chat(stack.base_url, max_tokens=4).status_code == 200
        engine = stack.engine.metrics()
        for gauge in ("proxyvision_requests_running", "proxyvision_requests_waiting", "proxyvision_memory_used_bytes"):
            assert engine.value(gauge, model=BENCH) == 0, gauge
        assert stack.scrape("gateway").value("proxyvision_gateway_requests_running") == 0
        assert engine.value("proxyvision_requests_total", model=BENCH, status="overloaded") >= 1
        assert engine.value("proxyvision_requests_total", model=BENCH, status="ok") == 7
        assert stack.scrape("gateway").value("proxyvision_gateway_requests_total", model=BENCH, status="503") >= 1
    finally:
        stack.stop()
