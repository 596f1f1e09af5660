"""The command line both engines share: `--models-config F --model NAME --host H --port P --device D
--metrics-port M --drain-grace-secs G [--tls-server-cert C --tls-server-key K [--tls-ca CA --tls-require-client-cert]]`.

Resolves CLI > env > file > defaults once, sets up logging, runs the server until SIGINT/SIGTERM, then
drains it (running requests get the grace period) and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Protocol

from .config import ConfigError, ModelEntry, ModelsConfig, load_models_config
from .engine_server import EngineOptions, EngineServer
from .env import first_set, models_config_path
from .logging_setup import route_model_library_logs, setup_service_logging
from .tls import add_tls_arguments, resolve_tls

DEFAULT_DRAIN_GRACE_SECS = 30.0
DEFAULT_MAX_CONNECTION_AGE_MS = 5 * 60 * 1000


class ServerFactory(Protocol):
    """An engine's server class (TextEngineServer, VisionEngineServer)."""

    def __call__(self, entry: ModelEntry, options: EngineOptions, *, idle_unload_secs: int) -> EngineServer: ...


def named_model(config: ModelsConfig, name: str) -> ModelEntry:
    """The entry called `name` (or aliased so); ConfigError when there is none."""
    try:
        return config.model(name)
    except KeyError:
        raise ConfigError(f"no model named {name!r}") from None


def parse_args(prog: str, default_port: int, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--models-config", help="models.yaml (env PROXYVISION_MODELS_CONFIG)")
    parser.add_argument("--model", help="name of the model to serve")
    parser.add_argument("--host", help="bind address (env PROXYVISION_HOST, default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, help=f"port (env PROXYVISION_PORT, default {default_port}; 0 picks a free one)"
    )
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], help="env PROXYVISION_DEVICE, default auto")
    parser.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics at http://HOST:PORT/metrics "
        "(env PROXYVISION_METRICS_PORT; default: no exporter; 0 picks a free port)",
    )
    parser.add_argument(
        "--drain-grace-secs",
        type=float,
        help="on SIGTERM, how long running requests may finish "
        f"(env PROXYVISION_DRAIN_GRACE_SECS, default {DEFAULT_DRAIN_GRACE_SECS:.0f})",
    )
    parser.add_argument("--log-level", help="env LOG_LEVEL or RUST_LOG, default INFO")
    add_tls_arguments(parser, side="engine")
    return parser.parse_args(argv)


def resolve_options(args: argparse.Namespace, default_port: int, config: ModelsConfig | None = None) -> EngineOptions:
    """CLI > env > defaults (> models.yaml for tls) for how the engine serves."""
    metrics_port = first_set(args.metrics_port, "PROXYVISION_METRICS_PORT")
    return EngineOptions(
        host=first_set(args.host, "PROXYVISION_HOST", default="127.0.0.1"),
        port=int(first_set(args.port, "PROXYVISION_PORT", default=default_port)),
        device=first_set(args.device, "PROXYVISION_DEVICE", default="auto"),
        metrics_port=None if metrics_port is None else int(metrics_port),
        drain_grace_secs=float(
            first_set(args.drain_grace_secs, "PROXYVISION_DRAIN_GRACE_SECS", default=DEFAULT_DRAIN_GRACE_SECS)
        ),
        max_connection_age_ms=int(
            first_set(None, "PROXYVISION_GRPC_MAX_CONNECTION_AGE_MS", default=DEFAULT_MAX_CONNECTION_AGE_MS)
        ),
        tls=resolve_tls(config.tls if config is not None else None, args),
    )


def engine_main(
    *,
    service: str,
    default_port: int,
    pick_model: Callable[[ModelsConfig, str | None], ModelEntry],
    server: ServerFactory,
    argv: list[str] | None = None,
) -> int:
    """Entry point of `python -m services.<service>`; returns the exit code."""
    args = parse_args(f"python -m services.{service}", default_port, argv)
    setup_service_logging(service, args.log_level)
    route_model_library_logs()
    log = logging.getLogger(f"services.{service}")
    try:
        config = load_models_config(models_config_path(args.models_config))
        entry = pick_model(config, args.model)
        options = resolve_options(args, default_port, config)
    except (ConfigError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    try:
        return asyncio.run(_serve(server, config, entry, options, log))
    except ConfigError as exc:  # the TLS files are read when the port is bound
        log.error("%s", exc)
        return 2
    except OSError as exc:
        log.error("%s", exc)
        return 1


async def _serve(new_server: ServerFactory, config: ModelsConfig, entry, options: EngineOptions, log) -> int:
    server = new_server(entry, options, idle_unload_secs=config.idle_unload_secs_for(entry))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    log.info("%s for %s listening on %s (%s)", type(server).__name__, entry.name, server.address, server.transport)
    starting = asyncio.create_task(server.start())
    # A signal during a long model load still drains and exits 0 (nothing is running yet).
    await asyncio.wait({starting, asyncio.create_task(stopping.wait())}, return_when=asyncio.FIRST_COMPLETED)
    if starting.done():
        starting.result()  # a bind error of the metrics port surfaces here
        await stopping.wait()
    log.info("Shutting down")
    await server.drain()
    if not starting.done():
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
    log.info("Stopped")
    return 0
