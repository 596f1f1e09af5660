"""A test's view of one running text engine process over its public surfaces: gRPC (GetModelInfo, Generate,
health) and its Prometheus exporter. `Stack.engine` hands one out for the stack's text engine."""

from __future__ import annotations

import threading

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.pb.proxyvision.v1 import common_pb2, text_engine_pb2 as pb, text_engine_pb2_grpc
from tests.support.metrics import Scrape, scrape
from tests.support.processes import ServiceProcess


class RunningEngine:
    """A gRPC channel to `service` (a text engine serving `model`); `close()` it when done."""

    def __init__(self, service: ServiceProcess, model: str) -> None:
        self.service = service
        self.model = model
        self.channel = grpc.insecure_channel(service.address)
        self.stub = text_engine_pb2_grpc.TextEngineStub(self.channel)

    def info(self) -> common_pb2.ModelInfo:
        return self.stub.GetModelInfo(common_pb2.GetModelInfoRequest(), timeout=10)

    def state(self) -> str:
        """The model's state by name ("MODEL_STATE_READY", ...)."""
        return common_pb2.ModelState.Name(self.info().state)

    def health(self) -> int:
        """grpc.health.v1's status of the process (health_pb2.HealthCheckResponse.SERVING, ...)."""
        request = health_pb2.HealthCheckRequest()
        return health_pb2_grpc.HealthStub(self.channel).Check(request, timeout=5).status

    def metrics(self) -> Scrape:
        """A scrape of the engine's exporter (started with a metrics port)."""
        assert self.service.metrics_port is not None, f"{self.service.name} runs without a metrics exporter"
        return scrape(f"http://127.0.0.1:{self.service.metrics_port}/metrics")

    def generate(
        self,
        prompt: str = "Tell me a story.",
        max_tokens: int = 16,
        timeout: float = 120,
        first_delta: threading.Event | None = None,
    ) -> tuple[str, pb.Finished | None]:
        """A streamed Generate, consumed whole: (text, finished message); sets `first_delta` on the first token."""
        request = pb.GenerateRequest(
            model=self.model,
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

    def close(self) -> None:
        self.channel.close()
