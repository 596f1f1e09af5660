"""Wire a VisionEngine gRPC server: servicer, health (follows the engine's state), reflection, metrics, drain."""

from __future__ import annotations

from services.common.config import ModelEntry
from services.common.engine_server import EngineOptions, EngineServer
from services.common.metrics import VisionMetrics
from services.common.pb.proxyvision.v1 import vision_engine_pb2, vision_engine_pb2_grpc

from .captioner.engine import CaptionEngine
from .servicer import VisionEngineServicer

SERVICE_NAME = vision_engine_pb2.DESCRIPTOR.services_by_name["VisionEngine"].full_name


class VisionEngineServer(EngineServer):
    """The vision engine process: `start()` binds the port (0 picks a free one) and loads the model."""

    def __init__(self, entry: ModelEntry, options: EngineOptions, *, idle_unload_secs: int) -> None:
        super().__init__(SERVICE_NAME, options, VisionMetrics(entry.name))
        settings = entry.vision_proxy
        self.engine = CaptionEngine(
            entry,
            cache_entries=settings.cache_max_entries,
            cache_bytes=settings.cache_max_bytes,
            **self.engine_hooks(idle_unload_secs),
        )
        vision_engine_pb2_grpc.add_VisionEngineServicer_to_server(VisionEngineServicer(self.engine), self.server)
