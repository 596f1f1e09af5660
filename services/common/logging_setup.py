"""Logging for every service: one format, the level from CLI/env, and the request id on each line.

The request id lives in a context variable so that every log line written while serving a request
(in the gateway or in an engine's servicer) carries it without passing it around.
"""

from __future__ import annotations

import contextvars
import logging
import sys

from .env import log_level_from

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

_RUST_LEVELS = {
    "trace": "DEBUG",
    "debug": "DEBUG",
    "info": "INFO",
    "warn": "WARNING",
    "error": "ERROR",
    "off": "CRITICAL",
}


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def normalize_level(level: str | None) -> str | None:
    """Accept Python names (INFO) and RUST_LOG-style values (`info`, `warn`, `proxyvision=debug`)."""
    if not level:
        return None
    value = level.strip()
    if "," in value or "=" in value:
        # RUST_LOG directives: take the most verbose level mentioned.
        parts = [p.split("=")[-1] for p in value.split(",") if p]
        order = ["trace", "debug", "info", "warn", "error", "off"]
        known = [p.lower() for p in parts if p.lower() in order]
        value = min(known, key=order.index) if known else "info"
    upper = _RUST_LEVELS.get(value.lower(), value.upper())
    if upper not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"unknown log level {level!r}")
    return upper


def setup_logging(service: str, level: str = "INFO") -> None:
    """Configure the root logger for one service process (called once, from `__main__`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s {service} [%(request_id)s] %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party chatter that drowns the lines operators grep for.
    for noisy in ("httpx", "httpcore", "urllib3", "filelock", "ContinuousBatchingLogger"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def setup_service_logging(service: str, cli_level: str | None, default: str = "INFO") -> str:
    """Resolve the level (--log-level > LOG_LEVEL > RUST_LOG > default), configure logging, return the
    level; a level that makes no sense exits with status 2."""
    try:
        level = normalize_level(log_level_from(cli_level)) or default
    except ValueError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
    setup_logging(service, level)
    return level


def route_model_library_logs() -> None:
    """In an engine: transformers' and huggingface_hub's messages go through our handler only, once each.

    Both libraries give their root logger a stderr handler of their own and let it propagate too, so each of
    their warnings was printed twice, once without our format (no time, no service, no level). transformers'
    "Loading weights" bars are off as well: on a launcher's pipe or a pod's log they are a stream of carriage
    returns, and the engine logs the load and its duration itself."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_default_handler()
    transformers_logging.enable_propagation()
    transformers_logging.disable_progress_bar()
    logging.getLogger("huggingface_hub").handlers.clear()
