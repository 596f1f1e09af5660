"""Protobuf <-> captioner domain types. The only module of the vision engine that knows both."""

from __future__ import annotations

from services.common.generation_pb import image_from_pb
from services.common.model_info import model_info_to_pb
from services.common.pb.proxyvision.v1 import common_pb2, vision_engine_pb2 as pb

from .captioner.engine import VisionEngineInfo
from .captioner.types import CaptionDone, CaptionEvent, DescribeJob


def job_from_pb(message: pb.DescribeRequest, request_id: str) -> DescribeJob:
    """Build the domain request."""
    return DescribeJob(
        request_id=request_id,
        images=tuple(image_from_pb(i) for i in message.images),
        prompt=message.prompt,
        user_prompt=message.user_prompt,
        max_tokens=message.max_tokens,
    )


def event_to_pb(event: CaptionEvent) -> pb.DescribeResponse:
    """One stream message."""
    if isinstance(event, CaptionDone):
        return pb.DescribeResponse(
            done=pb.CaptionDone(
                image_index=event.image_index,
                finish_reason=event.finish_reason,
                image_tokens=event.image_tokens,
                caption_tokens=event.caption_tokens,
                cached=event.cached,
                elapsed_ms=event.elapsed_ms,
                caption=event.caption,
            )
        )
    return pb.DescribeResponse(delta=pb.CaptionDelta(image_index=event.image_index, text=event.text))


def info_to_pb(info: VisionEngineInfo) -> common_pb2.ModelInfo:
    """GetModelInfo's answer."""
    return model_info_to_pb(info, shared_cache=info.shared_cache)
