"""Structured outputs' cost, in one run (`python -m benchmarks.structured --model-dir models/bench/bench-text`).

1. The batch step, unconstrained: the sampler before issue 12 (loaded from git at BEFORE) against today's
   pipeline, on the same 16 rows of the bench model's logits, greedy and sampled, alternated; ms per step.
2. Grammar compile time per schema, cold and cached (the engine's GrammarCompiler on the bench tokenizer).
3. End to end through our stack: 16 streams, all free text, against 8 json_schema streams + 8 free ones,
   alternated over rounds; tok/s of each mix. The schema's one string field lets a random-weight model run to
   max_tokens, so both mixes generate the same number of tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from services.text_engine.engine.batcher import SPEC_KEY, RequestSampler
from services.text_engine.engine.sampling.grammar import GrammarCompiler, GrammarSpec
from services.text_engine.engine.sampling.spec import SamplingSpec

from .load import LoadResult, openai_stream_fn, run_load
from .servers import our_stack

BEFORE = "73da19c"  # main before issue 12's sampling changes
FREE_TEXT = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
SCHEMAS = {
    "flat": FREE_TEXT,
    "person": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["name", "age"],
        "additionalProperties": False,
    },
    "nested": {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "kind": {"enum": ["a", "b", "c"]},
                        "ok": {"type": "boolean"},
                    },
                    "required": ["id", "kind"],
                },
            }
        },
        "required": ["items"],
    },
}


def _old_sampler_module():
    source = subprocess.run(
        ["git", "show", f"{BEFORE}:services/text_engine/engine/sampler.py"], check=True, capture_output=True, text=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "old_sampler.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_sampler", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_sampler"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


class _State:
    def __init__(self, key, spec):
        self.logit_processor_kwargs = {key: spec}
        self.generated_tokens, self.initial_tokens, self._true_initial_tokens = [1, 2, 3], [4, 5], 0


class _Future:
    def __init__(self, state):
        self.state, self.has_new_token = state, True


def _per_step_ms(sampler, scores, futures, steps=200) -> float:
    sampler.prepare_tensor_args(futures, torch.empty(0))
    ids = torch.zeros(scores.shape[0], dtype=torch.long)
    started = time.perf_counter()
    for _ in range(steps):
        sampler(ids, scores, torch.empty(0))
    return (time.perf_counter() - started) * 1000 / steps


def step_ab(vocab: int, rows: int = 16, rounds: int = 5) -> list[str]:
    old = _old_sampler_module()
    scores = torch.randn(rows, vocab)
    out = []
    for label, temperature in (("greedy", 0.0), ("sampled t=0.7 top_p=0.9", 0.7)):
        times = {"before": [], "now": []}
        for _ in range(rounds):
            specs_old = [old.SamplingSpec(temperature, 0.9, 0).bind(torch.device("cpu")) for _ in range(rows)]
            specs_new = [SamplingSpec(temperature, 0.9, 0).bind(torch.device("cpu")) for _ in range(rows)]
            times["before"].append(
                _per_step_ms(old.RequestSampler(), scores, [_Future(_State(old.SPEC_KEY, s)) for s in specs_old])
            )
            times["now"].append(
                _per_step_ms(RequestSampler(), scores, [_Future(_State(SPEC_KEY, s)) for s in specs_new])
            )
        before, now = statistics.median(times["before"]), statistics.median(times["now"])
        out.append(
            f"  {label:<26} before {before:7.3f} ms/step   now {now:7.3f} ms/step   now/before = {now / before:.2f}"
        )
    return out


def decode_step_ms(model, rows: int = 16, repeats: int = 20) -> float:
    """One forward of `rows` single-token sequences: the scale the sampler's per-step cost is compared to."""
    ids = torch.ones(rows, 1, dtype=torch.long)
    with torch.no_grad():
        model(ids)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            model(ids)
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def compile_times(tokenizer, vocab: int, eos: list[int]) -> list[str]:
    started = time.perf_counter()
    compiler = GrammarCompiler(tokenizer, vocab, eos)
    out = [f"  compiler construction (tokenizer info): {(time.perf_counter() - started) * 1000:.0f} ms"]
    for name, schema in {**SCHEMAS, "json_object": None}.items():
        spec = GrammarSpec("json_object") if schema is None else GrammarSpec("json_schema", json.dumps(schema))
        t0 = time.perf_counter()
        compiler.compile(spec)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        compiler.compile(spec)
        cached = time.perf_counter() - t0
        out.append(f"  {name:<12} cold {cold * 1000:8.2f} ms   cached {cached * 1000:8.3f} ms")
    return out


async def mixed_load(base_url: str, model: str, concurrency: int, max_tokens: int, rounds: int) -> tuple[list, list]:
    free = openai_stream_fn(base_url, model)
    constrained = openai_stream_fn(
        base_url,
        model,
        response_format={"type": "json_schema", "json_schema": {"name": "free_text", "schema": FREE_TEXT}},
    )

    counter = itertools.count()

    async def mix(prompt: str, tokens: int):
        return await (constrained if next(counter) % 2 == 0 else free)(prompt, tokens)

    await run_load("warm up", mix, concurrency, 8)
    plain, mixed = [], []
    for _ in range(rounds):
        plain.append(await run_load("16 free", free, concurrency, max_tokens))
        mixed.append(await run_load("8 json_schema + 8 free", mix, concurrency, max_tokens))
    return plain, mixed


def _median_tps(results: list[LoadResult]) -> float:
    return statistics.median(r.tokens_per_sec for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from services.text_engine.engine.loader import load_text_model

    loaded = load_text_model(args.model_dir, dtype="f32", device="cpu")
    vocab = loaded.text_config.vocab_size
    print(f"Structured outputs benchmark ({time.strftime('%Y-%m-%d')}, {args.model_dir}, vocab {vocab})")
    print("\n1. batch step, unconstrained, 16 rows (sampler before issue 12 vs now):")
    print("\n".join(step_ab(vocab)))
    print(f"  for scale: one forward of 16 single-token rows of this model: {decode_step_ms(loaded.model):.2f} ms")
    print("\n2. grammar compile (llguidance):")
    print("\n".join(compile_times(loaded.tokenizer, vocab, loaded.eos_token_ids)))
    del loaded
    params = {"mem": 64, "dtype": "f32", "max_num_seqs": args.concurrency, "prefill_chunk_size": 1024, "block_size": 64}
    with (
        tempfile.TemporaryDirectory(prefix="pv-structured-") as tmp,
        our_stack(str(Path(args.model_dir).resolve()), "bench-text", params, Path(tmp)) as stack,
    ):
        plain, mixed = asyncio.run(
            mixed_load(stack.base_url, "bench-text", args.concurrency, args.max_tokens, args.rounds)
        )
    a, b = _median_tps(plain), _median_tps(mixed)
    print(f"\n3. end to end, {args.concurrency} streams x {args.max_tokens} tokens, medians of {args.rounds} rounds:")
    print(f"  16 free text              {a:7.1f} tok/s")
    print(f"  8 json_schema + 8 free    {b:7.1f} tok/s   mixed/free = {b / a:.2f}   [>= 0.7]")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
