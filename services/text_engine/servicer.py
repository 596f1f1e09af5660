"""TextEngine gRPC servicer: convert, delegate to the InferenceEngine, convert back."""

from __future__ import annotations

import logging
import time

import grpc

from services.common.errors import ProxyVisionError
from services.common.generation import Finished
from services.common.grpc_server import abort_with, bind_request_id, ensure_model
from services.common.pb.proxyvision.v1 import common_pb2, text_engine_pb2, text_engine_pb2_grpc

from .convert import event_to_pb, info_to_pb, request_from_pb
from .engine.engine import InferenceEngine

log = logging.getLogger(__name__)


class TextEngineServicer(text_engine_pb2_grpc.TextEngineServicer):
    """Serves Generate, CountTokens and GetModelInfo for one model."""

    def __init__(self, engine: InferenceEngine) -> None:
        self._engine = engine

    async def Generate(self, request: text_engine_pb2.GenerateRequest, context: grpc.aio.ServicerContext):
        """Stream one chat completion; errors before the first message are gRPC statuses."""
        request_id = bind_request_id(context, request.request_id)
        await ensure_model(context, request.model, self._engine.entry.name)
        started = time.monotonic()
        try:
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
        except ProxyVisionError as error:
            log.info("Generate refused: %s", error.message)
            await abort_with(context, error)

    async def CountTokens(self, request: text_engine_pb2.GenerateRequest, context: grpc.aio.ServicerContext):
        """The prompt tokens Generate would count for the same request; errors as Generate's."""
        request_id = bind_request_id(context, request.request_id)
        await ensure_model(context, request.model, self._engine.entry.name)
        try:
            count = await self._engine.count_tokens(request_from_pb(request, request_id))
            return text_engine_pb2.CountTokensResponse(prompt_tokens=count)
        except ProxyVisionError as error:
            log.info("CountTokens refused: %s", error.message)
            await abort_with(context, error)

    async def GetModelInfo(self, request: common_pb2.GetModelInfoRequest, context: grpc.aio.ServicerContext):
        """Describe the model and the current load."""
        return info_to_pb(self._engine.info())
