"""Grammar library comparison for constrained decoding: llguidance (what the engine uses) against xgrammar.

Measures, on the project's stand-in tokenizers: tokenizer-info build time, schema compile time cold and
cached, per-step mask time for a batch of 8 constrained rows (random-logit decoding through the masks), and
two feature checks (special tokens inside a grammar, error messages for bad or unsupported schemas).
Results and the decision: docs/benchmarks.md, "Grammar library: llguidance vs xgrammar".

xgrammar is not a project dependency (it pulls triton and apache-tvm-ffi); install it aside and point
PYTHONPATH at it:
    .venv/bin/pip install --no-deps --target /tmp/xgr xgrammar==0.2.8 apache-tvm-ffi==0.1.15.post2
    PYTHONPATH=/tmp/xgr flock /tmp/pv-heavy.lock .venv/bin/python -m benchmarks.grammar_compare
Without it, only llguidance is measured.
"""

from __future__ import annotations

import json
import statistics
import time
from enum import Enum

import llguidance
import llguidance.hf
import pydantic
import torch

from services.common.hf_models import eos_token_ids, read_generation_config
from services.common.tokenizers import load_tokenizer
from services.text_engine.engine.sampling.grammar import (
    JSON_FORMAT_OPTIONS,
    GrammarCompiler,
    GrammarSpec,
    apply_grammar_masks,
    fill_bitmask,
)

TOKENIZERS = ["models/tiny/ministral-3-tiny", "models/tiny/smollm2-135m-instruct", "models/tiny/qwen2-vl-tiny"]
BATCH = 8
MASK_STEPS = 200
SEPARATORS = (JSON_FORMAT_OPTIONS["item_separator"], JSON_FORMAT_OPTIONS["key_separator"])


class Unit(str, Enum):
    celsius = "celsius"
    fahrenheit = "fahrenheit"


class Location(pydantic.BaseModel):
    city: str
    country: str | None = None


class Forecast(pydantic.BaseModel):
    location: Location
    unit: Unit
    days: list[int] = pydantic.Field(max_length=7)
    alerts: list[Location] = []


FLAT = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
NESTED = {
    "type": "object",
    "properties": {
        "order": {
            "type": "object",
            "properties": {"id": {"type": "integer"}, "status": {"enum": ["new", "paid", "sent"]}},
            "required": ["id", "status"],
            "additionalProperties": False,
        },
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
                "required": ["sku", "qty"],
            },
        },
        "note": {"type": "string"},
    },
    "required": ["order", "items"],
}
SCHEMAS = {
    "flat": FLAT,
    "nested": NESTED,
    "pydantic_defs": Forecast.model_json_schema(),
    "json_object": {"type": "object"},
}
BAD_SCHEMAS = {
    "unknown type": {"type": "strin"},
    "dangling $ref": {"$ref": "#/$defs/missing"},
    "unsupported keyword (uniqueItems)": {"type": "array", "uniqueItems": True},
    "unsupported keyword (not)": {"not": {"type": "string"}},
    "lookaround pattern": {"type": "string", "pattern": "(?<=a)b"},
}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


# ---------------------------------------------------------------- llguidance (through our module)


def bench_llguidance(tok, eos: list[int]) -> dict:
    out = {}
    compiler, out["tokinfo"] = timed(lambda: GrammarCompiler(tok, len(tok), eos))
    compiled = {}
    for name, schema in SCHEMAS.items():
        spec = GrammarSpec("json_object") if name == "json_object" else GrammarSpec("json_schema", json.dumps(schema))
        compiled[name], cold = timed(lambda: compiler.compile(spec))
        _, cached = timed(lambda: compiler.compile(spec))
        _, matcher = timed(lambda: compiled[name].matcher())
        out[f"compile:{name}"] = (cold, cached, matcher)
    grammar = compiled["nested"]
    fill, apply = decode_steps(grammar, compiler.vocab_size, eos, parallel=False)
    # Separately: the pool's threads keep spinning after a call and would slow the steps measured above.
    fill_pool, _ = decode_steps(grammar, compiler.vocab_size, eos, parallel=True)
    out["mask_fill"] = fill  # on the calling thread, what apply_grammar_masks does for CPU logits
    out["mask_fill_pool"] = fill_pool  # llguidance's thread pool (LLExecutor), one call for the batch
    out["mask_apply"] = apply  # our apply_grammar_masks: fill + unpack + masked_fill, what the engine pays
    return out


