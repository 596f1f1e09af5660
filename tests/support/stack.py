"""The one way tests, suites and benchmarks start ProxyVision: engines, gateway, fakes, whole stacks.

Processes on free loopback ports, each logging to a file in the test's tmp dir; every wait fails with the
log of the process that died or never became ready.

    config = tiny(tiny_models).write(tmp / "models.yaml")             # tests/support/models_yaml.py
    text = start_text_engine(config, tmp)                              # waits until gRPC health is SERVING
    gateway = start_gateway(config.parent / "gw.yaml", tmp, ready="/ready")
    ...
    stack = make_stack(tmp, tiny_models, vision=True)                  # all three, endpoints wired; stack.stop()

The real gateway can also run in the test's own event loop (`gateway_in_process`), beside in-process fakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import openai

from tests.support.metrics import Scrape, scrape
from tests.support.models_yaml import BENCH_MODEL, TEXT_MODEL, VISION_MODEL, ModelsYaml, bench, tiny
from tests.support.processes import (
    ServiceProcess,
    engine_python,
    free_port,
    free_ports,
    start_service,
    stop_all,
    wait_grpc_serving,
    wait_http,
    wait_until_async,
)
from tests.support.running_engine import RunningEngine

__all__ = [
    "Stack",
    "make_stack",
    "bench_stack",
    "start_text_engine",
    "start_vision_engine",
    "start_gateway",
    "start_fake_text_engine",
    "start_fake_vision_engine",
    "gateway_in_process",
]


# --- single processes --------------------------------------------------------------------------------------
def _ready(service: ServiceProcess, wait) -> ServiceProcess:
    """Run the readiness `wait`; a process that does not become ready is stopped, not leaked."""
    try:
        wait()
    except BaseException:
        service.stop()
        raise
    return service


def _engine(
    module: str,
    config: Path,
    tmp: Path,
    model: str,
    port: int | None,
    metrics_port: int | None,
    args: Sequence[str],
    env: dict | None,
    wait: bool,
    backend: str = "transformers",
) -> ServiceProcess:
    port = port or free_port()
    argv = ["--models-config", str(config), "--model", model, "--port", str(port), "--device", "cpu"]
    if metrics_port is not None:
        argv += ["--metrics-port", str(metrics_port)]
    service = start_service(module, [*argv, *args], port, tmp, env=env, python=engine_python(backend))
    service.metrics_port = metrics_port
    return _ready(service, lambda: wait_grpc_serving(service)) if wait else service


def start_text_engine(
    config: Path,
    tmp: Path,
    *,
    model: str = TEXT_MODEL,
    port: int | None = None,
    metrics_port: int | None = None,
    args: Sequence[str] = (),
    env: dict | None = None,
    wait: bool = True,
    backend: str = "transformers",
    module: str = "services.text_engine",
) -> ServiceProcess:
    """`python -m services.text_engine` for `model` on the CPU (a free port unless given); with `wait`, returns
    once it is SERVING (its model loaded). `metrics_port` starts its Prometheus exporter there. `backend`: the
    model's `backend` in the config, which picks the interpreter (vllm: .venv-vllm's) as the launcher does.
    `module`: a test's variant of the engine to run instead (tests/support/vllm_engine_without_overrides.py)."""
    return _engine(module, config, tmp, model, port, metrics_port, args, env, wait, backend)


@dataclass(frozen=True)
class TextEngineSpec:
    """One text engine of a test's own stack: its model, the port its endpoint in the file names, its backend
    (which picks the interpreter), the module to run and an optional metrics port."""

    model: str
    port: int
    backend: str = "transformers"
    module: str = "services.text_engine"
    metrics_port: int | None = None


