"""Typed async client of the VisionEngine. Protobuf stays in here; gRPC errors become our errors here."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import replace

import grpc

from services.common.captions import CaptionDone
from services.common.captions_pb import caption_event_from_pb
from services.common.errors import InternalError
from services.common.generation import ImageBytes
from services.common.generation_pb import image_to_pb
from services.common.grpc_server import REQUEST_ID_KEY
from services.common.pb.proxyvision.v1 import vision_engine_pb2 as pb, vision_engine_pb2_grpc

from .base import EngineClient, Refused, translate
from .routing import Failover, Route, Routing


class VisionEngineClient(EngineClient):
    """The proxy vision engine, over one channel or routed over its replicas (clients/routing.py).

    Under `routing.vision: affinity` each image goes to the replica that owns its sha256 (the hash the engine's
    caption cache is keyed by), so a re-sent image finds its caption: a Describe of several images becomes one
    call per owning replica, run together, their captions merged as they finish (indices mapped back). Adding an
    image to a conversation moves none of the earlier ones. One sub-call failing fails the describe, and the
    others are cancelled; one refused before its first caption has its images routed again (next owners)."""

    def __init__(self, routing: Routing | grpc.aio.Channel, model: str) -> None:
        super().__init__(routing, model, vision_engine_pb2_grpc.VisionEngineStub)

    async def describe(
        self, images: Sequence[ImageBytes], *, user_prompt: str, request_id: str, timeout: float | None
    ) -> AsyncIterator[CaptionDone]:
        """Yield each image's finished caption as it completes (deltas are not needed by the rewrite)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        failover = Failover(self.routing)
        finished: asyncio.Queue = asyncio.Queue()  # captions, and sub-calls as they end (the task itself)
        running: dict[asyncio.Task, tuple[Route, list[int]]] = {}

        async def sub_call(route: Route, indices: list[int]) -> None:
            request = pb.DescribeRequest(
                request_id=request_id,
                model=self.model,
                user_prompt=user_prompt,
                images=[image_to_pb(images[i]) for i in indices],
            )
            left = None if deadline is None else max(0.001, deadline - time.monotonic())

            def start(stub):
                return stub.Describe(request, timeout=left, metadata=((REQUEST_ID_KEY, request_id),))

            async with aclosing(self.attempt(route, start)) as responses:
                async for response in responses:
                    event = caption_event_from_pb(response)
                    if isinstance(event, CaptionDone):
                        finished.put_nowait(replace(event, image_index=indices[event.image_index]))

        async def launch(indices: list[int]) -> None:
            """Group `indices` by the replica each image's key routes to; one sub-call per group."""
            groups: dict[str, tuple[Route, list[int]]] = {}
            for i in indices:
                route = await failover.route(images[i].sha256)
                groups.setdefault(route.name, (route, []))[1].append(i)
            for route, group in groups.values():
                task = asyncio.create_task(sub_call(route, group))
                task.add_done_callback(finished.put_nowait)
                running[task] = (route, group)

        try:
            await launch(list(range(len(images))))
            while running:
                item = await finished.get()
                if isinstance(item, CaptionDone):
                    yield item
                    continue
                route, group = running.pop(item)
                error = InternalError("A Describe sub-call was cancelled") if item.cancelled() else item.exception()
                if isinstance(error, Refused):
                    if not failover.refused(route):
                        raise translate(error.error) from None
                    await launch(group)  # its images to their next owners
                elif error is not None:
                    raise error
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