def decode_steps(grammar, vocab: int, eos: list[int], *, parallel: bool) -> tuple[list[float], list[float]]:
    """Random-logit decoding of BATCH rows through the masks: (library fill seconds, apply_grammar_masks seconds)."""
    fill, apply = [], []
    matchers = [grammar.matcher() for _ in range(BATCH)]
    gen = torch.Generator().manual_seed(0)
    bitmask = torch.zeros((BATCH, (vocab + 31) // 32), dtype=torch.int32)
    for _ in range(MASK_STEPS):
        _, t = timed(lambda: fill_bitmask(matchers, bitmask, parallel=parallel))
        fill.append(t)
        logits = torch.randn(BATCH, vocab, generator=gen)
        _, t = timed(lambda: apply_grammar_masks(logits, list(enumerate(matchers))))
        apply.append(t)
        for i, m in enumerate(matchers):
            token = int(logits[i].argmax())
            if m.is_finished or token in eos:
                matchers[i] = grammar.matcher()  # a finished row is replaced by a fresh request
            else:
                m.accept(token)
    return fill, apply


def llguidance_special_tokens(tok) -> str:
    tc, args = tok.convert_tokens_to_ids(["[TOOL_CALLS]", "[ARGS]"])
    src = f'start: <[{tc}]> "get_weather" <[{args}]> args\nargs: %json {json.dumps(FLAT)}\n'
    compiler = GrammarCompiler(tok, len(tok), [tok.eos_token_id])
    matcher = compiler.compile(GrammarSpec("lark", src)).matcher()
    ids = [
        tc,
        *tok.encode("get_weather", add_special_tokens=False),
        args,
        *tok.encode('{"name": "x", "age": 3}', add_special_tokens=False),
    ]
    for t in ids:
        matcher.accept(t)
    return f'yes: lark `<[{tc}]> "get_weather" <[{args}]> %json{{...}}` accepts the sequence, finished={matcher.is_finished}'


def llguidance_errors(tok) -> dict:
    compiler = GrammarCompiler(tok, len(tok), [tok.eos_token_id])
    out = {}
    for name, schema in BAD_SCHEMAS.items():
        try:
            compiler.compile(GrammarSpec("json_schema", json.dumps(schema)))
            out[name] = "ACCEPTED"
        except Exception as exc:  # the message is what we report
            out[name] = str(exc).replace("\n", " ")[:160]
    return out


# ---------------------------------------------------------------- xgrammar


def bench_xgrammar(xgr, tok, eos: list[int]) -> dict:
    out = {}

    def build():
        info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok), stop_token_ids=eos)
        return info, xgr.GrammarCompiler(info, max_threads=2)

    (info, compiler), out["tokinfo"] = timed(build)
    compiled = {}
    for name, schema in SCHEMAS.items():
        if name == "json_object":
            fn = compiler.compile_builtin_json_grammar
        else:

            def fn(schema=schema):
                return compiler.compile_json_schema(json.dumps(schema), any_whitespace=False, separators=SEPARATORS)

        compiled[name], cold = timed(fn)
        _, cached = timed(fn)
        _, matcher = timed(lambda: xgr.GrammarMatcher(compiled[name]))
        out[f"compile:{name}"] = (cold, cached, matcher)
    grammar = compiled["nested"]
    batch = xgr.BatchGrammarMatcher(max_threads=2)
    matchers = [xgr.GrammarMatcher(grammar) for _ in range(BATCH)]
    bitmask = xgr.allocate_token_bitmask(BATCH, len(tok))
    gen = torch.Generator().manual_seed(0)
    fill, apply = [], []
    for _ in range(MASK_STEPS):
        _, t = timed(lambda: batch.batch_fill_next_token_bitmask(matchers, bitmask))
        fill.append(t)
        logits = torch.randn(BATCH, len(tok), generator=gen)
        _, t2 = timed(lambda: xgr.apply_token_bitmask_inplace(logits, bitmask))  # its CPU kernel
        apply.append(t + t2)
        for i, m in enumerate(matchers):
            token = int(logits[i].argmax())
            if m.is_terminated() or token in eos:
                matchers[i] = xgr.GrammarMatcher(grammar)
            else:
                assert m.accept_token(token)
    out["mask_fill"] = fill
    out["mask_apply"] = apply
    return out


