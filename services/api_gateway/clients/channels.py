"""gRPC channels to the engines, and the standard health check every engine answers.

Every engine channel balances and retries the same way, so one target string can name one engine or
many replicas of it:

* `127.0.0.1:50051`: one engine (the launcher, the tests).
* `dns:///text-x.ns.svc.cluster.local:50051`: every pod behind a Kubernetes headless Service. The DNS
  resolver returns one address per ready pod and `round_robin` spreads calls over all of them. gRPC
  re-resolves when a connection closes, which the engines force now and then with
  `grpc.max_connection_age_ms` (services/common/grpc_server.py), so new pods get traffic too.
* `ipv4:10.0.0.1:50051,10.0.0.2:50051`: a fixed list, balanced the same way.

With a `tls:` section in models.yaml the channels are TLS (mTLS with a client certificate), built by
services/common/tls.py: the engines' certificates must name the host of the target (a Service's DNS name,
127.0.0.1) or `tls.server_name`.

A call that fails with UNAVAILABLE before it is committed (no response headers or messages have reached
us yet: the pod was gone, refused the connection, or was already draining) is retried on another
replica. A call that has started streaming is never retried: its tokens or captions were already seen.

That is `routing: round_robin`. With `routing: affinity` (clients/routing.py) the gateway picks the replica
itself: one channel per replica address (`open_replica_channel`), the same message limits, reconnect backoff
and TLS, but neither a balancer nor gRPC retries: which replica gets the next attempt is the ring's choice.
"""

from __future__ import annotations

import json

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.config import TlsSettings
from services.common.grpc_server import GRPC_OPTIONS, MAX_MESSAGE_BYTES
from services.common.tls import handshake_failure, open_aio_channel

# Attempts include the first one. Four covers a rolling update that takes down a few replicas at once;
# the backoff keeps the whole sequence well under a second, inside any sensible request deadline.
RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.05s",
    "maxBackoff": "0.5s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}

SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    # `[{}]` names every method of every service: Generate, Describe, GetModelInfo and health checks.
    "methodConfig": [{"name": [{}], "retryPolicy": RETRY_POLICY}],
    # No retryThrottling: it counts every UNAVAILABLE, committed streams cut by a dying pod included,
    # so one pod going away under load would switch retries off exactly when they are needed. Without
    # it the worst case is 4 quick local attempts when no replica is up at all.
}

RECONNECT_BACKOFF_MS = 2_000

CHANNEL_OPTIONS = [
    *GRPC_OPTIONS,
    ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
    ("grpc.enable_retries", 1),
    # A call stays retryable only while its request fits the retry buffer (default 256 KiB); images
    # make requests of several MiB, so the buffer is as large as the largest message we send.
    ("grpc.per_rpc_retry_buffer_size", MAX_MESSAGE_BYTES),
    # An engine that comes back at the same address (a restart under the launcher, or a pod that was not
    # ready yet) is reconnected within 2 s, not after a backoff that grows to 2 minutes: one connection attempt
    # every 2 s to an engine that is down costs nothing next to a gateway that 503s for seconds after it is up.
    ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS),
    # A connection that closes (an engine's max connection age, a pod gone) asks for a new DNS lookup;
    # allow one every 10 s (default 30 s) so pods that came or went are seen sooner.
    ("grpc.dns_min_time_between_resolutions_ms", 10_000),
]


# One address per channel: no balancing, and no gRPC retries (the affinity router fails over to the key's next
# owner instead of retrying the one that refused). The reconnect backoff stays short, as above.
REPLICA_CHANNEL_OPTIONS = [
    *GRPC_OPTIONS,
    ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"pick_first": {}}]})),
    ("grpc.enable_retries", 0),
    ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS),
]


def open_channel(target: str, tls: TlsSettings | None = None) -> grpc.aio.Channel:
    """The one place engine channels are made: aio, plaintext or TLS as `tls` says, raised message limits
    (images travel over it), round-robin over every address `target` resolves to, retries of uncommitted
    UNAVAILABLE calls."""
    return open_aio_channel(target, tls, CHANNEL_OPTIONS)


def open_replica_channel(
    address: str, tls: TlsSettings | None = None, *, server_name: str | None = None
) -> grpc.aio.Channel:
    """A channel to one replica (`ipv4:10.0.0.5:50051`, `ipv6:[fd00::5]:50051`), for the affinity router. With
    TLS, `server_name` (the Service's DNS name the pod's address came from) is the name its certificate must
    carry, unless `tls.server_name` says otherwise: a pod's certificate names its Service, not its IP."""
    options = list(REPLICA_CHANNEL_OPTIONS)
    if tls is not None and not tls.server_name and server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return open_aio_channel(address, tls, options)


async def check_health(channel: grpc.aio.Channel, timeout: float, *, wait_for_ready: bool = False) -> str:
    """'SERVING', 'NOT_SERVING', or 'UNREACHABLE: <why>' (e.g. 'UNREACHABLE: unavailable', or
    'UNREACHABLE: TLS handshake failed: CERTIFICATE_VERIFY_FAILED: ...' when the certificates do not fit).
    `wait_for_ready`: a channel between connection attempts (its engine was down) waits up to `timeout` for the
    next one instead of failing at once, so an engine that has just come back is seen."""
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=timeout, wait_for_ready=wait_for_ready
        )
    except grpc.aio.AioRpcError as exc:
        return f"UNREACHABLE: {handshake_failure(exc.details()) or exc.code().name.lower()}"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
