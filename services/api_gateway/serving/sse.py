"""Server-sent events framing for streamed chat completions.

Each event is `data: <json>\n\n`; the stream ends with `data: [DONE]\n\n`. While images are described
and while a request waits for its first token (queued for a batch slot), an SSE comment every few
seconds keeps proxies from closing the connection. Between tokens there is no keep-alive on purpose:
there is no long silence to fill and no per-token overhead worth paying.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from starlette.responses import StreamingResponse

from services.common.errors import InternalError, ProxyVisionError

from .owned_stream import OwnedStream

log = logging.getLogger(__name__)

DONE = "data: [DONE]\n\n"
KEEPALIVE = ": keep-alive\n\n"


def event(payload: dict) -> str:
    """One `data:` event."""
    return f"data: {json.dumps(payload, separators=(',', ':'), ensure_ascii=False)}\n\n"


def timing_comment(timings, text_ttft_ms: float) -> str:
    """Where a multimodal request's time went (a `vision_rewrite.Timings`), as an SSE comment: clients ignore
    comments, benchmarks read it."""
    return (
        f": timing fetch_ms={timings.fetch_ms:.1f} vision_ms={timings.vision_ms:.1f} "
        f"text_ttft_ms={text_ttft_ms:.1f}\n\n"
    )


async def ending_with_done(frames: AsyncIterator[str], calls) -> AsyncIterator[str]:
    """An OpenAI-style stream's `frames`, then `[DONE]`: an error after the first byte becomes an error event
    first (the client is owed an answer), and the engine calls (`calls`: anything with an `aclose()`) are closed
    however the frames end."""
    try:
        async for frame in frames:
            yield frame
    except ProxyVisionError as error:
        log.info("Stream failed after it started: %s", error.message)
        yield event(error.to_openai())
    except Exception:  # a bug: the client still gets an error event and [DONE], the log the traceback
        log.exception("Stream failed unexpectedly")
        yield event(InternalError("The server had an error while processing your request.").to_openai())
    finally:
        await calls.aclose()
    yield DONE


class FrameStream(OwnedStream[str]):
    """The SSE frames of one answer, owning the engine calls behind them (a `LiveGeneration`, `ChoiceCalls`)."""


class EventStreamResponse(StreamingResponse):
    """`text/event-stream` response that always closes its frames.

    Starlette cancels the body iterator when it sees `http.disconnect` while the iterator awaits the
    engine, but when the disconnect surfaces in `send` the generator is left suspended at a `yield`
    until garbage collection. Closing it here cancels the gRPC call at once, so the engine frees the
    sequence's slot and KV blocks."""

    def __init__(self, frames: FrameStream) -> None:
        super().__init__(
            frames, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()  # type: ignore[union-attr]
