"""The machinery of the image-path benchmark (benchmarks/image_path.py): its stack of real processes, an image
server that answers each path after a delay of its own, and timed clients (streamed chat, Describe, metrics).

The stack: one text engine per text checkpoint, one vision engine per caption limit (`max_caption_tokens`), and
one gateway per caption limit, every gateway in front of the same text engines. The text engines export
Prometheus metrics (the prefix cache's hits and queries). Everything is a child process on loopback.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx

from services.common.pb.proxyvision.v1 import common_pb2, vision_engine_pb2 as pb, vision_engine_pb2_grpc
from tests.support.http_servers import ScriptedServer, send_bytes
from tests.support.models_yaml import ModelsYaml
from tests.support.processes import ServiceProcess, free_port, stop_all
from tests.support.stack import start_gateway, start_text_engine, start_vision_engine

from .servers import OFFLINE, QUIET, wait_ready

CAPTIONER = "captioner"
TEXT_PARAMS = {"mem": 64, "dtype": "f32", "max_num_seqs": 16, "prefill_chunk_size": 1024}
VISION_PARAMS = {"mem": 256, "dtype": "f32", "max_num_seqs": 4}
DETAILS = {"low": common_pb2.DETAIL_LOW, "auto": common_pb2.DETAIL_AUTO, "high": common_pb2.DETAIL_HIGH}


@dataclass(frozen=True)
class ImagePathStack:
    """Where a running image-path stack answers: a gateway (base URL, no /v1) and its vision engine (gRPC) per
    caption limit, and each text model's metrics URL."""

    gateways: dict[int, str]
    vision: dict[int, str]
    text_metrics: dict[str, str]


@contextmanager
def image_path_stack(text_models: dict[str, str], vision_dir: str, work: Path, caption_limits: tuple[int, ...]):
    """`text_models`: model name -> checkpoint, each served by its own engine and captioned by the proxy; one
    vision engine + gateway per caption limit. All processes load at once; yields an ImagePathStack when every
    gateway is ready."""
    text_models = {name: str(Path(checkpoint).resolve()) for name, checkpoint in text_models.items()}
    vision_dir = str(Path(vision_dir).resolve())
    text_ports = {name: (free_port(), free_port()) for name in text_models}  # gRPC, metrics
    vision_ports = {limit: free_port() for limit in caption_limits}
    services: list[ServiceProcess] = []
    gateways: dict[int, ServiceProcess] = {}
    try:
        for limit in caption_limits:
            config = ModelsYaml()
            for name, checkpoint in text_models.items():
                config.text(
                    name,
                    local_path=checkpoint,
                    endpoint=f"127.0.0.1:{text_ports[name][0]}",
                    tiny_defaults=False,
                    params=TEXT_PARAMS,
                    capabilities={"vision_mode": "disabled"},
                )
            config.vision(
                CAPTIONER,
                local_path=vision_dir,
                endpoint=f"127.0.0.1:{vision_ports[limit]}",
                tiny_defaults=False,
                prompt_template=None,
                params=VISION_PARAMS,
            )
            config.entry(CAPTIONER)["capabilities"]["vision_proxy"] = {"max_caption_tokens": limit}
            path = (
                config.set(idle_unload_secs=0)
                .gateway(images={"allow_private_networks": ["127.0.0.0/8"]})
                .write(work / f"image-path-{limit}.models.yaml")
            )
            if limit == caption_limits[0]:  # the text engines read the first config; every gateway points at them
                for name, (port, metrics_port) in text_ports.items():
                    services.append(
                        start_text_engine(
                            path,
                            work,
                            model=name,
                            port=port,
                            metrics_port=metrics_port,
                            args=QUIET,
                            env=OFFLINE,
                            wait=False,
                        )
                    )
            services.append(
                start_vision_engine(
                    path, work, model=CAPTIONER, port=vision_ports[limit], args=QUIET, env=OFFLINE, wait=False
                )
            )
            gateways[limit] = start_gateway(path, work, args=QUIET, env=OFFLINE, ready=None)
            services.append(gateways[limit])
        for gateway in gateways.values():
            wait_ready(f"{gateway.url}/ready", services)
        yield ImagePathStack(
            {limit: g.url for limit, g in gateways.items()},
            {limit: f"127.0.0.1:{port}" for limit, port in vision_ports.items()},
            {name: f"http://127.0.0.1:{ports[1]}/metrics" for name, ports in text_ports.items()},
        )
    finally:
        stop_all(services[::-1])


