"""A running engine process: the gRPC server, the metrics exporter and the engine, started and drained together.

Both engines subclass `EngineServer`; an engine object provides `start()`, `stop()`, `lifecycle` (the
shared ModelLifecycle) and `abort_all(reason)` (end the requests still running with UNAVAILABLE).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from .config import TlsSettings
from .grpc_server import create_grpc_server
from .metrics import EngineMetrics, start_metrics_server
from .tls import bind_port, server_transport

log = logging.getLogger(__name__)

ABORT_FLUSH_SECS = 5.0  # for aborted calls to send their final status


@dataclass(frozen=True)
class EngineOptions:
    """How an engine process serves (CLI > env > defaults, resolved in `engine_main`)."""

    host: str = "127.0.0.1"
    port: int = 0  # 0 picks a free port
    device: str = "auto"
    metrics_port: int | None = None  # None: no exporter; 0: a free port
    drain_grace_secs: float = 30.0
    max_connection_age_ms: int = 0  # 0: connections never age out
    tls: TlsSettings | None = None  # None: plaintext; else TLS (mTLS with tls.require_client_cert)


class EngineServer:
    """gRPC server + engine + metrics exporter.

    `start()` binds the port, serves health (NOT_SERVING while loading) and reflection at once, then
    loads the model; the engine reports SERVING / NOT_SERVING through `report_serving`.
    `drain()` is the SIGTERM path: NOT_SERVING, refuse new calls, let running ones finish for the
    grace period, end the rest with UNAVAILABLE, stop.
    """

    def __init__(self, service_full_name: str, options: EngineOptions, metrics: EngineMetrics) -> None:
        self.options = options
        self.metrics = metrics
        self.server, self._health = create_grpc_server(
            [service_full_name], max_connection_age_ms=options.max_connection_age_ms
        )
        self._pending: set = set()
        # A TLS setting the engine cannot use (no certificate, an unreadable file) raises ConfigError here.
        self.port = bind_port(self.server, f"{options.host}:{options.port}", options.tls)
        if self.port == 0:
            raise OSError(f"cannot bind {options.host}:{options.port} (in use?)")
        self.address = f"{options.host}:{self.port}"
        self.transport = server_transport(options.tls)  # "plaintext", "TLS" or "mTLS (...)", for the logs
        self.metrics_port: int | None = None
        self._metrics_server = None
        self.engine = None

    def engine_hooks(self, idle_unload_secs: int) -> dict:
        """What this server gives the engine it serves (a `ModelEngine`'s keyword arguments): the device, the idle
        unload, health that follows the engine's state, and the metrics it exports."""
        return {
            "device": self.options.device,
            "idle_unload_secs": idle_unload_secs,
            "on_serving_change": self.report_serving,
            "metrics": self.metrics,
        }

    def report_serving(self, serving: bool) -> None:
        """Callback for the engine: set the health status (from the event loop)."""
        if serving and self.engine is not None and self.engine.lifecycle.draining:
            return  # a load that finishes during a drain must not turn health back on
        task = asyncio.get_running_loop().create_task(self._health.set(serving))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def start(self) -> None:
        """Serve, export metrics, then load."""
        await self._health.set(False)
        await self.server.start()
        if self.options.metrics_port is not None:
            self._metrics_server, self.metrics_port = start_metrics_server(
                self.metrics.registry, self.options.host, self.options.metrics_port
            )
        await self.engine.start()

    async def drain(self) -> None:
        """Stop taking work, let running requests finish within the grace period, abort the rest, stop."""
        grace = self.options.drain_grace_secs
        lifecycle = self.engine.lifecycle
        log.info("Draining: %d request(s) in flight, grace %.0fs", lifecycle.active, grace)
        await self._health.set(False)
        lifecycle.begin_drain()
        # Stop at the transport at once (GOAWAY): round-robin clients drop this replica now instead of
        # retrying new calls into it. Calls in flight go on; gRPC's own hard cancel comes only after our
        # grace and abort below, so every call still ends with a status of ours.
        transport_stop = asyncio.create_task(self.server.stop(grace + ABORT_FLUSH_SECS + 1.0))
        if not await lifecycle.wait_idle(grace):
            log.warning("Drain grace of %.0fs over: aborting %d request(s)", grace, lifecycle.active)
            self.engine.abort_all("The engine is shutting down; the request was aborted after the drain grace period")
            await lifecycle.wait_idle(ABORT_FLUSH_SECS)  # the aborted calls send their status
        await transport_stop
        await self.stop(grace=0)

    async def stop(self, grace: float = 5.0) -> None:
        """Refuse new calls, let running ones finish for `grace` seconds, then free the model."""
        await self._health.set(False)
        await self.server.stop(grace)
        # The metrics server's shutdown waits out its poll interval (half a second): let it run beside the
        # model's teardown rather than after it.
        metrics_stop = asyncio.create_task(asyncio.to_thread(self._stop_metrics))
        await self.engine.stop()
        await metrics_stop

    def _stop_metrics(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
