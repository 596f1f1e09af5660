"""`make bench`: our stack against the in-process manager and `transformers serve`, in one run.

Contenders, all on the same checkpoint, cache size and load, run one after another in this process tree:
  (a) the in-process continuous-batching manager (the ceiling: no gRPC, no HTTP),
  (b) our gateway -> gRPC -> text engine,
  (c) `transformers serve --continuous-batching`.
Load: C concurrent streaming chats x T tokens, and a single stream. Prints tokens/s and TTFT p50/p95 for
each, then the ratios the issue sets targets for. Numbers are never hard-coded anywhere: rerun to see.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import math
import platform
import tempfile
from pathlib import Path

import torch

from services.common.config import ModelParams
from services.common.hf_models import MIB, kv_bytes_per_token
from tests.support.http_servers import ScriptedServer

from .budget import budget_sweep, cold_start, report as budget_report
from .image_path import run_image_path_section
from .inprocess import InProcessManager
from .load import Summary, openai_stream_fn, run_load
from .multiturn import run_multiturn
from .native_vision import run_native_section
from .roofline import ModelCost, bound_by, measure_machine, roofline_tokens_per_sec
from .servers import native_stack, our_stack, transformers_serve, vision_stack
from .vision import run_vision_section

MODEL_NAME = "bench-text"


async def interleaved(
    contenders: dict, concurrency: int, max_tokens: int, rounds: int
) -> dict[str, tuple[Summary, Summary]]:
    """Alternate the contenders round by round (this machine's speed drifts; alternating spreads the drift
    evenly); report medians across rounds."""
    for fn in contenders.values():
        await fn("warm up", 4)
        await run_load("warm up", fn, concurrency, 8)
    runs: dict[str, tuple[list, list]] = {key: ([], []) for key in contenders}
    for _ in range(rounds):
        for key, fn in contenders.items():
            runs[key][0].append(await run_load(f"{LABELS[key]} single", fn, 1, max_tokens))
            runs[key][1].append(await run_load(LABELS[key], fn, concurrency, max_tokens))
    return {
        key: (Summary(f"{LABELS[key]} single", single), Summary(LABELS[key], multi))
        for key, (single, multi) in runs.items()
    }


LABELS = {"a": "(a) in-process CB manager", "b": "(b) ProxyVision gateway+engine", "c": "(c) transformers serve --cb"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5, help="rounds (text) / repetitions (vision)")
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--num-blocks", type=int, default=64)
    parser.add_argument("--tiny-dir", default="models/tiny", help="where the tiny text and vision models are")
    parser.add_argument("--budgets", default="64,256,1024", help="params.mem values (MiB) of the budget sweep")
    parser.add_argument("--sections", default="text,budget,vision,native,multiturn,image", help="which sections to run")
    args = parser.parse_args()
    model_dir = str(Path(args.model_dir).resolve())

    # One cache for everybody: num_blocks x block_size tokens. Our config speaks MiB, so convert.
    from transformers import AutoConfig

    text_config = AutoConfig.from_pretrained(model_dir).get_text_config()
    per_token = kv_bytes_per_token(text_config, torch.float32)
    mem_mib = max(1, math.ceil(args.num_blocks * args.block_size * per_token / MIB))
    params = {
        "mem": mem_mib,
        "dtype": "f32",
        "max_num_seqs": args.concurrency,
        "prefill_chunk_size": 1024,
        "block_size": args.block_size,
    }
    sections = set(args.sections.split(","))
    header = (
        f"{datetime.date.today()}  {platform.node()}  {platform.processor() or platform.machine()}"
        f"  torch {torch.__version__}  cores={__import__('os').cpu_count()}"
    )
    with tempfile.TemporaryDirectory(prefix="pv-bench-") as tmp:
        work = Path(tmp)
        if "text" in sections:
            results = text_section(model_dir, params, args, work)
            print_text_section(results, args, model_dir, header)
            print_roofline(results, args, model_dir)
        if "budget" in sections:
            budgets = tuple(int(b) for b in args.budgets.split(","))
            rows = budget_sweep(
                model_dir,
                MODEL_NAME,
                params,
                work,
                budgets,
                args.concurrency,
                args.max_tokens,
                max(1, args.repeats // 2 + 1),
            )
            cold = cold_start(model_dir, MODEL_NAME, {**params, "mem": 64}, work, args.repeats)
            print(f"\nProxyVision budget benchmark  {header}\nmodel {model_dir}")
            print(budget_report(rows, cold, args.concurrency, args.max_tokens))
        if "vision" in sections:
            vision = vision_section(args, work)
            print(f"\nProxyVision vision benchmark (tiny Qwen2-VL stand-in, 448x448 images, medians of {args.repeats})")
            print(vision.report())
        if "multiturn" in sections:
            multiturn = multiturn_section(args, model_dir, params, work)
            print(
                f"\nProxyVision multi-turn: a 5-turn conversation re-sending its history (and image), medians of {args.repeats}"
            )
            print(multiturn.report())
        if "native" in sections:
            native = native_section(args, work)
            print(
                f"\nProxyVision native vs proxy vision (tiny Ministral-3 + its Pixtral tower vs tiny Qwen2-VL captions, "
                f"448x448 images, medians of {args.repeats})"
            )
            print(native.report())
        if "image" in sections:
            image = run_image_path_section(args.tiny_dir, work, max(1, args.repeats // 2 + 1))
            print(
                f"\nProxyVision image path (tiny Qwen2-VL captions, tiny Ministral-3 and bench-text as text models, "
                f"medians of {image.repeats})"
            )
            print(image.report())


def text_section(model_dir: str, params: dict, args, work: Path) -> dict:
    manager = InProcessManager(model_dir, ModelParams(**params))
    try:
        with (
            our_stack(model_dir, MODEL_NAME, params, work) as ours,
            transformers_serve(model_dir, args.block_size, args.num_blocks, 1024, work) as theirs,
        ):
            contenders = {
                "a": manager.stream,
                "b": openai_stream_fn(ours.base_url, MODEL_NAME),
                "c": openai_stream_fn(theirs, model_dir),
            }
            return asyncio.run(interleaved(contenders, args.concurrency, args.max_tokens, args.repeats))
    finally:
        manager.close()


def print_text_section(results: dict, args, model_dir: str, header: str) -> None:
    print(f"\nProxyVision text benchmark  {header}")
    print(
        f"model {model_dir}  load: {args.concurrency} concurrent streams x {args.max_tokens} tokens, contenders alternated over {args.repeats} rounds, medians\n"
    )
    for single, multi in results.values():
        print(multi.row())
        print(single.row())
    a, b, c = (results[k][1] for k in "abc")
    print("\nratios (targets in brackets):")
    print(f"  throughput (b)/(a) = {b.tokens_per_sec / a.tokens_per_sec:.2f}   [>= 0.8]")
    print(f"  throughput (b)/(c) = {b.tokens_per_sec / c.tokens_per_sec:.2f}   [>= 1.0]")
    print(f"  TTFT p50   (b)/(c) = {b.ttft_pct(50) / c.ttft_pct(50):.2f}   [<= 1.0]")
    print(
        f"  (b) {args.concurrency}-stream / single-stream throughput = {b.tokens_per_sec / results['b'][0].tokens_per_sec:.2f}   [>= 3]",
        flush=True,
    )


def print_roofline(results: dict, args, model_dir: str) -> None:
    """Each text contender's tok/s as a fraction of this machine's roofline for the bench model (measured now,
    after the contenders ran, so it sees the machine in the same state)."""
    machine, cost = measure_machine(), ModelCost.of_checkpoint(model_dir)
    print(f"\nroofline: {machine.describe()}")
    print(
        f"  bench model: {cost.step_params / 1e6:.1f} M parameters read per decode step ({cost.step_bytes / 1e6:.0f} MB)"
    )
    for batch in (1, args.concurrency):
        print(
            f"  batch {batch:<3} bound: {roofline_tokens_per_sec(machine, cost, batch):8.1f} tok/s ({bound_by(machine, cost, batch)}-bound)"
        )
    for key, (single, multi) in results.items():
        fractions = [
            f"c={s.runs[0].concurrency}: {s.tokens_per_sec / roofline_tokens_per_sec(machine, cost, s.runs[0].concurrency):.2f}"
            for s in (single, multi)
        ]
        print(f"  {LABELS[key]:<38} fraction of roofline  {'   '.join(fractions)}")


def multiturn_section(args, model_dir: str, params: dict, work: Path):
    """The bench model with the prefix cache on and off; the tiny models' image path with both caches on and off."""
    tiny = Path(args.tiny_dir).resolve()
    text, vision = str(tiny / "ministral-3-tiny"), str(tiny / "qwen2-vl-tiny")
    on_dir, off_dir = work / "prefix-on", work / "prefix-off"
    on_dir.mkdir(), off_dir.mkdir()
    with (
        our_stack(model_dir, MODEL_NAME, params, on_dir) as on,
        our_stack(model_dir, MODEL_NAME, {**params, "prefix_caching": False}, off_dir) as off,
        native_stack(text, vision, work, tag="images-cached") as images_on,
        native_stack(
            text, vision, work, tag="images-uncached", cache_entries=0, text_params={"prefix_caching": False}
        ) as images_off,
    ):
        return run_multiturn(
            {
                "bench model, prefix cache on": (on.base_url.removesuffix("/v1"), MODEL_NAME, False),
                "bench model, prefix cache off": (off.base_url.removesuffix("/v1"), MODEL_NAME, False),
                "image, prefix + caption caches": (images_on, "proxied", True),
                "image, no caches": (images_off, "proxied", True),
            },
            args.repeats,
        )


def native_section(args, work: Path):
    tiny = Path(args.tiny_dir).resolve()
    text, vision = str(tiny / "ministral-3-tiny"), str(tiny / "qwen2-vl-tiny")
    with (
        native_stack(text, vision, work) as base_url,
        native_stack(text, vision, work, cache_entries=0, tag="uncached") as uncached,
    ):
        return run_native_section(base_url, "native", "proxied", uncached, args.repeats)


def vision_section(args, work: Path):
    tiny = Path(args.tiny_dir).resolve()
    image_server = ScriptedServer({})
    try:
        with vision_stack(
            str(tiny / "ministral-3-tiny"), str(tiny / "qwen2-vl-tiny"), "ministral-3-3b-reasoning", "qwen2-vl-7b", work
        ) as (base_url, vision_address):
            return run_vision_section(vision_address, base_url, "ministral-3-3b-reasoning", image_server, args.repeats)
    finally:
        image_server.close()


if __name__ == "__main__":
    main()