@contextlib.contextmanager
def text_engines_behind_gateway(
    config: Path, tmp: Path, engines: Sequence[TextEngineSpec], *, timeout: float = 300
) -> Iterator[list[ServiceProcess]]:
    """Start `engines` together (a vLLM engine takes tens of seconds), wait until each serves, then the gateway
    (ready on /ready); yields the engines and, last, the gateway. Stops them all at once on the way out."""
    services = [
        start_text_engine(
            config,
            tmp,
            model=spec.model,
            port=spec.port,
            wait=False,
            backend=spec.backend,
            module=spec.module,
            metrics_port=spec.metrics_port,
        )
        for spec in engines
    ]
    try:
        for engine in list(services):
            wait_grpc_serving(engine, timeout=timeout)
        services.append(start_gateway(config, tmp, ready="/ready"))
        yield services
    finally:
        stop_all(services)


@contextlib.contextmanager
def checkpoints_behind_gateway(
    tmp: Path,
    models: Sequence[tuple[str, str, Path]],
    *,
    modules: dict[str, str] | None = None,
    metrics_ports: dict[str, int] | None = None,
    timeout: float = 240,
    **fields,
) -> Iterator[list[ServiceProcess]]:
    """A backend comparison's stack: each `(name, backend, checkpoint)` of `models` served by a text engine of its
    own (`modules` may name another module to run for a name, `metrics_ports` a metrics port), with `fields` the
    models.yaml fields every entry shares; one gateway in front. Yields the engines and, last, the gateway."""
    ports = dict(zip((name for name, _, _ in models), free_ports(len(models))))
    yaml = ModelsYaml()
    for name, backend, checkpoint in models:
        yaml = yaml.text(name, local_path=checkpoint, endpoint=f"127.0.0.1:{ports[name]}", backend=backend, **fields)
    config = yaml.write(tmp / "models.yaml")
    engines = [
        TextEngineSpec(
            name,
            ports[name],
            backend,
            module=(modules or {}).get(name, "services.text_engine"),
            metrics_port=(metrics_ports or {}).get(name),
        )
        for name, backend, _ in models
    ]
    with text_engines_behind_gateway(config, tmp, engines, timeout=timeout) as services:
        yield services


def start_vision_engine(
    config: Path,
    tmp: Path,
    *,
    model: str = VISION_MODEL,
    port: int | None = None,
    metrics_port: int | None = None,
    args: Sequence[str] = (),
    env: dict | None = None,
    wait: bool = True,
    backend: str = "transformers",
) -> ServiceProcess:
    """`python -m services.vision_engine`, as start_text_engine."""
    return _engine("services.vision_engine", config, tmp, model, port, metrics_port, args, env, wait, backend)


def start_fake_text_engine(tmp: Path, *, port: int | None = None, wait: bool = True) -> ServiceProcess:
    """The scripted fake text engine (tests/support/fake_text_engine.py) in a process of its own: exact
    replies and failures on cue, any model name. For one in the test's event loop, use that module directly."""
    port = port or free_port()
    service = start_service("tests.support.fake_text_engine", ["--port", str(port)], port, tmp)
    return _ready(service, lambda: wait_grpc_serving(service, timeout=30)) if wait else service


def start_fake_vision_engine(
    tmp: Path, *, port: int | None = None, caption: str | None = None, wait: bool = True
) -> ServiceProcess:
    """The scripted fake vision engine (tests/support/fake_vision_engine.py) in a process of its own."""
    port = port or free_port()
    args = ["--port", str(port), *(["--caption", caption] if caption is not None else [])]
    service = start_service("tests.support.fake_vision_engine", args, port, tmp)
    return _ready(service, lambda: wait_grpc_serving(service)) if wait else service


def start_gateway(
    config: Path,
    tmp: Path,
    *,
    port: int | None = None,
    ui: bool = False,
    args: Sequence[str] = (),
    env: dict | None = None,
    ready: str | None = "/health",
) -> ServiceProcess:
    """`python -m services.api_gateway` (with `ui`: --ui-server); waits until GET `ready` answers 200
    ("/health": the process is up; "/ready": its engines are serving too; None: no wait). Every start_*
    stops the process again when it does not become ready, and fails with its log."""
    port = port or free_port()
    argv = ["--models-config", str(config), "--port", str(port), *(["--ui-server"] if ui else []), *args]
    service = start_service("services.api_gateway", argv, port, tmp, env=env)
    return _ready(service, lambda: wait_http(f"{service.url}{ready}", service)) if ready is not None else service