def xgrammar_special_tokens(xgr, tok) -> str:
    tc, args = tok.convert_tokens_to_ids(["[TOOL_CALLS]", "[ARGS]"])
    info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok), stop_token_ids=[tok.eos_token_id])
    compiler = xgr.GrammarCompiler(info, max_threads=2)
    notes = []
    try:
        compiler.compile_grammar('root ::= "[TOOL_CALLS]get_weather[ARGS]" "{}"')
        m = xgr.GrammarMatcher(compiler.compile_grammar('root ::= "[TOOL_CALLS]get_weather[ARGS]" "{}"'))
        notes.append(f"EBNF literal '[TOOL_CALLS]' accepts special token {tc}: {m.accept_token(tc)}")
    except Exception as exc:
        notes.append(f"EBNF: {type(exc).__name__}: {exc}"[:160])
    tag = {
        "type": "structural_tag",
        "format": {
            "type": "sequence",
            "elements": [
                {"type": "token", "token": tc},
                {"type": "const_string", "value": "get_weather"},
                {"type": "token", "token": args},
                {"type": "json_schema", "json_schema": FLAT},
            ],
        },
    }
    try:
        m = xgr.GrammarMatcher(compiler.compile_structural_tag(json.dumps(tag)))
        ids = [
            tc,
            *tok.encode("get_weather", add_special_tokens=False),
            args,
            *tok.encode('{"name": "x", "age": 3}', add_special_tokens=False),
        ]
        ok = all(m.accept_token(t) for t in ids)
        notes.append(f"structural tag with token formats accepts the sequence: {ok}, completed={m.is_completed()}")
    except Exception as exc:
        notes.append(f"structural tag: {type(exc).__name__}: {exc}"[:200])
    return "; ".join(notes)


def xgrammar_errors(xgr, tok) -> dict:
    info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok), stop_token_ids=[tok.eos_token_id])
    compiler = xgr.GrammarCompiler(info, max_threads=2)
    out = {}
    for name, schema in BAD_SCHEMAS.items():
        try:
            compiler.compile_json_schema(json.dumps(schema), any_whitespace=False)
            out[name] = "ACCEPTED"
        except Exception as exc:  # the message is what we report
            out[name] = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:160]
    return out


# ---------------------------------------------------------------- report


def report(lib: str, result: dict) -> None:
    print(f"  {lib:11s} tokenizer info {ms(result['tokinfo'])}")
    for key, value in result.items():
        if key.startswith("compile:"):
            cold, cached, matcher = value
            print(f"  {lib:11s} {key[8:]:14s} compile cold {ms(cold)}  cached {ms(cached)}  new matcher {ms(matcher)}")
    for key in ("mask_fill", "mask_fill_pool", "mask_apply"):
        if key not in result:
            continue
        times = sorted(result[key][10:])  # the first steps warm caches
        p95 = times[int(len(times) * 0.95)]
        print(
            f"  {lib:11s} {key:14s} batch {BATCH}: mean {ms(statistics.mean(times))} p50 {ms(statistics.median(times))} p95 {ms(p95)}"
        )


def main() -> None:
    try:
        import xgrammar as xgr

        xgr_note = f"xgrammar importable (from {xgr.__file__})"
    except Exception as exc:  # recorded as evidence: xgrammar might not import without triton
        xgr, xgr_note = None, f"xgrammar NOT importable: {type(exc).__name__}: {exc}"
    print(f"llguidance {llguidance.__version__}; {xgr_note}; torch threads {torch.get_num_threads()}")
    for path in TOKENIZERS:
        tok = load_tokenizer(path)
        eos = eos_token_ids(read_generation_config(path, {}), tok)
        print(f"\n{path}: vocab {len(tok)}, eos {eos}")
        report("llguidance", bench_llguidance(tok, eos))
        if xgr is not None:
            report("xgrammar", bench_xgrammar(xgr, tok, eos))
        if "ministral" in path:
            print(f"  special tokens, llguidance: {llguidance_special_tokens(tok)}")
            if xgr is not None:
                print(f"  special tokens, xgrammar:   {xgrammar_special_tokens(xgr, tok)}")
            print("  error messages:")
            llg_err = llguidance_errors(tok)
            xgr_err = xgrammar_errors(xgr, tok) if xgr is not None else {}
            for name in BAD_SCHEMAS:
                print(f"    {name}:\n      llguidance: {llg_err[name]}\n      xgrammar:   {xgr_err.get(name, '-')}")


if __name__ == "__main__":
    main()
