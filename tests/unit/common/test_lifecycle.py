"""ModelLifecycle with a fake resource: load once for concurrent arrivals, idle unload, drain."""

from __future__ import annotations

import asyncio
import threading

import pytest

from services.common.errors import EngineUnavailableError, ShuttingDownError
from services.common.lifecycle import ModelLifecycle, ModelState
from tests.support.processes import wait_until_async


class Resource:
    """Counts loads; a load can be held open to let requests pile up behind it."""

    def __init__(self) -> None:
        self.loads = 0
        self.unloaded: list[int] = []
        self.gate = threading.Event()
        self.gate.set()

    def load(self) -> int:
        self.gate.wait(10)
        self.loads += 1
        return self.loads

    def unload(self, value: int) -> None:
        self.unloaded.append(value)


async def test_concurrent_requests_after_an_unload_trigger_one_load():
    res = Resource()
    life = ModelLifecycle("m", res.load, res.unload, idle_unload_secs=0)
    await life.start()
    assert await life.unload_idle()
    assert life.state is ModelState.UNLOADED and res.unloaded == [1]
    res.gate.clear()

    async def request() -> int:
        async with life.use() as value:
            return value

    tasks = [asyncio.create_task(request()) for _ in range(10)]
    await wait_until_async(lambda: life.active == 10, 5)
    assert life.state is ModelState.LOADING
    res.gate.set()
    assert await asyncio.gather(*tasks) == [2] * 10
    assert res.loads == 2 and life.loads == 2 and life.last_load_seconds > 0


async def test_a_request_arriving_while_the_model_unloads_waits_and_reloads_it():
    res = Resource()
    unloading, release = threading.Event(), threading.Event()

    def slow_unload(value: int) -> None:
        unloading.set()
        release.wait(10)  # the unload is under way: resource dropped, state not yet UNLOADED
        res.unload(value)

    life = ModelLifecycle("m", res.load, slow_unload, idle_unload_secs=0)
    await life.start()

    unloader = asyncio.create_task(life.unload_idle())
    await wait_until_async(unloading.is_set, 5)
    assert life.state is ModelState.READY and life.resource is None

    async def request() -> int:
        async with life.use() as value:
            return value

    answer = asyncio.create_task(request())
    await asyncio.sleep(0.05)
    assert not answer.done()  # it waits for the unload instead of failing with "not available"
    release.set()
    await unloader
    assert await answer == 2 and res.unloaded == [1] and life.state is ModelState.READY


async def test_the_idle_timer_unloads_only_without_requests():
    res = Resource()
    life = ModelLifecycle("m", res.load, res.unload, idle_unload_secs=1)
    await life.start()
    try:
        async with life.use():
            await asyncio.sleep(1.6)  # longer than the idle time, but a request is inside
            assert life.state is ModelState.READY
        await wait_until_async(lambda: life.state is ModelState.UNLOADED, 5)
        assert life.unloads == 1
    finally:
        await life.stop()


async def test_drain_refuses_new_requests_and_waits_for_running_ones():
    res = Resource()
    life = ModelLifecycle("m", res.load, res.unload, idle_unload_secs=0)
    await life.start()
    release = asyncio.Event()

    async def running() -> None:
        async with life.use():
            await release.wait()

    task = asyncio.create_task(running())
    await asyncio.sleep(0)
    life.begin_drain()
    with pytest.raises(ShuttingDownError) as refused:
        async with life.use():
            pass
    assert isinstance(refused.value, EngineUnavailableError) and refused.value.code == "server_shutting_down"
    assert await life.wait_idle(0.1) is False
    release.set()
    assert await life.wait_idle(5) is True
    await task
