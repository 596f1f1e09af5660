"""A whole ProxyVision stack of real processes on free loopback ports, for end-to-end tests."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import yaml

from tests.conftest import TEXT_MODEL, VISION_MODEL, write_models_yaml
from tests.support.processes import ServiceProcess, free_port, start_service, wait_grpc_serving


@dataclass
class Stack:
    """Engines and a gateway started from one models.yaml."""

    tmp: Path
    config_path: Path
    text: ServiceProcess | None = None
    vision: ServiceProcess | None = None
    gateway: ServiceProcess | None = None
    ports: dict[str, int] = field(default_factory=dict)
    more_text: dict[str, ServiceProcess] = field(default_factory=dict)  # by model name, beside TEXT_MODEL's

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.port}"

    def metrics_url(self, service: str) -> str:
        """/metrics of "gateway", "text" or "vision"."""
        if service == "gateway":
            return f"{self.base_url}/metrics"
        return f"http://127.0.0.1:{self.ports[service + '_metrics']}/metrics"

    def client(self, **kw) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key="not-needed", max_retries=0, timeout=120, **kw)

    def async_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.base_url}/v1", api_key="not-needed", max_retries=0, timeout=120)

    def start_text(self) -> ServiceProcess:
        self.text = start_service("services.text_engine", ["--models-config", str(self.config_path), "--model", TEXT_MODEL,
                                  "--port", str(self.ports["text"]), "--device", "cpu", "--metrics-port", str(self.ports["text_metrics"])],
                                  self.ports["text"], self.tmp)  # fmt: skip
        return self.text

    def start_more_text(self, name: str) -> ServiceProcess:
        """The engine of `name`, one of make_stack's `more_text` models (own port, no metrics exporter)."""
        port = self.ports[f"text:{name}"]
        self.more_text[name] = start_service("services.text_engine", ["--models-config", str(self.config_path), "--model",
                                             name, "--port", str(port), "--device", "cpu"], port, self.tmp)  # fmt: skip
        return self.more_text[name]

    def start_vision(self) -> ServiceProcess:
        self.vision = start_service("services.vision_engine", ["--models-config", str(self.config_path), "--model",
                                    VISION_MODEL, "--port", str(self.ports["vision"]), "--device", "cpu",
                                    "--metrics-port", str(self.ports["vision_metrics"])],
                                    self.ports["vision"], self.tmp)  # fmt: skip
        return self.vision

    def start_gateway(self) -> ServiceProcess:
        self.gateway = start_service("services.api_gateway", ["--models-config", str(self.config_path),
                                     "--port", str(self.ports["gateway"]), "--ui-server"], self.ports["gateway"], self.tmp)  # fmt: skip
        wait_http(f"{self.base_url}/health", self.gateway)
        return self.gateway

    def stop(self) -> None:
        for service in (self.gateway, self.text, self.vision, *self.more_text.values()):
            if service is not None:
                service.stop()


def make_stack(tmp: Path, tiny_models, *, vision: bool = True, start_vision: bool = True, gateway_extra: dict | None = None,
               text_params: dict | None = None, more_text: dict[str, Path] | None = None) -> Stack:  # fmt: skip
    """Write the config and start text engine, vision engine (optional) and gateway. `more_text` (model name ->
    checkpoint) adds text models beside TEXT_MODEL, with its params, each served by an engine of its own."""
    ports = {name: free_port() for name in ("text", "vision", "gateway", "text_metrics", "vision_metrics")}
    ports.update({f"text:{name}": free_port() for name in more_text or {}})
    endpoints = {TEXT_MODEL: f"127.0.0.1:{ports['text']}", VISION_MODEL: f"127.0.0.1:{ports['vision']}"}
    extra = {"gateway": gateway_extra} if gateway_extra else None
    config = write_models_yaml(tmp / "models.yaml", tiny_models, endpoints=endpoints, vision=vision, extra=extra,
                               text_params=text_params)  # fmt: skip
    if more_text:
        add_text_models(config, {name: (path, f"127.0.0.1:{ports[f'text:{name}']}") for name, path in more_text.items()})
    stack = Stack(tmp, config, ports=ports)
    try:
        stack.start_text()
        for name in more_text or {}:
            stack.start_more_text(name)
        if vision and start_vision:
            stack.start_vision()
        for engine in (stack.text, *stack.more_text.values()):
            wait_grpc_serving(engine)
        if vision and start_vision:
            wait_grpc_serving(stack.vision)
        stack.start_gateway()
    except BaseException:
        stack.stop()
        raise
    return stack


def add_text_models(config: Path, models: dict[str, tuple[Path, str]]) -> None:
    """Append text models (name -> (checkpoint, endpoint)) to a written models.yaml, each a copy of
    TEXT_MODEL's entry but for its name, checkpoint and endpoint."""
    data = yaml.safe_load(config.read_text())
    template = next(m for m in data["models"] if m["name"] == TEXT_MODEL)
    for name, (path, endpoint) in models.items():
        data["models"].append({**template, "name": name, "local_path": str(path), "endpoint": endpoint})
    config.write_text(yaml.safe_dump(data, sort_keys=False))


def wait_http(url: str, service: ServiceProcess, timeout: float = 60.0, status: int = 200) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.proc.poll() is not None:
            raise AssertionError(f"{service.name} exited:\n{service.log_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == status:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer {status} in {timeout}s:\n{service.log_text()[-3000:]}")


def wait_until(predicate, timeout: float = 30.0, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not reached in {timeout}s")
        time.sleep(0.1)
