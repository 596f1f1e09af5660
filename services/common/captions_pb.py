"""The caption events' one protobuf mapping: the vision engine writes them, the gateway's client reads them."""

from __future__ import annotations

from .captions import CaptionDelta, CaptionDone, CaptionEvent
from .pb.proxyvision.v1 import vision_engine_pb2 as pb


def caption_event_to_pb(event: CaptionEvent) -> pb.DescribeResponse:
    """One Describe stream message."""
    if isinstance(event, CaptionDelta):
        return pb.DescribeResponse(delta=pb.CaptionDelta(image_index=event.image_index, text=event.text))
    return pb.DescribeResponse(
        done=pb.CaptionDone(
            image_index=event.image_index,
            caption=event.caption,
            finish_reason=event.finish_reason,
            image_tokens=event.image_tokens,
            caption_tokens=event.caption_tokens,
            cached=event.cached,
            elapsed_ms=event.elapsed_ms,
        )
    )


def caption_event_from_pb(response: pb.DescribeResponse) -> CaptionEvent | None:
    """The event one Describe stream message carries; None for a kind this side does not know (a newer engine's)."""
    kind = response.WhichOneof("event")
    if kind == "delta":
        return CaptionDelta(response.delta.image_index, response.delta.text)
    if kind != "done":
        return None
    d = response.done
    return CaptionDone(
        d.image_index, d.caption, d.finish_reason, d.image_tokens, d.caption_tokens, d.cached, d.elapsed_ms
    )
