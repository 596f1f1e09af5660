"""Start and stop the server contenders as child processes of the bench: our stack and `transformers serve`.

Our stack is started with the test harness (tests/support/stack.py, configs from tests/support/models_yaml.py),
at WARNING log level and with the hub offline; the other servers with its generic process helpers."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.models_yaml import ModelsYaml
from tests.support.processes import ServiceProcess, free_port, start_process, stop_all, wait_http
from tests.support.stack import start_gateway, start_text_engine, start_vision_engine

QUIET = ("--log-level", "WARNING")
OFFLINE = {"HF_HUB_OFFLINE": "1"}
START_TIMEOUT = 300.0  # s: a bench checkpoint loads in seconds, but on a busy 2-core machine


def spawn(argv: list[str], log_path: Path, port: int = 0, env: dict | None = None) -> ServiceProcess:
    """Another program (a contender's server) with its output in `log_path`, the hub offline and `env` added."""
    return start_process(Path(argv[0]).name, argv, port, log_path, {**OFFLINE, **(env or {})})


def wait_ready(url: str, services: list[ServiceProcess], timeout: float = START_TIMEOUT) -> None:
    """GET `url` answers 200; fails (with the logs) as soon as one of `services` exits."""
    wait_http(url, *services, timeout=timeout)


@dataclass(frozen=True)
class OurStack:
    """Where the gateway (OpenAI base URL) and the text engine (gRPC) of a running stack answer."""

    base_url: str
    engine_address: str


@contextmanager
def text_stack(
    config: ModelsYaml,
    model_name: str,
    work: Path,
    *,
    timeout: float = START_TIMEOUT,
    engine_env: dict | None = None,
    engine_backend: str = "transformers",
):
    """A text engine for `model_name` + gateway as separate processes (as the launcher runs them), both loading at
    once; `config` gets the engine's endpoint; `engine_env`: more environment of the engine (e.g. OMP_NUM_THREADS);
    `engine_backend`: the model's backend in `config` (vllm: the engine runs under .venv-vllm's python).
    Yields an OurStack once the gateway is ready."""
    engine_port = free_port()
    config.endpoints({model_name: f"127.0.0.1:{engine_port}"})
    path = config.write(work / f"{model_name}.models.yaml")
    services = [
        start_text_engine(
            path,
            work,
            model=model_name,
            port=engine_port,
            args=QUIET,
            env={**OFFLINE, **(engine_env or {})},
            wait=False,
            backend=engine_backend,
        )
    ]
    try:
        services.append(start_gateway(path, work, args=QUIET, env=OFFLINE, ready=None))
        wait_ready(f"{services[1].url}/ready", services, timeout)
        yield OurStack(f"{services[1].url}/v1", services[0].address)
    finally:
        stop_all(services[::-1])


@contextmanager
def our_stack(
    model_dir: str,
    model_name: str,
    params: dict,
    work: Path,
    *,
    idle_unload_secs: int = 0,
    engine_env: dict | None = None,
):
    """Text engine + gateway on one checkpoint (`params` as given). Yields an OurStack."""
    config = ModelsYaml().text(model_name, local_path=model_dir, params=params, tiny_defaults=False)
    with text_stack(config.set(idle_unload_secs=idle_unload_secs), model_name, work, engine_env=engine_env) as stack:
        yield stack


@contextmanager
def transformers_serve(model_dir: str, block_size: int, num_blocks: int, max_batch_tokens: int, work: Path):
    """`transformers serve <dir> --continuous-batching` on the same checkpoint and cache size."""
    port = free_port()
    cli = Path(sys.executable).parent / "transformers"
    proc = spawn(
        [
            str(cli),
            "serve",
            model_dir,
            "--continuous-batching",
            "--cb-block-size",
            str(block_size),
            "--cb-num-blocks",
            str(num_blocks),
            "--cb-max-batch-tokens",
            str(max_batch_tokens),
            "--device",
            "cpu",
            "--dtype",
            "float32",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
        ],
        work / "transformers_serve.log",
        port,
    )
    try:
        wait_ready(f"{proc.url}/health", [proc])
        yield f"{proc.url}/v1"
    finally:
        stop_all([proc])


@contextmanager
def vision_stack(text_dir: str, vision_dir: str, text_name: str, vision_name: str, work: Path):
    """Tiny text engine + vision engine + gateway (fetching allowed from 127.0.0.1). Yields (base URL, vision address)."""
    text_port, vision_port = free_port(), free_port()
    path = (
        ModelsYaml()
        .text(
            text_name,
            local_path=text_dir,
            endpoint=f"127.0.0.1:{text_port}",
            tiny_defaults=False,
            params={"mem": 8, "dtype": "f32", "max_num_seqs": 16},
        )
        .vision(
            vision_name,
            local_path=vision_dir,
            endpoint=f"127.0.0.1:{vision_port}",
            tiny_defaults=False,
            prompt_template=None,
            params={"mem": 256, "dtype": "f32", "max_num_seqs": 4},
        )
        .set(idle_unload_secs=0)
        .gateway(images={"allow_private_networks": ["127.0.0.0/8"]})
        .write(work / "vision.models.yaml")
    )
    services = []
    try:
        services.append(
            start_text_engine(path, work, model=text_name, port=text_port, args=QUIET, env=OFFLINE, wait=False)
        )
        services.append(
            start_vision_engine(path, work, model=vision_name, port=vision_port, args=QUIET, env=OFFLINE, wait=False)
        )
        services.append(start_gateway(path, work, args=QUIET, env=OFFLINE, ready=None))
        wait_ready(f"{services[2].url}/ready", services)
        yield services[2].url, services[1].address
    finally:
        stop_all(services[::-1])


@contextmanager
def native_stack(
    text_dir: str,
    vision_dir: str,
    work: Path,
    *,
    cache_entries: int = 1024,
    tag: str = "native",
    text_params: dict | None = None,
):
    """The tiny Ministral-3 twice (text-only, its images captioned by the tiny Qwen2-VL vision engine; and
    `vision_mode: native`) + the vision engine + a gateway. Yields the gateway's base URL.

    Model names: "proxied" (the caption path) and "native"; `text_params` override both text engines' params."""
    ports = {"proxied": free_port(), "native": free_port(), "captioner": free_port()}
    params = {"mem": 64, "dtype": "f32", "max_num_seqs": 16, **(text_params or {})}
    work = work / tag
    work.mkdir(parents=True, exist_ok=True)
    config = (
        ModelsYaml()
        .text("proxied", local_path=text_dir, tiny_defaults=False, params=params)
        .text("native", local_path=text_dir, tiny_defaults=False, params=params, capabilities={"vision_mode": "native"})
        .vision(
            "captioner",
            local_path=vision_dir,
            tiny_defaults=False,
            prompt_template=None,
            params={"mem": 256, "dtype": "f32", "max_num_seqs": 4},
        )
        .set(idle_unload_secs=0)
    )
    config.models[-1]["capabilities"]["vision_proxy"] = {"cache_max_entries": cache_entries}
    config.endpoints({name: f"127.0.0.1:{port}" for name, port in ports.items()})
    path = config.write(work / f"{tag}.models.yaml")
    services = []
    try:
        for name in ("proxied", "native"):
            services.append(
                start_text_engine(path, work, model=name, port=ports[name], args=QUIET, env=OFFLINE, wait=False)
            )
        services.append(
            start_vision_engine(
                path, work, model="captioner", port=ports["captioner"], args=QUIET, env=OFFLINE, wait=False
            )
        )
        services.append(start_gateway(path, work, args=QUIET, env=OFFLINE, ready=None))
        wait_ready(f"{services[-1].url}/ready", services)
        yield services[-1].url
    finally:
        stop_all(services[::-1])
