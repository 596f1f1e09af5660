"""Every environment variable ProxyVision reads, with its default, and the precedence rule.

Precedence is CLI > environment > models.yaml > defaults, resolved once in each `__main__`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from .config import api_key_problem

# name -> (default, meaning)
ENVIRONMENT: dict[str, tuple[str | None, str]] = {
    "PROXYVISION_MODELS_CONFIG": (None, "Path of models.yaml when --models-config is not given."),
    "PROXYVISION_HOST": ("127.0.0.1", "Address the service binds."),
    "PROXYVISION_PORT": (None, "Port the service binds (gateway 2000, text engine 50051, vision engine 50052)."),
    "PROXYVISION_DEVICE": ("auto", "cpu, cuda, cuda:N or auto (cuda when available)."),
    "PROXYVISION_ENDPOINTS": (
        None,
        "Engine addresses, 'name=host:port,name2=dns:///svc:50051'; overrides models.yaml.",
    ),
    "PROXYVISION_METRICS_PORT": (
        None,
        "Engines: port of the Prometheus exporter (/metrics); unset: none; 0: a free port.",
    ),
    "PROXYVISION_DRAIN_GRACE_SECS": ("30", "On SIGTERM, seconds running requests may finish before they are aborted."),
    "PROXYVISION_GRPC_MAX_CONNECTION_AGE_MS": (
        "300000",
        "Engines: close client connections after this long so DNS-balanced clients re-resolve (0: never).",
    ),
    "PROXYVISION_REQUEST_TIMEOUT_SECS": (
        None,
        "Gateway: deadline of one engine call (overrides gateway.request_timeout_secs).",
    ),
    "PROXYVISION_API_KEY": (
        None,
        "Gateway: API key(s) clients must send as 'Authorization: Bearer <key>', "
        "comma-separated; replaces gateway.api_keys (keys of gateway.api_keys_file still count).",
    ),
    # TLS on the gRPC hop (services/common/tls.py); each overrides its tls.* key of models.yaml, and any of them
    # turns TLS on. Paths are relative to the working directory.
    "PROXYVISION_TLS_CA": (
        None,
        "PEM CA bundle: the gateway verifies engines with it; engines verify client certificates.",
    ),
    "PROXYVISION_TLS_SERVER_CERT": (
        None,
        "Engines: PEM certificate chain they serve (with PROXYVISION_TLS_SERVER_KEY).",
    ),
    "PROXYVISION_TLS_SERVER_KEY": (None, "Engines: PEM private key of the server certificate."),
    "PROXYVISION_TLS_CLIENT_CERT": (None, "Gateway: PEM certificate it presents to the engines (mTLS)."),
    "PROXYVISION_TLS_CLIENT_KEY": (None, "Gateway: PEM private key of the client certificate."),
    "PROXYVISION_TLS_REQUIRE_CLIENT_CERT": (
        "false",
        "Engines: true demands a client certificate signed by the CA (mTLS).",
    ),
    "PROXYVISION_TLS_SERVER_NAME": (
        None,
        "Gateway: name the engines' certificates must carry instead of the dialled host.",
    ),
    "PROXYVISION_BACKEND": (
        None,
        "Launcher: 'transformers' or 'vllm' for every text model (overrides models.yaml `backend`, like --backend).",
    ),
    "PROXYVISION_VLLM_PYTHON": (
        None,
        "Launcher: the python that runs `backend: vllm` engines (default: its own if it has vLLM, else .venv-vllm's).",
    ),
    "LOG_LEVEL": ("INFO", "Log level (DEBUG, INFO, WARNING, ERROR)."),
    "RUST_LOG": (None, "Accepted for the brief's users (info, debug, warn...); LOG_LEVEL wins if both are set."),
}


def first_set(cli_value, env_name: str, file_value=None, default=None, environ: Mapping[str, str] | None = None):
    """Apply the precedence rule to one setting."""
    environ = os.environ if environ is None else environ
    if cli_value is not None:
        return cli_value
    if environ.get(env_name):
        return environ[env_name]
    if file_value is not None:
        return file_value
    return default


def log_level_from(cli_value: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The raw log level: --log-level, else LOG_LEVEL, else RUST_LOG."""
    environ = os.environ if environ is None else environ
    return cli_value or environ.get("LOG_LEVEL") or environ.get("RUST_LOG")


def parse_endpoints(value: str | None) -> dict[str, str]:
    """Parse PROXYVISION_ENDPOINTS / --endpoint values: 'name=target,name2=target2'.

    A piece without '=' continues the previous target, so gRPC address lists keep their commas:
    'a=ipv4:10.0.0.1:50051,10.0.0.2:50051,b=dns:///b:50051'."""
    if not value:
        return {}
    result: dict[str, str] = {}
    last = None
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, target = item.partition("=")
        if not sep and last is not None:
            result[last] += f",{item}"
            continue
        if not sep or not name or not target:
            raise ValueError(f"bad endpoint {item!r}: expected name=host:port")
        last = name.strip()
        result[last] = target.strip()
    return result


def parse_api_keys(value: str | None) -> list[str]:
    """Parse --api-key / PROXYVISION_API_KEY values: 'key1,key2' (spaces around a key ignored).

    ValueError, never naming the key, for one that cannot be sent as a Bearer token, or for a value
    without any key (',' would otherwise switch authentication off)."""
    keys = [key.strip() for key in (value or "").split(",") if key.strip()]
    if value and not keys:
        raise ValueError("--api-key / PROXYVISION_API_KEY is set but names no key")
    for index, key in enumerate(keys):
        problem = api_key_problem(key)
        if problem:
            raise ValueError(f"API key {index + 1} of --api-key / PROXYVISION_API_KEY: {problem}")
    return keys


def models_config_path(cli_value: str | None, environ: Mapping[str, str] | None = None) -> str:
    """--models-config, else PROXYVISION_MODELS_CONFIG; ValueError when neither is given."""
    path = first_set(cli_value, "PROXYVISION_MODELS_CONFIG", environ=environ)
    if not path:
        raise ValueError("no models config: pass --models-config or set PROXYVISION_MODELS_CONFIG")
    return path
