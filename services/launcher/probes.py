"""Questions the launcher asks the outside world: is a port free, is a child ready.

Every probe answers quickly (short timeouts) and never raises for "not yet": the supervisor calls
them in its watch loop, which must keep noticing exits and signals.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.config import TlsSettings
from services.common.pb.proxyvision.v1 import common_pb2
from services.common.tls import open_sync_channel

from .plan import ProcessSpec

PROBE_TIMEOUT_SECS = 1.0
# Both engine services answer GetModelInfo with the same ModelInfo message.
_MODEL_INFO_METHOD = {
    "text_engine": "/proxyvision.v1.TextEngine/GetModelInfo",
    "vision_engine": "/proxyvision.v1.VisionEngine/GetModelInfo",
}


@dataclass(frozen=True)
class Readiness:
    """One probe's answer: ready, failed for good (with the engine's reason), or not yet (with what it is doing)."""

    ready: bool = False
    failed: str | None = None  # the model failed to load: waiting longer cannot help
    status: str = ""  # e.g. "downloading model.safetensors 1.2/7.5 GB", for the timeout message


_WILDCARDS = ("", "0.0.0.0", "::")


def connect_host(bind_host: str) -> str:
    """Where to reach a server bound to `bind_host` from this machine (as a URL/target host part)."""
    if bind_host in _WILDCARDS:
        return "127.0.0.1"
    return f"[{bind_host}]" if ":" in bind_host else bind_host


def port_is_free(host: str, port: int) -> bool:
    """True if a server could bind host:port now (a listener there, of any process, makes it False)."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return False  # an unusable host: the child would fail to bind too
    family, socktype, proto, _, address = infos[0]
    with socket.socket(family, socktype, proto) as sock:
        # Like uvicorn and gRPC: a port held only by TIME_WAIT connections of a past run is usable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError:
            return False
    return True


def ports_in_use(specs: Sequence[ProcessSpec]) -> list[ProcessSpec]:
    """The children whose port something else already holds (checked before anything starts)."""
    return [spec for spec in specs if not port_is_free(spec.host, spec.port)]


def grpc_serving(target: str, timeout: float = PROBE_TIMEOUT_SECS, tls: TlsSettings | None = None) -> bool:
    """True if the engine at `target` answers grpc.health.v1 Check('') with SERVING (model loaded)."""
    with open_sync_channel(target, tls) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except grpc.RpcError:
            return False  # not listening yet, or not up: both mean "not ready"
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def model_info(
    target: str, kind: str, timeout: float = PROBE_TIMEOUT_SECS, tls: TlsSettings | None = None
) -> common_pb2.ModelInfo | None:
    """The engine's GetModelInfo answer, or None while it does not answer (still starting)."""
    method = _MODEL_INFO_METHOD.get(kind)
    if method is None:
        return None
    with open_sync_channel(target, tls) as channel:
        call = channel.unary_unary(
            method,
            request_serializer=common_pb2.GetModelInfoRequest.SerializeToString,
            response_deserializer=common_pb2.ModelInfo.FromString,
        )
        try:
            return call(common_pb2.GetModelInfoRequest(), timeout=timeout)
        except grpc.RpcError:
            return None


def engine_readiness(
    target: str, kind: str, timeout: float = PROBE_TIMEOUT_SECS, tls: TlsSettings | None = None
) -> Readiness:
    """SERVING is ready; otherwise GetModelInfo tells a model still loading from one that failed to load."""
    if grpc_serving(target, timeout, tls):
        return Readiness(ready=True)
    info = model_info(target, kind, timeout, tls)
    if info is None:
        return Readiness(status="starting")
    if info.state == common_pb2.MODEL_STATE_FAILED:
        return Readiness(failed=info.error or info.status or "unknown error")
    return Readiness(status=info.status or common_pb2.ModelState.Name(info.state).removeprefix("MODEL_STATE_").lower())


def http_ready(url: str, timeout: float = PROBE_TIMEOUT_SECS, key: str | None = None) -> bool:
    """True if GET `url` answers 200 (the gateway's /ready: every engine SERVING); `key` is sent as a Bearer
    token (a gateway whose /ready needs one)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        return httpx.get(url, timeout=timeout, headers=headers).status_code == 200
    except httpx.HTTPError:
        return False


def is_ready(spec: ProcessSpec) -> Readiness:
    """The readiness probe of one child, chosen by its `health_kind`."""
    address = f"{connect_host(spec.host)}:{spec.port}"
    if spec.health_kind == "grpc":
        return engine_readiness(address, spec.kind, tls=spec.tls)  # the engines' TLS, from the plan
    if spec.health_kind == "http":
        return Readiness(ready=http_ready(f"http://{address}/ready", key=spec.probe_key))
    return Readiness(ready=True)
