"""The vision section of `make bench`: batching, the caption cache, and where a multimodal TTFT goes.

Runs against a real vision engine, text engine and gateway (child processes). Every caption that must
not be cached uses a fresh image (a new colour), so the numbers are model work, not cache hits.
"""

from __future__ import annotations

import io
import itertools
import statistics
import time
from dataclasses import dataclass

import grpc
from PIL import Image

from services.common.pb.proxyvision.v1 import common_pb2, vision_engine_pb2 as pb, vision_engine_pb2_grpc

from .image_path_stack import timed_chat

_colours = itertools.count(1)


def fresh_image(size: tuple[int, int] = (448, 448)) -> bytes:
    """A JPEG never seen before (unique colour), so it cannot be in the caption cache."""
    n = next(_colours)
    image = Image.new("RGB", size, ((n * 37) % 256, (n * 91) % 256, (n * 53) % 256))
    image.paste(((n * 13) % 256, 0, 0), (0, 0, size[0] // 2, size[1] // 2))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG")
    return buffer.getvalue()


@dataclass
class VisionResults:
    one_image_ms: float
    four_images_ms: float
    first_ms: float
    cached_ms: float
    e2e_ttft_ms: float
    fetch_ms: float
    vision_ms: float
    text_ttft_ms: float

    def report(self) -> str:
        return "\n".join(
            [
                f"caption latency, 1 image            {self.one_image_ms:8.1f} ms",
                f"caption latency, 4 images (1 call)  {self.four_images_ms:8.1f} ms   ratio 4/1 = {self.four_images_ms / self.one_image_ms:.2f}   [<= 2.0]",
                f"first describe                      {self.first_ms:8.1f} ms",
                f"cached repeat                       {self.cached_ms:8.1f} ms   ratio cached/first = {self.cached_ms / self.first_ms:.3f}   [<= 0.05]",
                f"one-image streamed chat TTFT        {self.e2e_ttft_ms:8.1f} ms   = fetch {self.fetch_ms:.1f} + vision {self.vision_ms:.1f} "
                f"+ text {self.text_ttft_ms:.1f} (+ {self.e2e_ttft_ms - self.fetch_ms - self.vision_ms - self.text_ttft_ms:.1f} HTTP/gateway)",
            ]
        )


def _describe_ms(stub, images: list[bytes], max_tokens: int) -> float:
    request = pb.DescribeRequest(
        images=[common_pb2.ImageInput(data=d, mime_type="image/jpeg") for d in images], max_tokens=max_tokens
    )
    started = time.perf_counter()
    for _ in stub.Describe(request):
        pass
    return (time.perf_counter() - started) * 1000


def run_vision_section(vision_address: str, base_url: str, model: str, image_server, repeats: int = 3) -> VisionResults:
    """Measure everything; medians of `repeats` runs."""
    with grpc.insecure_channel(vision_address) as channel:
        stub = vision_engine_pb2_grpc.VisionEngineStub(channel)
        _describe_ms(stub, [fresh_image()], 32)  # warm-up
        one = statistics.median(_describe_ms(stub, [fresh_image()], 32) for _ in range(repeats))
        four = statistics.median(_describe_ms(stub, [fresh_image() for _ in range(4)], 32) for _ in range(repeats))
        firsts, cached = [], []
        for _ in range(repeats):
            image = fresh_image()
            firsts.append(_describe_ms(stub, [image], 32))
            cached.append(_describe_ms(stub, [image], 32))
    runs = []
    for _ in range(repeats):
        path = f"/bench-{next(_colours)}.jpg"
        image_server.add(path, fresh_image())
        messages = [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe this image:"},
                    {"type": "image_url", "image_url": {"url": f"{image_server.base}{path}"}},
                ],
            }
        ]
        runs.append(timed_chat(base_url, model, messages, max_tokens=16))
    ttft = statistics.median(r.ttft_ms for r in runs)
    split = {k: statistics.median(r.split[k] for r in runs) for k in ("fetch_ms", "vision_ms", "text_ttft_ms")}
    return VisionResults(
        one,
        four,
        statistics.median(firsts),
        statistics.median(cached),
        ttft,
        split["fetch_ms"],
        split["vision_ms"],
        split["text_ttft_ms"],
    )
