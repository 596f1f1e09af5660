"""What the GPU check measures, one function per phase (benchmarks/gpu_check.py runs them under time limits).

Each returns plain dicts for the JSON summary and prints its own lines as it goes."""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from services.common.pb.proxyvision.v1 import common_pb2
from tests.support.http_servers import ScriptedServer

from .gpu_stack import (
    TEXT_MODEL,
    LauncherStack,
    device_memory_used_mib,
    gpu_memory_by_pid,
    rss_mib,
)
from .load import LoadResult, openai_stream_fn, run_load
from .vision import run_vision_section


@dataclass(frozen=True)
class Profile:
    """Sizes and settings of one kind of run: the real models on a GPU, or the small ones on a CPU."""

    device: str
    size: str
    max_tokens: int
    levels: tuple[int, ...]
    text_params: dict
    vision_params: dict
    idle_unload_secs: int
    caption_repeats: int
    limits: dict  # phase name -> its own limit in seconds (also bounded by what is left of the budget)
    unloaded_max_mib: int  # an engine's GPU memory after its idle unload must be at most this

    @property
    def dtype_flag(self) -> str:
        """The same dtype, as `transformers serve --dtype` spells it."""
        return {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}[self.text_params["dtype"]]


# H200 (141 GB): both real models fit with room (7.7 + 16.6 GB of bf16 weights). Text: 8 GiB of KV cache is
# ~80k tokens at 104 KiB per token, enough for 64 streams of a ~600-token prompt + 128 tokens without
# preemption. Vision: 4 images of 256 tokens + prompt + 32-token captions in one batch.
GPU = Profile(
    device="cuda",
    size="real",
    max_tokens=128,
    levels=(1, 16, 64),
    text_params={"mem": 8192, "dtype": "bf16", "max_num_seqs": 64, "prefill_chunk_size": 2048},
    vision_params={"mem": 4096, "dtype": "bf16", "max_num_seqs": 8},
    idle_unload_secs=20,
    caption_repeats=3,
    limits={
        "bootstrap": 200,
        "build": 200,
        "stack start": 240,
        "text: proxyvision": 120,
        "captions": 120,
        "idle unload": 90,
        "transformers serve start": 200,
        "text: transformers serve": 120,
    },
    unloaded_max_mib=1536,
)
# The tiny stand-ins' sizes on this project's 2-core machine: the same phases, in about two minutes.
CPU = Profile(
    device="cpu",
    size="small",
    max_tokens=16,
    levels=(1, 16, 64),
    text_params={"mem": 64, "dtype": "bf16", "max_num_seqs": 64, "prefill_chunk_size": 2048},
    vision_params={"mem": 64, "dtype": "bf16", "max_num_seqs": 8},
    idle_unload_secs=4,
    caption_repeats=2,
    limits={
        "bootstrap": 60,
        "build": 90,
        "stack start": 120,
        "text: proxyvision": 60,
        "captions": 60,
        "idle unload": 40,
        "transformers serve start": 90,
        "text: transformers serve": 60,
    },
    unloaded_max_mib=0,
)


# One event loop for every phase, closed at the end of the run (close_loop): the SDK's clients outlive a phase,
# and closing their connections on a loop asyncio.run already closed prints "Event loop is closed" tracebacks.
_RUNNER = asyncio.Runner()


def run_async(coroutine):
    """Run `coroutine` on the check's one event loop."""
    return _RUNNER.run(coroutine)


def close_loop() -> None:
    gc.collect()  # the clients' connections close now, while the loop still exists
    _RUNNER.close()


