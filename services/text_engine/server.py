"""Wire a TextEngine gRPC server: servicer, health (follows the engine's state), reflection, metrics, drain."""

from __future__ import annotations

from services.common.config import ModelEntry
from services.common.engine_server import EngineOptions, EngineServer
from services.common.metrics import EngineMetrics
from services.common.pb.proxyvision.v1 import text_engine_pb2, text_engine_pb2_grpc

from .engine.engine import InferenceEngine
from .servicer import TextEngineServicer

SERVICE_NAME = text_engine_pb2.DESCRIPTOR.services_by_name["TextEngine"].full_name


class TextEngineServer(EngineServer):
    """The text engine process: `start()` binds the port (0 picks a free one) and loads the model."""

    def __init__(self, entry: ModelEntry, options: EngineOptions, *, idle_unload_secs: int) -> None:
        super().__init__(SERVICE_NAME, options, EngineMetrics(entry.name))
        self.engine = InferenceEngine(entry, **self.engine_hooks(idle_unload_secs))
        text_engine_pb2_grpc.add_TextEngineServicer_to_server(TextEngineServicer(self.engine), self.server)
