"""VisionEngine gRPC servicer: convert, delegate to the CaptionEngine, convert back."""

from __future__ import annotations

import grpc

from services.common.captions_pb import caption_event_to_pb
from services.common.grpc_server import EngineCalls
from services.common.pb.proxyvision.v1 import common_pb2, vision_engine_pb2, vision_engine_pb2_grpc

from .captioner.engine import CaptionEngine
from .convert import info_to_pb, job_from_pb


class VisionEngineServicer(EngineCalls, vision_engine_pb2_grpc.VisionEngineServicer):
    """Serves Describe and GetModelInfo for the proxy vision model."""

    _engine: CaptionEngine

    async def Describe(self, request: vision_engine_pb2.DescribeRequest, context: grpc.aio.ServicerContext):
        """Stream captions of a request's images."""
        async with self._call(context, request, "Describe") as request_id:
            async for event in self._engine.describe(job_from_pb(request, request_id)):
                yield caption_event_to_pb(event)

    async def GetModelInfo(self, request: common_pb2.GetModelInfoRequest, context: grpc.aio.ServicerContext):
        """Describe the model and the current load."""
        return info_to_pb(self._engine.info())
