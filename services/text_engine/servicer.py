"""TextEngine gRPC servicer: convert, delegate to the InferenceEngine, convert back."""

from __future__ import annotations

import logging
import time

import grpc

from services.common.generation import Finished
from services.common.grpc_server import EngineCalls
from services.common.pb.proxyvision.v1 import common_pb2, text_engine_pb2, text_engine_pb2_grpc

from .convert import event_to_pb, info_to_pb, request_from_pb
from .engine.engine import InferenceEngine

log = logging.getLogger(__name__)


class TextEngineServicer(EngineCalls, text_engine_pb2_grpc.TextEngineServicer):
    """Serves Generate, CountTokens and GetModelInfo for one model."""

    _engine: InferenceEngine

    async def Generate(self, request: text_engine_pb2.GenerateRequest, context: grpc.aio.ServicerContext):
        """Stream one chat completion; errors before the first message are gRPC statuses."""
        started = time.monotonic()
        async with self._call(context, request, "Generate") as request_id:
            async for event in self._engine.generate(request_from_pb(request, request_id)):
                if isinstance(event, Finished):
                    log.info(
                        "Generate finished: reason=%s prompt_tokens=%d completion_tokens=%d in %.0fms%s",
                        event.reason.value,
                        event.prompt_tokens,
                        event.completion_tokens,
                        (time.monotonic() - started) * 1000,
                        f" error={event.error_message}" if event.error_message else "",
                    )
                yield event_to_pb(event)

    async def CountTokens(self, request: text_engine_pb2.GenerateRequest, context: grpc.aio.ServicerContext):
        """The prompt tokens Generate would count for the same request; errors as Generate's."""
        async with self._call(context, request, "CountTokens") as request_id:
            count = await self._engine.count_tokens(request_from_pb(request, request_id))
            return text_engine_pb2.CountTokensResponse(prompt_tokens=count)

    async def GetModelInfo(self, request: common_pb2.GetModelInfoRequest, context: grpc.aio.ServicerContext):
        """Describe the model and the current load."""
        return info_to_pb(self._engine.info())
