"""A stream that has started (images were described first) waits out a full engine queue instead of
failing: the engine's RESOURCE_EXHAUSTED means nothing was generated, so asking again is safe."""

from __future__ import annotations

import time

import pytest

from services.api_gateway.schemas.chat import ChatCompletionRequest
from services.common.errors import DeadlineExceededError, InvalidRequestError, OverloadedError
from services.common.generation import ChatTurn, Finished, TextDelta

from .fakes import TEXT, FakeTextEngine, hello_script, make_state

pytestmark = pytest.mark.asyncio


def busy() -> list:
    return [OverloadedError("The engine serving m is at capacity (16 running, 64 waiting, max_queue=64)")]


async def plan_for(engine: FakeTextEngine, timeout: float = 5.0):
    state = make_state({TEXT: engine})
    plan = await state.chat.plan(ChatCompletionRequest(model=TEXT, messages=[{"role": "user", "content": "hi"}]))
    plan.core.timeout = timeout
    return state.core, plan.core


async def drain(calls) -> str:
    text = []
    while (item := await calls.next()) is not None:
        if isinstance(item[1], TextDelta):
            text.append(item[1].text)
        assert not isinstance(item[1], Finished) or item[1].reason == "stop"
    await calls.aclose()
    return "".join(text)


async def test_a_full_queue_is_waited_out_and_the_request_served():
    engine = FakeTextEngine(TEXT, scripts=[busy(), busy(), hello_script()])
    service, plan = await plan_for(engine)
    service.ADMISSION_RETRY_SECS = 0.01
    calls = await service.admitted_calls(plan, [ChatTurn("user", "hi")], "r1")
    assert await drain(calls) == "Hello wörld"
    assert len(engine.calls) == 3 and all(call.closed.is_set() for call in engine.calls)
    # Each attempt gets the time left of the request's own deadline, never a fresh one.
    assert engine.calls[0].timeout >= engine.calls[1].timeout >= engine.calls[2].timeout


async def test_the_wait_ends_at_the_request_deadline_with_a_timeout_error():
    engine = FakeTextEngine(TEXT, busy())
    service, plan = await plan_for(engine, timeout=0.3)
    service.ADMISSION_RETRY_SECS = 0.02
    with pytest.raises(DeadlineExceededError) as info:
        await service.admitted_calls(plan, [ChatTurn("user", "hi")], "r2")
    assert "at capacity" in info.value.message and info.value.http_status == 504
    assert time.monotonic() < plan.started + plan.timeout + 0.5  # ended at the deadline, not after it
    assert len(engine.calls) > 2


async def test_other_refusals_are_not_retried():
    engine = FakeTextEngine(TEXT, [InvalidRequestError("bad", param="messages")])
    service, plan = await plan_for(engine)
    with pytest.raises(InvalidRequestError):
        await service.admitted_calls(plan, [ChatTurn("user", "hi")], "r3")
    assert len(engine.calls) == 1


async def test_a_full_vision_queue_is_waited_out_too():
    """Captions are retried the same way (the loadtest found image streams lost to a full vision queue)."""
    engine = FakeTextEngine(TEXT, hello_script())
    service, plan = await plan_for(engine)
    service.ADMISSION_RETRY_SECS = 0.01
    refusals = [OverloadedError("The vision engine is at capacity (16 images waiting, max_queue=16)")] * 2

    class FullVisionQueue:
        """The plan's images, whose captioning is refused while `refusals` last."""

        async def describe(self, request_id: str) -> list[ChatTurn]:
            if refusals:
                raise refusals.pop()
            return [ChatTurn("user", "hi\n\nImage 1: a red square")]

    plan.images = FullVisionQueue()
    described = await service.described_turns(plan, "r4")
    assert described[0].content.endswith("a red square") and not refusals