class DelayedImageServer:
    """Serves images on loopback, each path after its own delay (a slow origin), and notes when each response
    was written (perf_counter seconds): the moment the gateway had that image."""

    def __init__(self) -> None:
        self._server = ScriptedServer({})
        self.base = self._server.base
        self.sent: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, path: str, data: bytes, delay_s: float = 0.0) -> str:
        """Serve `data` at `path` after `delay_s`; returns its URL."""
        send = send_bytes(data, "image/jpeg")

        def route(handler) -> None:
            time.sleep(delay_s)
            send(handler)
            with self._lock:
                self.sent[path] = time.perf_counter()

        self._server.route(path, route)
        return f"{self.base}{path}"

    def close(self) -> None:
        self._server.close()


@dataclass
class ChatTiming:
    """One streamed chat: TTFT (ms, first non-empty content or reasoning delta), the gateway's own split from
    its `: timing` comment (fetch_ms, vision_ms, text_ttft_ms), each image's proxy_vision report, prompt tokens."""

    started: float  # perf_counter seconds
    ttft_ms: float
    split: dict[str, float] = field(default_factory=dict)
    captions: tuple[dict, ...] = ()
    prompt_tokens: int = 0

    @property
    def caption_ms(self) -> float:
        """The vision engine's own time of the slowest image (the proxy_vision chunk's `ms`)."""
        return max((c.get("ms", 0.0) for c in self.captions), default=0.0)

    @property
    def rest_ms(self) -> float:
        """TTFT less fetch, vision and the text engine's first token: HTTP, parsing, framing."""
        return self.ttft_ms - sum(self.split.get(k, 0.0) for k in ("fetch_ms", "vision_ms", "text_ttft_ms"))


def timed_chat(base_url: str, model: str, messages: list[dict], max_tokens: int = 8) -> ChatTiming:
    """POST a streamed chat (greedy, usage included) and time it: TTFT is the first token of its answer or of its
    reasoning (a reasoning model may spend all its tokens thinking)."""
    body = {
        "model": model,
        "stream": True,
        "max_tokens": max_tokens,
        "temperature": 0,
        "messages": messages,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    out = ChatTiming(started, 0.0)
    ttft = None
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=600) as reply:
        reply.raise_for_status()
        for line in reply.iter_lines():
            if line.startswith(": timing"):
                out.split = {k: float(v) for k, v in (item.split("=") for item in line.split()[2:])}
                continue
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(f"{model}: {chunk['error']}")
            out.captions = tuple(chunk.get("proxy_vision", {}).get("images", ())) or out.captions
            if chunk.get("usage"):
                out.prompt_tokens = chunk["usage"].get("prompt_tokens", 0)
            for choice in chunk.get("choices", ()):
                delta = choice.get("delta", {})
                if ttft is None and ((delta.get("content") or "") + (delta.get("reasoning_content") or "")):
                    ttft = (time.perf_counter() - started) * 1000
    if ttft is None:  # a figure from a stream that sent no token would be a false one
        raise RuntimeError(f"{model}: a streamed chat of {max_tokens} tokens sent no token")
    out.ttft_ms = ttft
    return out


def text_only_chat(base_url: str, model: str, messages: list[dict], max_tokens: int = 1) -> float:
    """A non-streamed text-only chat; returns its latency (ms)."""
    started = time.perf_counter()
    body = {"model": model, "max_tokens": max_tokens, "temperature": 0, "messages": messages}
    httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=600).raise_for_status()
    return (time.perf_counter() - started) * 1000


@dataclass(frozen=True)
class DescribeTiming:
    """One image described by the vision engine directly: what it saw and made, its time and the call's."""

    image_tokens: int
    caption_tokens: int
    engine_ms: float
    call_ms: float


def describe(address: str, image: bytes, detail: str = "auto", max_tokens: int = 0) -> DescribeTiming:
    """One Describe of one JPEG at `detail` (`max_tokens` 0: the engine's max_caption_tokens)."""
    request = pb.DescribeRequest(
        images=[common_pb2.ImageInput(data=image, mime_type="image/jpeg", detail=DETAILS[detail])],
        max_tokens=max_tokens,
    )
    with grpc.insecure_channel(address) as channel:
        stub = vision_engine_pb2_grpc.VisionEngineStub(channel)
        started = time.perf_counter()
        done = [r.done for r in stub.Describe(request, timeout=300) if r.WhichOneof("event") == "done"]
        call_ms = (time.perf_counter() - started) * 1000
    return DescribeTiming(done[0].image_tokens, done[0].caption_tokens, done[0].elapsed_ms, call_ms)


def prefix_cache_counts(metrics_url: str) -> tuple[float, float]:
    """(hits, queries) of the text engine's prefix cache so far, in prompt tokens, summed over its models."""
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    totals = {"hits": 0.0, "queries": 0.0}
    for kind, value in re.findall(r"^proxyvision_prefix_cache_(hits|queries)_total(?:\{[^}]*\})? (\S+)$", text, re.M):
        totals[kind] += float(value)
    return totals["hits"], totals["queries"]
