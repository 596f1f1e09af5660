"""What every engine's gRPC server shares: options, health, reflection, request ids, error aborts.

Health and reflection are always on, so `grpcurl -plaintext HOST:PORT list` and a streamed call work
with no proto files at hand, and Kubernetes probes use the standard `grpc.health.v1` service.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .errors import ModelNotFoundError, ProxyVisionError
from .lifecycle import ModelState
from .logging_setup import request_id_var
from .pb.proxyvision.v1 import common_pb2

# gRPC's default receive limit is 4 MiB; images and long chats are larger.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]
REQUEST_ID_KEY = "x-request-id"

# The engines' lifecycle states as GetModelInfo reports them.
MODEL_STATE_TO_PB = {
    ModelState.LOADING: common_pb2.MODEL_STATE_LOADING,
    ModelState.READY: common_pb2.MODEL_STATE_READY,
    ModelState.UNLOADED: common_pb2.MODEL_STATE_UNLOADED,
    ModelState.FAILED: common_pb2.MODEL_STATE_FAILED,
}


def server_options(max_connection_age_ms: int) -> list[tuple[str, int]]:
    """Message limits plus a maximum connection age: clients that balance over a headless Service (DNS)
    only re-resolve when a connection closes, so closing them now and then lets new pods get traffic."""
    if max_connection_age_ms <= 0:
        return list(GRPC_OPTIONS)
    return [
        *GRPC_OPTIONS,
        ("grpc.max_connection_age_ms", max_connection_age_ms),
        # Calls still running when the age is reached get this long to finish.
        ("grpc.max_connection_age_grace_ms", 10 * 60 * 1000),
    ]


def create_grpc_server(
    service_full_names: Iterable[str], *, max_connection_age_ms: int = 0
) -> tuple[grpc.aio.Server, HealthReporter]:
    """An aio server with reflection for `service_full_names` and the health service registered."""
    server = grpc.aio.server(options=server_options(max_connection_age_ms))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = list(service_full_names)
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )
    return server, HealthReporter(health_servicer, names)


class HealthReporter:
    """Sets SERVING / NOT_SERVING for the overall server ('') and each of its services."""

    def __init__(self, servicer, service_names: list[str]) -> None:
        self._servicer = servicer
        self._names = ["", *service_names]

    async def set(self, serving: bool) -> None:
        """Report the engine's state to health checkers."""
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in self._names:
            await self._servicer.set(name, status)


def bind_request_id(context: grpc.aio.ServicerContext, fallback: str = "") -> str:
    """Take the caller's x-request-id (or make one) and put it on every log line of this call."""
    metadata = dict(context.invocation_metadata() or ())
    request_id = metadata.get(REQUEST_ID_KEY) or fallback or f"req-{uuid.uuid4().hex[:16]}"
    request_id_var.set(request_id)
    return request_id


async def ensure_model(context: grpc.aio.ServicerContext, requested: str, served: str) -> None:
    """Abort with NOT_FOUND when a request names a model this engine does not serve ('' means this one)."""
    if requested and requested != served:
        await abort_with(
            context,
            ModelNotFoundError(
                f"The model '{requested}' does not exist on this engine (it serves '{served}')", param="model"
            ),
        )


async def abort_with(context: grpc.aio.ServicerContext, error: ProxyVisionError) -> None:
    """End the call with the error's status; code and param travel as trailing metadata."""
    context.set_trailing_metadata(error.grpc_trailers())
    await context.abort(error.grpc_status, error.message)


class EngineCalls:
    """What every RPC of an engine's servicer does around its work (mixed into both servicers, which hold the
    engine as `_engine`)."""

    def __init__(self, engine) -> None:
        self._engine = engine

    @asynccontextmanager
    async def _call(self, context: grpc.aio.ServicerContext, request, rpc: str) -> AsyncIterator[str]:
        """Bind the call's request id (yielded) and refuse a model this engine does not serve; our errors raised
        inside, before or after the first message, end the call with their status (logged as refused)."""
        request_id = bind_request_id(context, request.request_id)
        await ensure_model(context, request.model, self._engine.entry.name)
        try:
            yield request_id
        except ProxyVisionError as error:
            logging.getLogger(type(self).__module__).info("%s refused: %s", rpc, error.message)
            await abort_with(context, error)
