"""`proxyvision serve --models-config models.yaml --port 2000 [--ui-server]` (and the brief's forms), and
`proxyvision config [...]`, which prints the configuration `serve` would run.

The config is loaded and validated once, here; the children read the resolved copy this writes.
Exit codes: 0 after a requested stop, 1 when a required child fails for good (a text model fails to load:
the engine's reason is logged within a probe round, not after --ready-timeout; or a child crash-loops: a
child that exits on its own is restarted with backoff, see restarts.py) or a port is taken, 2 for a bad
config or command line. A vision model that fails to load does not stop the stack: text is served,
and the banner and the gateway's /ready say why vision is unavailable.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import logging
import os
import sys
import tempfile
from pathlib import Path

import yaml

from services.common.backends import vllm_python
from services.common.config import ConfigError, ModelsConfig, load_models_config, parse_models_config
from services.common.env import first_set, log_level_from, parse_api_keys
from services.common.logging_setup import normalize_level, setup_logging

from .banner import ready_banner
from .plan import ProcessSpec, StackOptions, config_from_model_ids, entry_for_model_id, plan_stack, write_config
from .probes import is_ready, ports_in_use
from .supervisor import Supervisor

log = logging.getLogger("proxyvision")
STOP_MARGIN_SECS = 15.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="proxyvision", description="Run the ProxyVision stack.")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="start the gateway and one engine per model (the default command)")
    serve.add_argument("--models-config", help="models.yaml (env PROXYVISION_MODELS_CONFIG)")
    serve.add_argument("--m", dest="model_id", help="hf_id or local path of a text model (instead of a file)")
    serve.add_argument("--vision-model", help="hf_id or local path of a proxy vision model")
    serve.add_argument("--host", help="gateway bind address (env PROXYVISION_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="gateway port (env PROXYVISION_PORT, default 2000)")
    serve.add_argument(
        "--engine-port-base",
        type=int,
        default=50051,
        help="port of the first text engine; the others and the vision engine follow (default 50051)",
    )
    serve.add_argument("--device", choices=["cpu", "cuda", "auto"], help="env PROXYVISION_DEVICE, default auto")
    serve.add_argument("--ui-server", action="store_true", help="serve the web UI at the gateway's /")
    serve.add_argument("--log", action="store_true", help="detailed (DEBUG) logs unless a level is given")
    serve.add_argument("--log-level", help="env LOG_LEVEL or RUST_LOG, default INFO")
    serve.add_argument(
        "--drain-grace-secs",
        type=float,
        help="on Ctrl-C/SIGTERM, how long running requests may "
        "finish before they are aborted (env PROXYVISION_DRAIN_GRACE_SECS, default 30)",
    )
    serve.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="KEY",
        help="a key clients must send as 'Authorization: Bearer KEY' on /v1 (repeatable or "
        "comma-separated; env PROXYVISION_API_KEY; replaces gateway.api_keys)",
    )
    serve.add_argument(
        "--backend",
        choices=["transformers", "vllm"],
        help="what runs every text model (env PROXYVISION_BACKEND; default: each model's `backend` in "
        "models.yaml, else transformers); vllm needs `make install-vllm`",
    )
    serve.add_argument(
        "--ready-timeout",
        type=float,
        default=600.0,
        help="seconds the engines may take to load before the launcher gives up (0: no limit)",
    )
    show = sub.add_parser("config", help="print the configuration `serve` would run, as models.yaml; loads nothing")
    show.add_argument("--models-config", help="models.yaml (env PROXYVISION_MODELS_CONFIG)")
    show.add_argument("--m", dest="model_id", help="hf_id or local path of a text model (instead of a file)")
    show.add_argument("--vision-model", help="hf_id or local path of a proxy vision model")
    show.add_argument("--backend", choices=["transformers", "vllm"], help="as serve's --backend")
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The brief writes `candle-vllm --models-config ...` with no subcommand: treat that as `serve`."""
    if not argv or argv[0] not in ("serve", "config", "-h", "--help"):
        argv = ["serve", *argv]
    return build_parser().parse_args(argv)


def load_config(args: argparse.Namespace) -> ModelsConfig:
    """The one validated config: a file, or one synthesized from --m/--vision-model."""
    path = first_set(args.models_config, "PROXYVISION_MODELS_CONFIG")
    if path and args.model_id:
        raise ConfigError("give either --models-config or --m, not both")
    if path:
        config = load_models_config(path)
        if args.vision_model:
            config = _with_vision(config, args.vision_model)
    elif args.model_id:
        config = config_from_model_ids(args.model_id, args.vision_model)
    else:
        raise ConfigError("nothing to serve: pass --models-config models.yaml or --m <hf_id or path>")
    backend = first_set(args.backend, "PROXYVISION_BACKEND")
    if backend is None:
        return config
    if backend not in ("transformers", "vllm"):
        raise ConfigError(f"PROXYVISION_BACKEND={backend}: expected transformers or vllm")
    return config.with_backend(backend)


def _with_vision(config: ModelsConfig, vision_model: str) -> ModelsConfig:
    if config.vision_model is not None:
        raise ConfigError(
            f"--vision-model given but the config already has a vision model ({config.vision_model.name})"
        )
    data = config.model_dump(mode="json")
    data["models"].append(entry_for_model_id(vision_model, vision=True))
    return parse_models_config(data, "--vision-model")


def vision_engine_installed() -> bool:
    """Whether `python -m services.vision_engine` can run in this installation."""
    try:
        return importlib.util.find_spec("services.vision_engine.__main__") is not None
    except ModuleNotFoundError:
        return False


