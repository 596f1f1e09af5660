"""`python -m services.api_gateway --models-config models.yaml --port 2000 [--ui-server]`.

SIGTERM / Ctrl-C drain the gateway (see server.py) and exit 0."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping

import uvicorn

from services.common.config import ConfigError, ModelsConfig, load_models_config
from services.common.env import first_set, models_config_path, parse_api_keys, parse_endpoints
from services.common.logging_setup import setup_service_logging
from services.common.tls import add_tls_arguments, channel_credentials, client_transport, resolve_tls

from .app import build_app
from .server import DrainingServer
from .state import Drain

DEFAULT_DRAIN_GRACE_SECS = 30.0

log = logging.getLogger("services.api_gateway")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m services.api_gateway", description=__doc__)
    parser.add_argument("--models-config", help="models.yaml (env PROXYVISION_MODELS_CONFIG)")
    parser.add_argument("--host", help="bind address (env PROXYVISION_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (env PROXYVISION_PORT, default 2000)")
    parser.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="NAME=TARGET",
        help="engine address of a model, e.g. ministral-3-3b-reasoning=127.0.0.1:50051 "
        "(repeatable; env PROXYVISION_ENDPOINTS='a=h:p,b=h:p'; overrides models.yaml)",
    )
    parser.add_argument("--ui-server", action="store_true", help="serve the web UI at /")
    parser.add_argument(
        "--drain-grace-secs",
        type=float,
        help="on SIGTERM, how long running requests may finish "
        f"(env PROXYVISION_DRAIN_GRACE_SECS, default {DEFAULT_DRAIN_GRACE_SECS:.0f})",
    )
    parser.add_argument(
        "--request-timeout-secs",
        type=float,
        help="deadline of one engine call (env "
        "PROXYVISION_REQUEST_TIMEOUT_SECS; default gateway.request_timeout_secs of models.yaml, 600)",
    )
    parser.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="KEY",
        help="a key clients must send as 'Authorization: Bearer KEY' on /v1 (repeatable or "
        "comma-separated; env PROXYVISION_API_KEY; replaces gateway.api_keys of models.yaml). "
        "Other users can read a command line: prefer the env or a key file",
    )
    parser.add_argument("--log-level", help="env LOG_LEVEL or RUST_LOG, default INFO")
    add_tls_arguments(parser, side="gateway")
    return parser.parse_args(argv)


def with_api_keys(config: ModelsConfig, cli_keys: list[str], environ: Mapping[str, str] | None = None) -> ModelsConfig:
    """--api-key, else PROXYVISION_API_KEY, replaces gateway.api_keys (the keys of api_keys_file still count)."""
    keys = first_set(",".join(cli_keys) or None, "PROXYVISION_API_KEY", environ=environ)
    if keys is None:
        return config
    gateway = config.gateway.model_copy(update={"api_keys": parse_api_keys(keys)})
    return config.model_copy(update={"gateway": gateway})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    level = setup_service_logging("api_gateway", args.log_level)
    try:
        config = load_models_config(models_config_path(args.models_config))
        endpoints = parse_endpoints(first_set(",".join(args.endpoint) or None, "PROXYVISION_ENDPOINTS"))
        config = config.with_endpoints(endpoints)
        config = config.model_copy(update={"tls": resolve_tls(config.tls, args)})
        if config.tls is not None:
            channel_credentials(config.tls)  # reads the files now: a missing one is a config error at start
        timeout = first_set(args.request_timeout_secs, "PROXYVISION_REQUEST_TIMEOUT_SECS")
        if timeout is not None:
            config = config.model_copy(
                update={"gateway": config.gateway.model_copy(update={"request_timeout_secs": float(timeout)})}
            )
        config = with_api_keys(config, args.api_key)
        grace = float(
            first_set(args.drain_grace_secs, "PROXYVISION_DRAIN_GRACE_SECS", default=DEFAULT_DRAIN_GRACE_SECS)
        )
        drain = Drain()
        app = build_app(config, ui_server=args.ui_server, drain=drain)
    except (ConfigError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    log.info("Engine channels: %s", client_transport(config.tls))
    host = first_set(args.host, "PROXYVISION_HOST", default="127.0.0.1")
    port = int(first_set(args.port, "PROXYVISION_PORT", default=2000))
    # loop="asyncio": grpc.aio supports the standard event loop; never let an installed uvloop be picked.
    server_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=level.lower(),
        access_log=False,
        log_config=None,
        loop="asyncio",
        timeout_graceful_shutdown=5,
    )
    DrainingServer(server_config, app, drain, grace).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
