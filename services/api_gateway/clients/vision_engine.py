"""Typed async client of the VisionEngine. Protobuf stays in here; gRPC errors become our errors here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import grpc

from services.common.grpc_server import REQUEST_ID_KEY
from services.common.pb.proxyvision.v1 import vision_engine_pb2 as pb, vision_engine_pb2_grpc

from .base import EngineClient
from .images import ImageBytes, image_to_pb


@dataclass(frozen=True)
class Caption:
    """One finished caption."""

    image_index: int
    text: str
    cached: bool
    elapsed_ms: float
    image_tokens: int
    caption_tokens: int


class VisionEngineClient(EngineClient):
    """The proxy vision engine."""

    def __init__(self, channel: grpc.aio.Channel, model: str) -> None:
        super().__init__(channel, model, vision_engine_pb2_grpc.VisionEngineStub(channel))

    async def describe(self, images: Sequence[ImageBytes], *, user_prompt: str, request_id: str,
                       timeout: float | None) -> AsyncIterator[Caption]:  # fmt: skip
        """Yield each image's finished caption as it completes (deltas are not needed by the rewrite)."""
        request = pb.DescribeRequest(request_id=request_id, model=self.model, user_prompt=user_prompt,
                                     images=[image_to_pb(i) for i in images])  # fmt: skip
        call = self._stub.Describe(request, timeout=timeout, metadata=((REQUEST_ID_KEY, request_id),))
        async with self.tracked(call):
            async for response in call:
                if response.HasField("done"):
                    d = response.done
                    yield Caption(d.image_index, d.caption, d.cached, d.elapsed_ms, d.image_tokens, d.caption_tokens)
