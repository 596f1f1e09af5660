"""`make bench-engines`: the two backends of our text engine, and vLLM's own server, on one checkpoint, in one run.

Contenders, each started alone and measured over R rounds, then stopped, one after another in one run: an idle
vLLM server is not idle on a 2-core machine (its worker's OpenMP threads spin between steps; measured here, the
transformers contender lost 13-20 % with both vLLM servers up beside it), so contenders do not share the machine.
`--together` starts them all at once and alternates them round by round instead (as make bench-gguf does):
  (a) ProxyVision, backend: transformers: gateway -> gRPC -> text engine (transformers' continuous batching),
  (b) ProxyVision, backend: vllm: the same gateway and engine, with vLLM's engine core under it (.venv-vllm),
  (c) vLLM's own OpenAI server (`python -m vllm.entrypoints.openai.api_server`, .venv-vllm), for reference: what
      our hops (gateway, gRPC, our detokenizer and parsers) cost on top of vLLM.
Same checkpoint (SmolLM2-135M-Instruct, real weights, by default), dtype, block size, KV cache (num_blocks x 64
tokens: `mem` for ours, `--kv-cache-memory-bytes` for vLLM's, which also keeps one null block), max_num_seqs and
eager mode (vLLM on the CPU: no torch.compile, as our backend runs it). Load: 1 and C concurrent streaming chats x
T tokens, greedy, through the official SDK. Then each contender answers the same prompts greedily (not streamed)
and the texts are compared.

Prints the rows, `vllm/transformers = R at C streams` ((b)/(a) tok/s), `served vllm / vllm's own server = S`
((b)/(c)) and `greedy tokens identical: yes|no` ((a) vs (b): same text and the same completion token count).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import math
import os
import platform
import tempfile
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig

from services.common.backends import vllm_python
from services.common.hf_models import MIB, kv_bytes_per_token as per_token
from services.common.vllm_core import DEFAULT_RESERVED_CPUS
from tests.support.models_yaml import ModelsYaml
from tests.support.processes import free_port, stop_all
from tests.support.real_model import smollm2_checkpoint

from .load import PROMPTS, Summary, openai_stream_fn, run_load
from .servers import spawn, text_stack, wait_ready

LABELS = {"a": "(a) ProxyVision transformers", "b": "(b) ProxyVision vllm", "c": "(c) vLLM's own server"}
MODEL_NAME = "bench-model"


def kv_bytes_per_token(model_dir: str) -> int:
    """K and V of every layer for one float32 token (what both backends size their cache by)."""
    return per_token(AutoConfig.from_pretrained(model_dir).get_text_config(), torch.float32)


@contextmanager
def our_stack(model_dir: str, backend: str, num_blocks: int, concurrency: int, work: Path, env: dict):
    """Text engine on `backend` + gateway, as the launcher runs them. Yields the OpenAI base URL."""
    mem = max(1, math.ceil(num_blocks * 64 * kv_bytes_per_token(model_dir) / MIB))
    config = (
        ModelsYaml()
        .text(
            MODEL_NAME,
            local_path=model_dir,
            backend=backend,
            tiny_defaults=False,
            params={"mem": mem, "dtype": "f32", "max_num_seqs": concurrency, "block_size": 64},
            capabilities={"vision_mode": "disabled"},
        )
        .set(idle_unload_secs=0)
    )
    work = work / backend
    work.mkdir()
    with text_stack(config, MODEL_NAME, work, timeout=900, engine_env=env, engine_backend=backend) as stack:
        yield stack.base_url


@contextmanager
def vllm_own_server(model_dir: str, num_blocks: int, concurrency: int, work: Path, env: dict):
    """vLLM's OpenAI-compatible server on the same checkpoint and cache. Yields the OpenAI base URL."""
    port = free_port()
    cache = (num_blocks + 1) * 64 * kv_bytes_per_token(model_dir)  # + the null block, as our adapter gives it
    proc = spawn(
        [
            vllm_python(),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            model_dir,
            "--served-model-name",
            MODEL_NAME,
            "--dtype",
            "float32",
            "--max-num-seqs",
            str(concurrency),
            "--max-model-len",
            str(num_blocks * 64),
            "--block-size",
            "64",
            "--kv-cache-memory-bytes",
            str(cache),
            "--enforce-eager",
            "--disable-log-stats",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        work / "vllm_server.log",
        port,
        env,
    )
    try:
        wait_ready(f"{proc.url}/health", [proc], 900)
        yield f"{proc.url}/v1"
    finally:
        stop_all([proc])


async def measure(contenders: dict, concurrency: int, max_tokens: int, rounds: int) -> dict:
    """Warm every contender up, then per round: each one alone at 1 stream, then at `concurrency` streams."""
    for fn in contenders.values():
        await run_load("warm up", fn, concurrency, 8)
    runs: dict[str, tuple[list, list]] = {key: ([], []) for key in contenders}
    for _ in range(rounds):
        for key, fn in contenders.items():
            runs[key][0].append(await run_load(LABELS[key], fn, 1, max_tokens))
            runs[key][1].append(await run_load(LABELS[key], fn, concurrency, max_tokens))
    return {key: (Summary(LABELS[key], one), Summary(LABELS[key], many)) for key, (one, many) in runs.items()}


async def greedy_answers(base_url: str, max_tokens: int) -> list[tuple[str, int]]:
    """Each prompt's greedy answer (text, completion tokens), not streamed."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=600)
    answers = []
    for prompt in PROMPTS:
        reply = await client.chat.completions.create(
            model=MODEL_NAME, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0
        )
        answers.append((reply.choices[0].message.content, reply.usage.completion_tokens))
    return answers


def report(results: dict, answers: dict, concurrency: int) -> str:
    lines = []
    for single, multi in results.values():
        lines += [f"{single.row()}  {single.runs[0].tokens} tok", f"{multi.row()}  {multi.runs[0].tokens} tok"]
    if "a" in results and "b" in results:
        (a1, an), (b1, bn) = results["a"], results["b"]
        lines.append(
            f"\nvllm/transformers = {bn.tokens_per_sec / an.tokens_per_sec:.2f} at {concurrency} streams "
            f"({b1.tokens_per_sec / a1.tokens_per_sec:.2f} at 1 stream; TTFT p50 ratio "
            f"{bn.ttft_pct(50) / an.ttft_pct(50):.2f} at {concurrency})"
        )
    if "b" in results and "c" in results:
        (b1, bn), (c1, cn) = results["b"], results["c"]
        lines.append(
            f"served vllm / vllm's own server = {bn.tokens_per_sec / cn.tokens_per_sec:.2f} at {concurrency} "
            f"streams ({b1.tokens_per_sec / c1.tokens_per_sec:.2f} at 1 stream)"
        )
    if "a" in answers and "b" in answers:
        same = answers["a"] == answers["b"]
        lines.append(f"greedy tokens identical: {'yes' if same else 'no'} ((a) vs (b), {len(PROMPTS)} prompts)")
        if not same:
            lines += [f"  (a) {a!r}\n  (b) {b!r}" for a, b in zip(answers["a"], answers["b"]) if a != b]
    if "c" in answers and "b" in answers:
        lines.append(
            f"  (c) vLLM's own server, same text as (b): {'yes' if answers['c'] == answers['b'] else 'no'} "
            "(it renders the chat template itself)"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", help="checkpoint (default: SmolLM2-135M-Instruct, converted by make models)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-blocks", type=int, default=32, help="KV cache of every contender, in 64-token blocks")
    parser.add_argument("--contenders", default="a,b,c")
    parser.add_argument("--together", action="store_true", help="start all contenders at once and alternate them")
    parser.add_argument(
        "--vllm-reserved-cpus",
        help="VLLM_CPU_NUM_OF_RESERVED_CPU for (b) and (c) (default: what "
        "our engine sets, 0, for both; vLLM's own default is 1)",
    )
    parser.add_argument("--work", help="keep the servers' logs in this directory (default: a temporary one)")
    args = parser.parse_args()
    model_dir = args.model_dir or str(smollm2_checkpoint())
    keys = args.contenders.split(",")
    vllm_env = {"VLLM_CPU_NUM_OF_RESERVED_CPU": args.vllm_reserved_cpus or DEFAULT_RESERVED_CPUS}
    header = (
        f"{datetime.date.today()}  {platform.node()}  {platform.machine()}  cores={os.cpu_count()}  torch "
        f"{torch.__version__}  transformers {transformers.__version__} (vLLM's venv has its own)  model "
        f"{Path(model_dir).name}  cache {args.num_blocks}x64 tokens  vLLM env {vllm_env or 'default'}"
    )
    with tempfile.TemporaryDirectory(prefix="pv-bench-engines-") as tmp, ExitStack() as stack:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        blocks, streams = args.num_blocks, args.concurrency
        servers = {
            "a": lambda: our_stack(model_dir, "transformers", blocks, streams, work, {}),
            "b": lambda: our_stack(model_dir, "vllm", blocks, streams, work, vllm_env),
            "c": lambda: vllm_own_server(model_dir, blocks, streams, work, vllm_env),
        }
        results, answers = {}, {}

        def run(running: dict[str, str]) -> None:
            contenders = {key: openai_stream_fn(url, MODEL_NAME) for key, url in running.items()}
            results.update(asyncio.run(measure(contenders, args.concurrency, args.max_tokens, args.rounds)))
            answers.update({key: asyncio.run(greedy_answers(url, args.max_tokens)) for key, url in running.items()})

        if args.together:
            run({key: stack.enter_context(servers[key]()) for key in keys})
        else:
            for key in keys:
                with servers[key]() as url:
                    run({key: url})
    print(f"\nProxyVision engine backends benchmark  {header}")
    how = "started together, alternated" if args.together else "each alone, one after another"
    print(
        f"load: 1 and {args.concurrency} concurrent streams x {args.max_tokens} tokens, greedy; contenders {how}, "
        f"{args.rounds} rounds, medians\n"
    )
    print(report(results, answers, args.concurrency), flush=True)


if __name__ == "__main__":
    main()
