"""What both engine clients share: routing calls to a replica (clients/routing.py), GetModelInfo, health, and
gRPC error translation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, replace

import grpc

from services.common.errors import EngineUnavailableError, ProxyVisionError, ShuttingDownError, from_grpc
from services.common.pb.proxyvision.v1 import common_pb2

from .channels import check_health
from .routing import Failover, RoundRobinRouting, Route, Routing


@dataclass(frozen=True)
class EngineModelInfo:
    """What GetModelInfo says."""

    name: str
    source: str
    state: str
    max_context: int
    running: int
    waiting: int
    stand_in_for: str
    # Effective sampling defaults (name -> value, unset ones absent) and where each came from; None until loaded.
    sampling_defaults: dict[str, float | int] | None = None
    sampling_sources: dict[str, str] | None = None
    quantization: str = ""
    status: str = ""  # what a loading model is doing ("downloading ...", "loading weights"), or "failed: ..."
    error: str = ""  # why the last load failed


def _fields(message) -> dict:
    """The set scalar fields of a message, by name (float32 values rounded back to what was sent)."""
    return {f.name: round(v, 6) if isinstance(v, float) else v for f, v in message.ListFields() if f.name != "sources"}


def translate(exc: grpc.aio.AioRpcError) -> ProxyVisionError:
    """The one place an engine's gRPC status becomes our error (code/param from trailing metadata)."""
    return from_grpc(exc.code(), exc.details(), tuple(exc.trailing_metadata() or ()))


class Refused(Exception):
    """An attempt failed UNAVAILABLE before its first message, on a route that fails over: try the next one."""

    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        super().__init__(error.details())
        self.error = error


class EngineClient:
    """An engine reached through a `Routing` (a plain channel is round_robin over it); subclasses add the
    engine's own RPC."""

    def __init__(self, routing: Routing | grpc.aio.Channel, model: str, stub_factory) -> None:
        self.routing: Routing = RoundRobinRouting(routing) if isinstance(routing, grpc.aio.Channel) else routing
        self._stub_factory = stub_factory
        self.model = model
        self._calls: set = set()  # streaming calls in flight
        self._aborted: set = set()  # ... of which abort_calls() cancelled these

    async def attempt(self, route: Route, start: Callable) -> AsyncIterator:
        """The messages of one call, `start(stub)`, on `route`, so that `abort_calls()` can end it with a
        ShuttingDownError. A refusal before the first message raises `Refused` where the route fails over;
        every other failure becomes our error here. The route counts the call in flight while it runs."""
        call = start(route.stub(self._stub_factory))
        self._calls.add(call)
        committed = refused = False
        route.begin()
        try:
            async for message in call:
                committed = True
                yield message
        except grpc.aio.AioRpcError as exc:
            if not committed and route.fails_over and exc.code() == grpc.StatusCode.UNAVAILABLE:
                refused = True
                raise Refused(exc) from None
            raise translate(exc) from None
        except asyncio.CancelledError:
            # Only a cancel of ours (not of the task) turns into an error the stream can report.
            if call in self._aborted:
                raise ShuttingDownError(
                    "The gateway is shutting down; the request was aborted after the drain grace period"
                ) from None
            raise
        finally:
            route.end()
            self._calls.discard(call)
            self._aborted.discard(call)
            call.cancel()  # no-op once the call finished; frees the engine's slot otherwise
            if not refused:
                self.routing.count(route.outcome)

    async def routed(self, key: str, start: Callable, timeout: float | None) -> AsyncIterator:
        """The messages of one streaming call keyed `key`: `start(stub, time_left)` on the key's route, failing
        over (`Failover`) while replicas refuse it before its first message. All attempts share `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        failover = Failover(self.routing)
        while True:
            route = await failover.route(key)
            left = None if deadline is None else max(0.001, deadline - time.monotonic())
            try:
                async with aclosing(self.attempt(route, lambda stub, left=left: start(stub, left))) as messages:
                    async for message in messages:
                        yield message
                return
            except Refused as refused:
                if not failover.refused(route):
                    raise translate(refused.error) from None

    @property
    def calls_in_flight(self) -> int:
        """Streaming calls in flight now (what `abort_calls()` would cancel)."""
        return len(self._calls)

    def abort_calls(self) -> int:
        """Cancel every streaming call in flight (the drain grace is over); returns how many."""
        calls = list(self._calls)
        for call in calls:
            self._aborted.add(call)
            call.cancel()
        return len(calls)

    async def model_info(self, timeout: float) -> EngineModelInfo:
        """GetModelInfo. With several replicas: a ready one's answer (else any's), with `running` and `waiting`
        summed over every replica that answered; the first failure when none did."""
        routes = await self.routing.everyone()
        if not routes:
            raise EngineUnavailableError(f"Engine unavailable: {self.routing.why_none()}")
        answers = await asyncio.gather(*(self._model_info(r, timeout) for r in routes), return_exceptions=True)
        infos = [a for a in answers if isinstance(a, EngineModelInfo)]
        if not infos:
            raise answers[0]
        if len(infos) == 1:
            return infos[0]
        best = next((i for i in infos if i.state == "ready"), infos[0])
        return replace(best, running=sum(i.running for i in infos), waiting=sum(i.waiting for i in infos))

    async def _model_info(self, route: Route, timeout: float) -> EngineModelInfo:
        try:
            info = await route.stub(self._stub_factory).GetModelInfo(common_pb2.GetModelInfoRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise translate(exc) from None
        return EngineModelInfo(
            name=info.name,
            source=info.hf_id,
            max_context=info.max_context,
            running=info.running,
            waiting=info.waiting,
            stand_in_for=info.stand_in_for,
            sampling_defaults=_fields(info.sampling_defaults) if info.HasField("sampling_defaults") else None,
            sampling_sources=dict(info.sampling_defaults.sources) if info.HasField("sampling_defaults") else None,
            quantization=info.quantization,
            status=info.status,
            error=info.error,
            state=common_pb2.ModelState.Name(info.state).removeprefix("MODEL_STATE_").lower(),
        )

    async def health(self, timeout: float, *, wait_for_ready: bool = False) -> str:
        """'SERVING' when any replica serves, else 'NOT_SERVING' when any answers, else 'UNREACHABLE: ...'.
        `wait_for_ready`: as channels.check_health."""
        routes = await self.routing.everyone()
        if not routes:
            return f"UNREACHABLE: {self.routing.why_none()}"
        statuses = await asyncio.gather(
            *(check_health(r.channel, timeout, wait_for_ready=wait_for_ready) for r in routes)
        )
        for status in ("SERVING", "NOT_SERVING"):
            if status in statuses:
                return status
        return statuses[0]
