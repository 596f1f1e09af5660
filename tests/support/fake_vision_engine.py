"""A scripted grpc.aio vision engine: every image gets a known caption.

Tests that check meaning (tests/e2e/test_real_model.py) put a real text model behind the real gateway and
need the caption to be known, so they can ask about it: every image is "a red apple on a wooden table",
except a mostly yellow one, which is "a yellow banana on a plate" (so a test can show that the answer follows
the caption, not the model's favourite fruit). This engine speaks the `Describe` stream protocol
(one `delta` with the whole caption, then `done`, per image) and serves the standard health service. It runs
as a process of its own (`python -m tests.support.fake_vision_engine --port N [--caption TEXT]`), like a real
engine in an e2e stack, or in the test's event loop (`start_fake_vision_engine`).
"""

from __future__ import annotations

import argparse
import asyncio
import io

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from PIL import Image

from services.common.pb.proxyvision.v1 import common_pb2, vision_engine_pb2 as pb, vision_engine_pb2_grpc

VISION = "qwen2-vl-7b"
CAPTION = "a red apple on a wooden table"
YELLOW_CAPTION = "a yellow banana on a plate"


def caption_for(data: bytes, default: str = CAPTION) -> str:
    """YELLOW_CAPTION for an image whose average colour is yellow (red and green high, blue low), else `default`."""
    r, g, b = Image.open(io.BytesIO(data)).convert("RGB").resize((1, 1)).getpixel((0, 0))
    return YELLOW_CAPTION if min(r, g) > 150 and b < 100 else default


class ScriptedVisionEngine(vision_engine_pb2_grpc.VisionEngineServicer):
    """Describes every image as `caption` (a yellow one as YELLOW_CAPTION); remembers the requests it saw."""

    def __init__(self, caption: str = CAPTION) -> None:
        self.caption = caption
        self.calls: list[pb.DescribeRequest] = []

    async def Describe(self, request, context):
        self.calls.append(request)
        for index, image in enumerate(request.images):
            caption = caption_for(image.data, self.caption)
            yield pb.DescribeResponse(delta=pb.CaptionDelta(image_index=index, text=caption))
            yield pb.DescribeResponse(
                done=pb.CaptionDone(
                    image_index=index,
                    finish_reason="stop",
                    image_tokens=1,
                    caption_tokens=len(caption.split()),
                    caption=caption,
                )
            )

    async def GetModelInfo(self, request, context):
        return common_pb2.ModelInfo(
            name=VISION, hf_id="scripted/vision", max_context=4096, state=common_pb2.MODEL_STATE_READY
        )


async def start_fake_vision_engine(
    port: int = 0, caption: str = CAPTION
) -> tuple[grpc.aio.Server, ScriptedVisionEngine]:
    """A started server on 127.0.0.1:`port` (0: a free one), health SERVING; the caller stops the server.

    The servicer carries `address`."""
    server = grpc.aio.server()
    servicer, health_servicer = ScriptedVisionEngine(caption), health.aio.HealthServicer()
    vision_engine_pb2_grpc.add_VisionEngineServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.address = f"127.0.0.1:{bound}"
    return server, servicer


async def _serve(port: int, caption: str) -> None:
    server, _ = await start_fake_vision_engine(port, caption)
    await server.wait_for_termination()


def main() -> None:
    """Serve until SIGTERM (the process helper's stop), which ends the process with the server."""
    parser = argparse.ArgumentParser(prog="python -m tests.support.fake_vision_engine", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--caption", default=CAPTION)
    args = parser.parse_args()
    asyncio.run(_serve(args.port, args.caption))


if __name__ == "__main__":
    main()
