"""One text engine process on the bench checkpoint, with its metrics exporter, for lifecycle tests."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc

from services.common.pb.proxyvision.v1 import common_pb2, text_engine_pb2 as pb, text_engine_pb2_grpc
from tests.support import models_yaml
from tests.support.metrics import Scrape, scrape
from tests.support.models_yaml import BENCH_MODEL as BENCH
from tests.support.processes import ServiceProcess, free_port, wait_grpc_serving
from tests.support.stack import start_gateway, start_text_engine


def bench_config(
    tmp: Path,
    bench_model: Path,
    *,
    params: dict | None = None,
    idle_unload_secs: int = 300,
    endpoint: str | None = None,
) -> Path:
    """A models.yaml with the bench checkpoint as its only text model."""
    return models_yaml.bench(bench_model, params=params, idle_unload_secs=idle_unload_secs, endpoint=endpoint).write(
        tmp / "models.yaml"
    )


class EngineProcess:
    """A running `python -m services.text_engine` with a gRPC stub and a metrics URL."""

    def __init__(self, tmp: Path, config: Path, *, env: dict | None = None, port: int | None = None) -> None:
        self.port, self.metrics_port = port or free_port(), free_port()
        self.service: ServiceProcess = start_text_engine(
            config, tmp, model=BENCH, port=self.port, metrics_port=self.metrics_port, env=env, wait=False
        )
        self.channel = grpc.insecure_channel(self.service.address)
        self.stub = text_engine_pb2_grpc.TextEngineStub(self.channel)

    def wait_serving(self) -> EngineProcess:
        wait_grpc_serving(self.service)
        return self

    def info(self) -> common_pb2.ModelInfo:
        return self.stub.GetModelInfo(common_pb2.GetModelInfoRequest(), timeout=10)

    def state(self) -> str:
        return common_pb2.ModelState.Name(self.info().state)

    def metrics(self) -> Scrape:
        return scrape(f"http://127.0.0.1:{self.metrics_port}/metrics")

    def generate(
        self,
        prompt: str = "Tell me a story.",
        max_tokens: int = 16,
        timeout: float = 120,
        first_delta: threading.Event | None = None,
    ):
        """A streamed Generate, consumed whole: (text, finished message); sets `first_delta` on the first token."""
        request = pb.GenerateRequest(
            model=BENCH,
            messages=[pb.ChatMessage(role="user", content=prompt)],
            sampling=pb.SamplingParams(max_tokens=max_tokens, temperature=0.0),
        )
        text, finished = [], None
        for response in self.stub.Generate(request, timeout=timeout):
            if response.HasField("delta"):
                text.append(response.delta.text)
                if first_delta is not None:
                    first_delta.set()
            elif response.HasField("finished"):
                finished = response.finished
        return "".join(text), finished

    def stop(self) -> int:
        self.channel.close()
        return self.service.stop()


class BenchStack:
    """The bench-model engine behind a real gateway (both with metrics)."""

    def __init__(
        self, tmp: Path, bench_model: Path, *, params: dict | None = None, engine_env: dict | None = None
    ) -> None:
        self.tmp = tmp
        port = free_port()
        self.config = bench_config(tmp, bench_model, params=params, endpoint=f"127.0.0.1:{port}")
        self.engine = EngineProcess(tmp, self.config, env=engine_env, port=port).wait_serving()
        self.gateway: ServiceProcess | None = None
        self.start_gateway()

    def start_gateway(self, *args: str) -> None:
        """Start a gateway with extra `args` (stopping the one running, if any) and wait until it is ready."""
        if self.gateway is not None:
            assert self.gateway.stop() == 0
        self.gateway = start_gateway(self.config, self.tmp, args=args, ready="/ready")
        self.base_url = self.gateway.url

    def gateway_metrics(self) -> Scrape:
        return scrape(f"{self.base_url}/metrics")

    def stop(self) -> None:
        self.gateway.stop()
        self.engine.stop()
