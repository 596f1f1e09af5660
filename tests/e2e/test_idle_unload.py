"""Idle unload for real: the weights leave the process, health stays SERVING, the next requests reload once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
from grpc_health.v1 import health_pb2

from tests.support.models_yaml import BENCH_MODEL as BENCH
from tests.support.processes import wait_until
from tests.support.running_engine import RunningEngine
from tests.support.stack import Stack, bench_stack

pytestmark = pytest.mark.e2e

IDLE_SECS = 2


def weights_bytes(model_dir) -> int:
    return sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))


def rss(engine: RunningEngine) -> int:
    return psutil.Process(engine.service.proc.pid).memory_info().rss


@pytest.fixture
def stack(tmp_path, bench_model):
    """The bench engine alone, idling out after IDLE_SECS."""
    stack = bench_stack(tmp_path, bench_model, idle_unload_secs=IDLE_SECS, gateway=False)
    yield stack
    stack.stop()
    assert stack.text.proc.returncode == 0


def test_idle_unload_frees_the_weights_and_the_next_requests_reload_once(stack: Stack, bench_model):
    engine = stack.engine
    # IDLE_SECS is short: on a loaded machine the model may idle out once before this first request, which
    # then reloads it. Every count below is therefore relative to what came before it.
    text, finished = engine.generate(max_tokens=4)
    assert finished.usage.completion_tokens == 4
    loaded_rss = rss(engine)

    wait_until(lambda: engine.state() == "MODEL_STATE_UNLOADED", timeout=30, message="UNLOADED")
    assert f"Unloading model {BENCH} after {IDLE_SECS}s idle" in engine.service.log_text()
    assert engine.health() == health_pb2.HealthCheckResponse.SERVING  # the pod is fine: no restart
    freed = loaded_rss - rss(engine)
    assert freed >= 0.8 * weights_bytes(bench_model), (loaded_rss, rss(engine), weights_bytes(bench_model))
    before = engine.metrics()
    assert before.value("proxyvision_model_state", model=BENCH, state="unloaded") == 1
    loads = before.value("proxyvision_model_loads_total", model=BENCH)
    assert loads >= 1 and before.value("proxyvision_model_unloads_total", model=BENCH) == loads

    # Ten requests arrive while the model is unloaded: one load, every request answered.
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda i: engine.generate(f"Request {i}", max_tokens=3), range(10)))
    assert [finished.usage.completion_tokens for _, finished in results] == [3] * 10
    assert engine.metrics().value("proxyvision_model_loads_total", model=BENCH) == loads + 1
    assert engine.info().last_load_seconds > 0


def test_a_request_longer_than_the_idle_time_is_never_unloaded_under_its_feet(stack: Stack):
    engine = stack.engine
    states: list[str] = []
    unloads: list[float] = []
    first_delta, done = threading.Event(), threading.Event()

    def watch() -> None:
        # Sampling starts with the request's first token: before it, a loaded machine may legitimately have
        # idled the model out (IDLE_SECS is short) and the request's own reload shows as LOADING.
        first_delta.wait()
        unloads.append(engine.metrics().value("proxyvision_model_unloads_total", model=BENCH))
        while not done.is_set():
            states.append(engine.state())
            done.wait(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        # ~30 tokens/s on 2 CPU cores: 200 tokens keep the request running several idle periods long.
        _, finished = engine.generate(max_tokens=200, first_delta=first_delta)
    finally:
        first_delta.set()
        done.set()
        watcher.join()
    assert finished.usage.completion_tokens == 200
    assert len(states) > 5 * IDLE_SECS and set(states) == {"MODEL_STATE_READY"}
    # Nothing was unloaded between the request's first token and its last.
    assert engine.metrics().value("proxyvision_model_unloads_total", model=BENCH) == unloads[0]
    assert engine.state() == "MODEL_STATE_READY"
