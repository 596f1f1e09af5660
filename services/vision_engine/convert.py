"""Protobuf <-> captioner domain types. The only module of the vision engine that knows both."""

from __future__ import annotations

from services.common.generation_pb import image_from_pb
from services.common.grpc_server import MODEL_STATE_TO_PB
from services.common.hf_models import MIB
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


def info_to_pb(entry, info: VisionEngineInfo) -> common_pb2.ModelInfo:
    """GetModelInfo's answer."""
    return common_pb2.ModelInfo(
        name=entry.name,
        hf_id=entry.source,
        max_context=info.max_context,
        state=MODEL_STATE_TO_PB[info.state],
        memory_budget_mib=entry.params.mem,
        running=info.running,
        waiting=info.waiting,
        max_num_seqs=entry.params.max_num_seqs,
        dtype=info.dtype,
        device=info.device,
        stand_in_for=info.stand_in_for,
        error=info.error,
        memory_budget_bytes=entry.params.mem * MIB,
        memory_used_bytes=info.memory_used_bytes,
        memory_free_bytes=max(0, entry.params.mem * MIB - info.memory_used_bytes),
        max_queue=entry.params.queue_limit,
        last_load_seconds=info.last_load_seconds,
        status=info.status,
        shared_cache=info.shared_cache,
    )
