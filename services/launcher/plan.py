"""From a models.yaml to the processes to start: pure (no I/O but `write_config`), so it is easy to test.

Ports are deterministic: text engines get `engine_port_base`, `+1`, ... in file order (the first on
50051), the vision engine the next one (50052 with one text model), the gateway `--port`. Each engine
exports Prometheus metrics on its port + 1000 (51051, ...); the gateway on its own `/metrics`. The launcher
runs every engine itself, on 127.0.0.1, so it overrides any `endpoint` the file gives. The resolved
config (endpoints filled in, local paths absolute) is what every child reads.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from services.common.config import ModelsConfig, TlsSettings, parse_models_config
from services.common.tls import resolve_tls

ENGINE_HOST = "127.0.0.1"  # engines are private to the launcher; only the gateway faces clients
METRICS_PORT_OFFSET = 1000  # an engine's metrics port is its gRPC port + this

Kind = Literal["text_engine", "vision_engine", "api_gateway"]
HealthKind = Literal["grpc", "http", "none"]


@dataclass(frozen=True)
class ProcessSpec:
    """One child process and how to tell that it is ready."""

    name: str  # what logs call it: "text_engine[ministral-3-3b-reasoning]", "api_gateway"
    kind: Kind
    argv: tuple[str, ...]
    port: int
    host: str = ENGINE_HOST  # the address it binds
    health_kind: HealthKind = "none"  # grpc: grpc.health.v1 Check; http: GET /ready; none: never probed
    metrics_port: int | None = None  # engines: where their Prometheus exporter listens
    # False for the vision engine: if its model fails to load, text is still served (the brief's
    # degradation, and the gateway's /ready needs the text engines only); True stops the stack.
    required: bool = True
    # Engines: how to dial them (the readiness probe must speak the TLS they serve); None: plaintext.
    tls: TlsSettings | None = None
    # The gateway with `api_keys_protect_health`: the key its readiness probe sends (never shown in a repr).
    probe_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class StackOptions:
    """What the CLI decided (CLI > env > defaults already applied)."""

    host: str = "127.0.0.1"
    port: int = 2000
    engine_port_base: int = 50051
    device: str = "auto"
    log_level: str = "INFO"
    ui_server: bool = False
    drain_grace_secs: float = 30.0
    # The python that runs `backend: vllm` engines (services/common/backends.py); None when no model uses vLLM.
    vllm_python: str | None = None


@dataclass(frozen=True)
class StackPlan:
    """The resolved config and the children, engines first and the gateway last."""

    config: ModelsConfig
    processes: list[ProcessSpec]
    skipped_vision: str | None = None  # name of a vision model left out because its engine is missing


# Release suffixes a served name leaves out: a YYMM date code (Ministral-3-3B-Reasoning-2512) and the instruct/chat
# tuning marker (Qwen2-VL-7B-Instruct), as the brief names its models (`ministral-3-3b-reasoning`, `qwen2-vl-7b`).
_RELEASE_SUFFIX = re.compile(r"-(\d{4}|instruct|chat|it)$")


def served_name(source: str) -> str:
    """The name a model given by hf_id or path is served as: its last path component, lower-cased, without
    release suffixes (`mistralai/Ministral-3-3B-Reasoning-2512` -> `ministral-3-3b-reasoning`)."""
    name = Path(source.rstrip("/")).name.lower()
    while (shorter := _RELEASE_SUFFIX.sub("", name)) != name and shorter:
        name = shorter
    return name


def entry_for_model_id(source: str, *, vision: bool = False) -> dict:
    """A models.yaml entry for an hf_id or a local directory, named as the brief names its models
    (`served_name`); the hub id and the plain lower-cased last component are its aliases."""
    name = served_name(source)
    aliases = [] if Path(source).exists() else [source]
    aliases += [Path(source.rstrip("/")).name.lower()]
    entry: dict = {"name": name, "params": {"dtype": "auto"}}
    if unique := [a for a in dict.fromkeys(aliases) if a != name]:
        entry["aliases"] = unique
    if Path(source).exists():
        entry["local_path"] = str(Path(source).resolve())
    else:
        entry["hf_id"] = source
    if vision:
        entry["capabilities"] = {"vision_mode": "proxy"}
    return entry


def config_from_model_ids(text_model: str, vision_model: str | None) -> ModelsConfig:
    """The `--m ID [--vision-model ID]` fallback: a config with default parameters."""
    models = [entry_for_model_id(text_model)]
    if vision_model:
        models.append(entry_for_model_id(vision_model, vision=True))
    return parse_models_config({"models": models}, "--m/--vision-model")


def engine_ports(config: ModelsConfig, base: int) -> dict[str, int]:
    """Model name -> engine port: text models from `base` in file order, then the vision model."""
    order = [*config.text_models, *config.vision_models]
    return {entry.name: base + i for i, entry in enumerate(order)}


def plan_stack(
    config: ModelsConfig, options: StackOptions, resolved_config_path: Path, *, vision_engine_installed: bool = True
) -> StackPlan:
    """Assign ports, fill in endpoints, and list the processes (engines first, gateway last).

    ValueError if the ports cannot work (out of range, or the gateway's is also an engine's).

    Without an installed vision engine the vision model is dropped from the resolved config: the
    gateway then serves text and answers image requests with "vision unavailable", instead of
    waiting forever for an engine nobody starts.
    """
    skipped = None
    if config.vision_model is not None and not vision_engine_installed:
        skipped = config.vision_model.name
        default = None if config.default_model == skipped else config.default_model
        config = config.model_copy(update={"models": config.text_models, "default_model": default})
    ports = engine_ports(config, options.engine_port_base)
    _check_ports(options.port, {**ports, **{f"{n} (metrics)": p + METRICS_PORT_OFFSET for n, p in ports.items()}})
    endpoints = {name: f"{ENGINE_HOST}:{port}" for name, port in ports.items()}
    # TLS: the file's section with any PROXYVISION_TLS_* overrides, written into the resolved config so the
    # children (which inherit the environment anyway) and the launcher's probes agree. The engines are dialled
    # as 127.0.0.1: their certificate must name it, or tls.server_name the name it carries.
    resolved = config.with_endpoints(endpoints).model_copy(update={"tls": resolve_tls(config.tls)})
    common = (
        "--models-config",
        str(resolved_config_path),
        "--log-level",
        options.log_level,
        "--drain-grace-secs",
        f"{options.drain_grace_secs:g}",
    )
    processes = [
        _engine(
            kind,
            entry.name,
            ports[entry.name],
            common,
            options.device,
            resolved.tls,
            python=options.vllm_python if entry.backend == "vllm" else sys.executable,
        )
        for kind, entries in (("text_engine", resolved.text_models), ("vision_engine", resolved.vision_models))
        for entry in entries
    ]
    # --endpoint flags as well as the file: they beat a PROXYVISION_ENDPOINTS the gateway would inherit.
    gateway = (
        sys.executable,
        "-m",
        "services.api_gateway",
        *common,
        "--host",
        options.host,
        "--port",
        str(options.port),
        *(arg for name, target in endpoints.items() for arg in ("--endpoint", f"{name}={target}")),
        *(("--ui-server",) if options.ui_server else ()),
    )
    processes.append(ProcessSpec("api_gateway", "api_gateway", gateway, options.port, options.host, "http"))
    return StackPlan(resolved, processes, skipped)


def _check_ports(gateway_port: int, engine_ports_by_model: dict[str, int]) -> None:
    # Port 0 ("any free port") cannot work here: the gateway must know the engines' ports in advance,
    # and the banner must show the gateway's.
    for name, port in {"--port": gateway_port, **engine_ports_by_model}.items():
        if not 0 < port < 65536:
            raise ValueError(f"port {port} of {name} is not in 1-65535 (see --port / --engine-port-base)")
    clash = [name for name, port in engine_ports_by_model.items() if port == gateway_port]
    if clash:
        raise ValueError(
            f"--port {gateway_port} is also the port of {clash[0]}; choose another --port or --engine-port-base"
        )


def _engine(
    kind: Kind, model: str, port: int, common: tuple[str, ...], device: str, tls: TlsSettings | None, python: str | None
) -> ProcessSpec:
    if python is None:
        raise ValueError(
            f"model {model} has backend: vllm, but no python with vLLM was given (StackOptions.vllm_python)"
        )
    metrics_port = port + METRICS_PORT_OFFSET
    argv = (
        python,
        "-m",
        f"services.{kind}",
        *common,
        "--model",
        model,
        "--host",
        ENGINE_HOST,
        "--port",
        str(port),
        "--device",
        device,
        "--metrics-port",
        str(metrics_port),
    )
    return ProcessSpec(
        f"{kind}[{model}]", kind, argv, port, ENGINE_HOST, "grpc", metrics_port, required=kind == "text_engine", tls=tls
    )


def write_config(config: ModelsConfig, path: Path) -> None:
    """Write the resolved config the children read (absolute paths, endpoints filled)."""
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