def build_checkpoints(profile: Profile, out: Path, timeout: float) -> dict:
    """services/model_builder/real_size.py in a child process: its CUDA context (and the memory it cached for
    the random init) ends with it, so the stack starts on an empty GPU."""
    command = [
        sys.executable,
        "-m",
        "services.model_builder.real_size",
        "--out",
        str(out),
        "--size",
        profile.size,
        "--device",
        profile.device,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"building the checkpoints failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _load_row(result: LoadResult, expected_tokens: int) -> dict:
    return {
        "concurrency": result.concurrency,
        "tokens": result.tokens,
        "expected_tokens": expected_tokens,
        "wall_s": round(result.wall, 3),
        "tok_per_s": round(result.tokens_per_sec, 1),
        "ttft_p50_ms": round(result.ttft_pct(50) * 1000, 1),
        "ttft_p95_ms": round(result.ttft_pct(95) * 1000, 1),
    }


def text_load(label: str, base_url: str, model: str, profile: Profile) -> dict[str, dict]:
    """Warm up, then one run per concurrency level (1, 16, 64 streams x max_tokens). Both contenders get the
    same requests: greedy, no extra fields (`transformers serve` refuses fields it does not know)."""
    fn = openai_stream_fn(base_url, model)

    async def measure() -> list[LoadResult]:
        await fn("warm up", 4)
        await run_load("warm up", fn, max(profile.levels), 8)
        return [await run_load(label, fn, level, profile.max_tokens) for level in profile.levels]

    rows = {}
    for result in run_async(measure()):
        print("  " + result.row(), flush=True)
        rows[str(result.concurrency)] = _load_row(result, result.concurrency * profile.max_tokens)
    return rows


def captions(stack: LauncherStack, profile: Profile) -> dict:
    """benchmarks/vision.py's section against the stack: caption latency for 1 and 4 images in one Describe,
    a cached repeat, and a one-image streamed chat's TTFT split (fetch + vision + text)."""
    server = ScriptedServer({})
    try:
        results = run_vision_section(
            stack.engines["vision"], stack.base_url, TEXT_MODEL, server, profile.caption_repeats
        )
    finally:
        server.close()
    for line in results.report().splitlines():
        print("  " + line, flush=True)
    return {key: round(value, 1) for key, value in vars(results).items()}


def _memory_now(stack: LauncherStack, cuda: bool) -> dict:
    pids = stack.engine_pids()
    reading: dict = {f"{kind}_engine_rss_mib": round(rss_mib(pid) or 0, 1) for kind, pid in pids.items()}
    if cuda:
        table = gpu_memory_by_pid()
        for kind, pid in pids.items():
            reading[f"{kind}_engine_gpu_mib"] = None if table is None else table.get(pid)
        reading["device_used_mib"] = device_memory_used_mib()
    return reading


def _wait_unloaded(stack: LauncherStack, timeout: float) -> dict[str, float]:
    """Poll both engines' GetModelInfo until each says UNLOADED; seconds from now until each did."""
    started = time.monotonic()
    waits: dict[str, float] = {}
    while len(waits) < 2:
        for kind in ("text", "vision"):
            if kind not in waits and stack.model_info(kind).state == common_pb2.MODEL_STATE_UNLOADED:
                waits[kind] = round(time.monotonic() - started, 1)
        if time.monotonic() - started > timeout:
            raise AssertionError(f"engines not UNLOADED after {timeout:.0f}s (unloaded: {sorted(waits)})")
        time.sleep(0.25)
    return waits


def idle_unload(stack: LauncherStack, profile: Profile, baseline_device_mib: int | None) -> dict:
    """Memory of each engine process while loaded (after a request to each), then after both unloaded themselves
    (`idle_unload_secs` with nothing to do). On a GPU the figure is nvidia-smi's per-process memory; the
    device-wide figure (mem_get_info) backs it up where the per-process table is empty (containers)."""
    cuda = profile.device.startswith("cuda")
    # Both models loaded and used just now (either may have unloaded itself while the other was measured).
    run_async(openai_stream_fn(f"{stack.base_url}/v1", TEXT_MODEL)("touch", 2))
    _touch_vision(stack)
    before = _memory_now(stack, cuda)
    states = {kind: common_pb2.ModelState.Name(stack.model_info(kind).state) for kind in ("text", "vision")}
    waits = _wait_unloaded(stack, profile.idle_unload_secs + 60)
    after = _memory_now(stack, cuda)
    if cuda:
        # The engine frees and empties its cache as it unloads; let the driver's accounting catch up (bounded).
        deadline = time.monotonic() + 10
        while not _dropped(after, profile) and time.monotonic() < deadline:
            time.sleep(0.5)
            after = _memory_now(stack, cuda)
    result = {
        "before": before,
        "states_before": states,
        "after": after,
        "seconds_until_unloaded": waits,
        "baseline_device_mib": baseline_device_mib,
        "idle_unload_secs": profile.idle_unload_secs,
    }
    if cuda:
        result["unload_ok"] = _dropped(after, profile)
        result["threshold_mib"] = profile.unloaded_max_mib
    else:
        result["unload_ok"] = all(
            stack.model_info(k).state == common_pb2.MODEL_STATE_UNLOADED for k in ("text", "vision")
        )
        result["gpu"] = "n/a on cpu"
    return result


def _dropped(reading: dict, profile: Profile) -> bool:
    figures = [reading.get(f"{kind}_engine_gpu_mib") for kind in ("text", "vision")]
    if all(f is not None for f in figures):
        return all(f <= profile.unloaded_max_mib for f in figures)
    return False  # no per-process figure: the device-wide one is printed for a person to judge


def _touch_vision(stack: LauncherStack) -> None:
    import grpc

    from services.common.pb.proxyvision.v1 import vision_engine_pb2 as pb, vision_engine_pb2_grpc

    from .vision import fresh_image

    request = pb.DescribeRequest(
        images=[common_pb2.ImageInput(data=fresh_image(), mime_type="image/jpeg")], max_tokens=4
    )
    with grpc.insecure_channel(stack.engines["vision"]) as channel:
        for _ in vision_engine_pb2_grpc.VisionEngineStub(channel).Describe(request, timeout=120):
            pass


def memory_lines(memory: dict, cuda: bool) -> list[str]:
    """The memory figures as a person reads them."""
    lines = []
    for when in ("before", "after"):
        reading = memory[when]
        label = "loaded (after a request)" if when == "before" else "after the idle unload"
        if cuda:
            parts = [f"{kind} engine {_mib(reading.get(f'{kind}_engine_gpu_mib'))} GPU" for kind in ("text", "vision")]
            parts.append(
                f"device in use {_mib(reading.get('device_used_mib'))} (baseline {_mib(memory['baseline_device_mib'])})"
            )
        else:
            parts = ["GPU memory: n/a on cpu"]
        parts += [f"{kind} engine RSS {_mib(reading.get(f'{kind}_engine_rss_mib'))}" for kind in ("text", "vision")]
        lines.append(f"  {label:<26} " + ", ".join(parts))
    verdict = "dropped to near zero" if memory["unload_ok"] else "DID NOT drop to near zero"
    if cuda:
        lines.append(
            f"  idle unload: engine GPU memory {verdict} (<= {memory['threshold_mib']} MiB per engine: its CUDA context)"
        )
    else:
        lines.append(
            f"  idle unload: both engines unloaded ({memory['seconds_until_unloaded']}); GPU memory n/a on cpu"
        )
    return lines


def _mib(value) -> str:
    return "n/a" if value is None else f"{value:.0f} MiB"