@contextlib.asynccontextmanager
async def gateway_in_process(config: ModelsYaml | dict) -> AsyncIterator[str]:
    """The real app under real uvicorn in this event loop, on a free loopback port; yields its base URL.
    For tests that script the engine in-process too (tests/support/fake_text_engine.py)."""
    import uvicorn

    from services.api_gateway.app import build_app
    from services.common.config import parse_models_config

    parsed = parse_models_config(config.to_dict() if isinstance(config, ModelsYaml) else config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(build_app(parsed), log_config=None, log_level="warning", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await wait_until_async(lambda: server.started, 10, "uvicorn started", interval=0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


# --- a whole stack -------------------------------------------------------------------------------------------
@dataclass
class Stack:
    """Engines and a gateway started from one models.yaml; each process can be stopped and started again
    on its own port (a restart keeps the address the gateway dials)."""

    tmp: Path
    config_path: Path
    text: ServiceProcess | None = None
    vision: ServiceProcess | None = None
    gateway: ServiceProcess | None = None
    ports: dict[str, int] = field(default_factory=dict)
    more_text: dict[str, ServiceProcess] = field(default_factory=dict)  # by model name, beside TEXT_MODEL's
    env: dict[str, str] = field(default_factory=dict)  # for every process
    gateway_args: tuple[str, ...] = ("--ui-server",)
    text_model: str = TEXT_MODEL  # the model `text` serves
    _engine: RunningEngine | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return self.gateway.url

    def metrics_url(self, service: str) -> str:
        """/metrics of "gateway", "text" or "vision"."""
        if service == "gateway":
            return f"{self.base_url}/metrics"
        return f"http://127.0.0.1:{self.ports[service + '_metrics']}/metrics"

    def scrape(self, service: str) -> Scrape:
        """/metrics of "gateway", "text" or "vision", parsed."""
        return scrape(self.metrics_url(service))

    @property
    def engine(self) -> RunningEngine:
        """A gRPC client of the text engine now running (a new one after `start_text`)."""
        if self._engine is None or self._engine.service is not self.text:
            if self._engine is not None:
                self._engine.close()
            self._engine = RunningEngine(self.text, self.text_model)
        return self._engine

    def client(self, **kw) -> openai.OpenAI:
        kw.setdefault("api_key", "not-needed")
        return openai.OpenAI(base_url=f"{self.base_url}/v1", max_retries=0, timeout=120, **kw)

    def async_client(self, **kw) -> openai.AsyncOpenAI:
        kw.setdefault("api_key", "not-needed")
        return openai.AsyncOpenAI(base_url=f"{self.base_url}/v1", max_retries=0, timeout=120, **kw)

    def start_text(self, wait: bool = False) -> ServiceProcess:
        self.text = start_text_engine(
            self.config_path,
            self.tmp,
            model=self.text_model,
            port=self.ports["text"],
            env=self.env,
            metrics_port=self.ports["text_metrics"],
            wait=wait,
        )
        return self.text

    def start_more_text(self, name: str, wait: bool = False) -> ServiceProcess:
        """The engine of `name`, one of make_stack's `more_text` models (own port, no metrics exporter)."""
        self.more_text[name] = start_text_engine(
            self.config_path, self.tmp, model=name, port=self.ports[f"text:{name}"], env=self.env, wait=wait
        )
        return self.more_text[name]

    def start_vision(self, wait: bool = False) -> ServiceProcess:
        self.vision = start_vision_engine(
            self.config_path,
            self.tmp,
            port=self.ports["vision"],
            env=self.env,
            metrics_port=self.ports["vision_metrics"],
            wait=wait,
        )
        return self.vision

    def start_gateway(self, *args: str) -> ServiceProcess:
        """Start the gateway with `args` beside `gateway_args`; a gateway still running is stopped first (it must
        exit 0), and the new one listens on the same port."""
        if self.gateway is not None:
            assert self.gateway.stop() == 0, self.gateway.log_text()[-3000:]
        args = (*self.gateway_args, *args)
        self.gateway = start_gateway(self.config_path, self.tmp, port=self.ports["gateway"], args=args, env=self.env)
        return self.gateway

    def stop(self) -> None:
        """The gateway first (its streams end while the engines still answer), then every engine at once."""
        if self.gateway is not None:
            self.gateway.stop()
        if self._engine is not None:
            self._engine.close()
        stop_all([s for s in (self.text, self.vision, *self.more_text.values()) if s is not None])


def make_stack(
    tmp: Path,
    tiny_models,
    *,
    vision: bool = True,
    start_vision: bool = True,
    gateway_extra: dict | None = None,
    text_params: dict | None = None,
    more_text: dict[str, Path] | None = None,
    config: ModelsYaml | None = None,
    env: dict | None = None,
    gateway_args: Sequence[str] = ("--ui-server",),
    text_model: str = TEXT_MODEL,
    gateway: bool = True,
) -> Stack:
    """Write the config and start text engine, vision engine (optional) and gateway (with the web UI).

    The config is `tiny(tiny_models, vision=..., text_params=...)` with `gateway_extra` as its gateway section,
    or `config` as built by the caller (it must name `text_model`, and VISION_MODEL with `vision`); make_stack
    fills in the endpoints. `more_text` (model name -> checkpoint) adds text models beside TEXT_MODEL, with its
    params, each served by an engine of its own (a name `config` already has keeps its entry, e.g. a
    `ModelsYaml.native` one, and only gets its engine). `env` goes to every process; without `gateway`, only the engines start."""
    names = [
        "text",
        "vision",
        "gateway",
        "text_metrics",
        "vision_metrics",
        *(f"text:{name}" for name in more_text or {}),
    ]
    ports = dict(zip(names, free_ports(len(names))))
    if config is None:
        config = tiny(tiny_models, vision=vision, text_params=text_params)
        if gateway_extra:
            config.gateway(**gateway_extra)
    config.endpoints({text_model: f"127.0.0.1:{ports['text']}", VISION_MODEL: f"127.0.0.1:{ports['vision']}"})
    for name, path in (more_text or {}).items():
        if any(m["name"] == name for m in config.models):  # the caller's own entry (e.g. a native one): wire it
            config.endpoints({name: f"127.0.0.1:{ports[f'text:{name}']}"})
        else:
            config.copy_model(text_model, name, local_path=path, endpoint=f"127.0.0.1:{ports[f'text:{name}']}")
    stack = Stack(
        tmp,
        config.write(tmp / "models.yaml"),
        ports=ports,
        env=dict(env or {}),
        gateway_args=tuple(gateway_args),
        text_model=text_model,
    )
    try:
        # All engines load at once (in parallel on the CPUs), then the gateway starts over serving engines.
        stack.start_text()
        for name in more_text or {}:
            stack.start_more_text(name)
        if vision and start_vision:
            stack.start_vision()
        for engine in (stack.text, *stack.more_text.values()):
            wait_grpc_serving(engine)
        if vision and start_vision:
            wait_grpc_serving(stack.vision)
        if gateway:
            stack.start_gateway()
    except BaseException:
        stack.stop()
        raise
    return stack


def bench_stack(
    tmp: Path,
    bench_model: Path,
    *,
    params: dict | None = None,
    idle_unload_secs: int = 300,
    env: dict | None = None,
    gateway: bool = True,
) -> Stack:
    """The bench checkpoint (BENCH_MODEL, models_yaml.bench) on a text engine with its metrics exporter, behind a
    gateway without the web UI (with `gateway`): the stack of lifecycle tests (drain, backpressure, idle unload)."""
    config = bench(bench_model, params=params, idle_unload_secs=idle_unload_secs)
    return make_stack(
        tmp, {}, vision=False, config=config, env=env, gateway_args=(), text_model=BENCH_MODEL, gateway=gateway
    )