def options_from(args: argparse.Namespace, level: str, config: ModelsConfig) -> StackOptions:
    """CLI > env > defaults, once. ConfigError when a model needs vLLM and there is none."""
    uses_vllm = any(entry.backend == "vllm" for entry in config.models)
    return StackOptions(
        vllm_python=vllm_python() if uses_vllm else None,
        host=first_set(args.host, "PROXYVISION_HOST", default="127.0.0.1"),
        port=int(first_set(args.port, "PROXYVISION_PORT", default=2000)),
        engine_port_base=args.engine_port_base,
        device=first_set(args.device, "PROXYVISION_DEVICE", default="auto"),
        log_level=level,
        ui_server=args.ui_server,
        drain_grace_secs=float(first_set(args.drain_grace_secs, "PROXYVISION_DRAIN_GRACE_SECS", default=30.0)),
    )


def with_probe_key(processes: list[ProcessSpec], config: ModelsConfig, env: dict[str, str]) -> list[ProcessSpec]:
    """With `api_keys_protect_health`, the gateway's /ready needs a key: its readiness probe sends the first key
    the gateway will accept (PROXYVISION_API_KEY / --api-key, else gateway.api_keys, else the key file's first).
    A key file rotated later keeps the probe working as long as that key stays in it."""
    gateway = config.gateway
    if not gateway.api_keys_protect_health:
        return processes
    keys = parse_api_keys(env.get("PROXYVISION_API_KEY")) or list(gateway.api_keys)
    if not keys and gateway.api_keys_file:
        from services.api_gateway.auth import parse_key_file  # the gateway's own reading of the file

        try:
            keys = parse_key_file(Path(gateway.api_keys_file).read_text(encoding="utf-8"), gateway.api_keys_file)
        except OSError as exc:
            raise ConfigError(f"gateway.api_keys_file: cannot read {gateway.api_keys_file}: {exc.strerror}") from None
    if not keys:
        return processes
    return [dataclasses.replace(spec, probe_key=keys[0]) if spec.health_kind == "http" else spec for spec in processes]


def api_key_env(cli_keys: list[str]) -> dict[str, str]:
    """--api-key reaches the gateway as PROXYVISION_API_KEY (which it would otherwise inherit as it is): an
    environment is private to the process, a command line is not. ValueError for a bad key, before anything starts."""
    keys = first_set(",".join(cli_keys) or None, "PROXYVISION_API_KEY")
    return {"PROXYVISION_API_KEY": ",".join(parse_api_keys(keys))} if keys is not None else {}


def log_level(args: argparse.Namespace, environ=None) -> str:
    """--log-level > LOG_LEVEL > RUST_LOG > --log (DEBUG: the brief's "detailed logging") > INFO."""
    return normalize_level(log_level_from(args.log_level, environ)) or ("DEBUG" if args.log else "INFO")


def print_config(args: argparse.Namespace) -> int:
    """`proxyvision config`: the validated configuration `serve` would run (the `--m` form's names and aliases, a
    `--backend` applied, every default filled in), as models.yaml on stdout, like `helm template`. API keys are
    shown as `<redacted>`. Nothing is downloaded or loaded; a bad config is one line on stderr and exit 2."""
    try:
        config = load_config(args)
    except (ConfigError, ValueError) as exc:
        print(f"proxyvision config: {exc}", file=sys.stderr)
        return 2
    data = config.model_dump(mode="json", exclude_none=True)
    data["gateway"]["api_keys"] = ["<redacted>"] * len(config.gateway.api_keys)
    print(yaml.safe_dump(data, sort_keys=False), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "config":
        return print_config(args)
    try:
        level = log_level(args)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    setup_logging("proxyvision", level)
    with tempfile.TemporaryDirectory(prefix="proxyvision-") as tmp:
        resolved_path = Path(tmp) / "models.resolved.yaml"
        try:
            config = load_config(args)
            options = options_from(args, level, config)
            plan = plan_stack(config, options, resolved_path, vision_engine_installed=vision_engine_installed())
            child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **api_key_env(args.api_key)}
        except (ConfigError, ValueError) as exc:  # ConfigError is a ValueError; both are the operator's to fix
            log.error("%s", exc)
            return 2
        if plan.skipped_vision:
            log.warning(
                "Vision backend: Unavailable (vision engine not installed); %s is not started", plan.skipped_vision
            )
        taken = ports_in_use(plan.processes)
        if taken:
            which = ", ".join(f"{spec.port} ({spec.name})" for spec in taken)
            log.error("port(s) already in use: %s; choose others with --port / --engine-port-base", which)
            return 1
        write_config(plan.config, resolved_path)
        try:
            processes = with_probe_key(plan.processes, plan.config, child_env)
        except ConfigError as exc:
            log.error("%s", exc)
            return 2
        # The children drain for up to their grace period; SIGKILL only comes after that, with a margin.
        supervisor = Supervisor(
            processes, env=child_env, probe=is_ready, grace_secs=options.drain_grace_secs + STOP_MARGIN_SECS
        )
        gateway = plan.processes[-1]
        vision = next((spec.name for spec in plan.processes if spec.kind == "vision_engine"), None)

        gw = plan.config.gateway
        keys_required = bool(api_key_env(args.api_key) or gw.api_keys or gw.api_keys_file)

        def announce(failed: dict[str, str]) -> None:
            banner = ready_banner(
                plan.config,
                gateway.host,
                gateway.port,
                ui_server=args.ui_server,
                engine_metrics=[(spec.name, spec.metrics_port) for spec in plan.processes if spec.metrics_port],
                vision_error=failed.get(vision),
                keys_required=keys_required,
            )
            print(banner, flush=True)

        return supervisor.run(on_ready=announce, ready_timeout=args.ready_timeout)
