import asyncio
import json

import pytest
from starlette.requests import ClientDisconnect

from services.api_gateway.serving import sse
from services.api_gateway.serving.core import ticks_until_done


async def test_keepalive_ticks_only_while_work_is_pending():
    release = asyncio.Event()

    async def work():
        await release.wait()
        return "captions"

    task = asyncio.ensure_future(work())
    comments = []

    async def consume():
        async for tick in ticks_until_done(task, interval=0.01):
            comments.append(tick)
            if len(comments) == 3:
                release.set()

    await asyncio.wait_for(consume(), timeout=5)
    assert len(comments) == 3 and task.result() == "captions"
    done = [c async for c in ticks_until_done(task, interval=0.01)]
    assert done == []


def test_event_framing_is_compact_utf8_json():
    frame = sse.event({"a": "é🙂", "b": None})
    assert frame == 'data: {"a":"é🙂","b":null}\n\n'
    assert json.loads(frame[6:]) == {"a": "é🙂", "b": None}
    assert sse.DONE == "data: [DONE]\n\n"


async def _frames_and_engine_call():
    """Endless frames over a stand-in engine call whose `finally` records the cancel."""
    cancelled = asyncio.Event()

    async def engine_call():
        try:
            while True:
                yield "token"
        finally:
            cancelled.set()

    events = engine_call()

    async def frames():
        async for text in events:
            yield sse.event({"content": text})

    return sse.FrameStream(frames(), events), cancelled


async def test_response_closes_the_engine_call_when_send_fails():
    # ASGI 2.4 servers report a gone client by failing `send`; the frames generator is then parked at a
    # `yield`, and only an explicit close cancels the engine call at once.
    stream, cancelled = await _frames_and_engine_call()
    sent = []

    async def send(message):
        if message["type"] == "http.response.body" and sent:
            raise OSError("client gone")
        sent.append(message)

    async def receive():
        await asyncio.Event().wait()

    scope = {"type": "http", "asgi": {"spec_version": "2.4"}}
    with pytest.raises(ClientDisconnect):
        await sse.EventStreamResponse(stream)(scope, receive, send)
    assert cancelled.is_set()


async def test_response_closes_the_engine_call_on_http_disconnect():
    stream, cancelled = await _frames_and_engine_call()
    first_body = asyncio.Event()

    async def send(message):
        if message["type"] == "http.response.body":
            first_body.set()
        await asyncio.sleep(0)

    async def receive():
        await first_body.wait()
        return {"type": "http.disconnect"}

    scope = {"type": "http", "asgi": {"spec_version": "2.3"}}
    await asyncio.wait_for(sse.EventStreamResponse(stream)(scope, receive, send), 5)
    assert cancelled.is_set()
