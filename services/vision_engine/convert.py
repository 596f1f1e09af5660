"""Protobuf <-> the captioner's request and model info (its events are mapped by services/common/captions_pb.py)."""

from __future__ import annotations

from services.common.generation_pb import image_from_pb
from services.common.model_info import model_info_to_pb
from services.common.pb.proxyvision.v1 import common_pb2, vision_engine_pb2 as pb

from .captioner.engine import VisionEngineInfo
from .captioner.types import DescribeJob


def job_from_pb(message: pb.DescribeRequest, request_id: str) -> DescribeJob:
    """Build the domain request."""
    return DescribeJob(
        request_id=request_id,
        images=tuple(image_from_pb(i) for i in message.images),
        prompt=message.prompt,
        user_prompt=message.user_prompt,
        max_tokens=message.max_tokens,
    )


def info_to_pb(info: VisionEngineInfo) -> common_pb2.ModelInfo:
    """GetModelInfo's answer."""
    return model_info_to_pb(info, shared_cache=info.shared_cache)
