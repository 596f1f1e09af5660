"""What both engine clients share: the channel, GetModelInfo, health, and gRPC error translation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc

from services.common.errors import ProxyVisionError, ShuttingDownError, from_grpc
from services.common.pb.proxyvision.v1 import common_pb2

from .channels import check_health


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


class EngineClient:
    """An engine reached over one channel; subclasses add the engine's own RPC."""

    def __init__(self, channel: grpc.aio.Channel, model: str, stub) -> None:
        self._channel = channel
        self._stub = stub
        self.model = model
        self._calls: set = set()  # streaming calls in flight
        self._aborted: set = set()  # ... of which abort_calls() cancelled these

    @asynccontextmanager
    async def tracked(self, call) -> AsyncIterator[None]:
        """Run a streaming `call` so that `abort_calls()` can end it with a ShuttingDownError; failures
        of the call become our errors here."""
        self._calls.add(call)
        try:
            yield
        except grpc.aio.AioRpcError as exc:
            raise translate(exc) from None
        except asyncio.CancelledError:
            # Only a cancel of ours (not of the task) turns into an error the stream can report.
            if call in self._aborted:
                raise ShuttingDownError("The gateway is shutting down; the request was aborted after the drain "
                                        "grace period") from None  # fmt: skip
            raise
        finally:
            self._calls.discard(call)
            self._aborted.discard(call)
            call.cancel()  # no-op once the call finished; frees the engine's slot otherwise

    def abort_calls(self) -> int:
        """Cancel every streaming call in flight (the drain grace is over); returns how many."""
        calls = list(self._calls)
        for call in calls:
            self._aborted.add(call)
            call.cancel()
        return len(calls)

    async def model_info(self, timeout: float) -> EngineModelInfo:
        """GetModelInfo."""
        try:
            info = await self._stub.GetModelInfo(common_pb2.GetModelInfoRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise translate(exc) from None
        return EngineModelInfo(
            name=info.name, source=info.hf_id, max_context=info.max_context, running=info.running,
            waiting=info.waiting, stand_in_for=info.stand_in_for,
            sampling_defaults=_fields(info.sampling_defaults) if info.HasField("sampling_defaults") else None,
            sampling_sources=dict(info.sampling_defaults.sources) if info.HasField("sampling_defaults") else None,
            quantization=info.quantization, status=info.status, error=info.error,
            state=common_pb2.ModelState.Name(info.state).removeprefix("MODEL_STATE_").lower(),
        )  # fmt: skip

    async def health(self, timeout: float) -> str:
        """'SERVING', 'NOT_SERVING' or 'UNREACHABLE: ...'."""
        return await check_health(self._channel, timeout)
