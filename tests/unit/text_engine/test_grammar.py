"""Constrained decoding (engine/sampling/grammar.py): random-logit decoding through the masks always yields
output valid against the grammar, compile errors are 400s naming the problem, the cache shares grammars.

No model: only the stand-in tokenizers of models/tiny/ (built by `make models`).
"""

from __future__ import annotations

import json
from functools import cache

import jsonschema
import pytest
import torch

from services.common.errors import InvalidRequestError
from services.common.tokenizers import load_tokenizer
from services.text_engine.engine.sampling.grammar import (
    MAX_JSON_INDENT,
    GrammarCompiler,
    GrammarSpec,
    GrammarViolationError,
    apply_grammar_masks,
)
from tests.support.processes import REPO_ROOT

TOKENIZERS = {
    "ministral": ("ministral-3-tiny", [2]),
    "smollm2": ("smollm2-135m-instruct", [2]),
    "qwen2vl": ("qwen2-vl-tiny", [1024, 1026]),
}
PADDING = 64  # extra logit columns, as a model with padded embeddings has
MAX_STEPS = 400

# Bounded schemas (lengths, item counts, ranges) so every random walk finishes within MAX_STEPS.
SCHEMAS = {
    "flat": {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 8}, "ok": {"type": "boolean"}},
        "required": ["name", "ok"],
        "additionalProperties": False,
    },
    "nested": {
        "type": "object",
        "properties": {
            "status": {"enum": ["new", "paid", "sent"]},
            "items": {
                "type": "array",
                "maxItems": 3,
                "items": {
                    "type": "object",
                    "properties": {"qty": {"type": "integer", "minimum": 0, "maximum": 99}},
                    "required": ["qty"],
                    "additionalProperties": False,
                },
            },
        },
        "required": ["status", "items"],
        "additionalProperties": False,
    },
    "defs": {
        "$defs": {
            "Loc": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 6}},
                "required": ["city"],
                "additionalProperties": False,
            }
        },
        "type": "object",
        "properties": {"home": {"$ref": "#/$defs/Loc"}, "unit": {"enum": ["c", "f"]}},
        "required": ["home", "unit"],
        "additionalProperties": False,
    },
}


@cache
def tokenizer(name: str):
    return load_tokenizer(str(REPO_ROOT / "models" / "tiny" / TOKENIZERS[name][0]))


@cache
def compiler(name: str) -> GrammarCompiler:
    tok = tokenizer(name)
    return GrammarCompiler(tok, len(tok) + PADDING, TOKENIZERS[name][1])


def decode(comp: GrammarCompiler, spec: GrammarSpec, seeds: range, *, sample: bool) -> list[list[int]]:
    """Random-logit decoding of one row per seed, batched, through the masks; each row ends at EOS."""
    grammar = comp.compile(spec)
    matchers = [grammar.matcher() for _ in seeds]
    gens = [torch.Generator().manual_seed(seed) for seed in seeds]
    outputs: list[list[int]] = [[] for _ in seeds]
    eos = set(comp.eos_token_ids)
    live = list(range(len(seeds)))
    for _ in range(MAX_STEPS):
        if not live:
            break
        logits = torch.stack([torch.randn(comp.model_vocab_size, generator=gens[i]) * 4 for i in range(len(seeds))])
        apply_grammar_masks(logits, [(i, matchers[i]) for i in live])
        for i in list(live):
            if matchers[i].is_finished:  # only EOS may follow a complete grammar
                assert set(torch.isfinite(logits[i]).nonzero().flatten().tolist()) <= eos
            if sample:
                token = int(torch.multinomial(torch.softmax(logits[i], -1), 1, generator=gens[i]))
            else:
                token = int(logits[i].argmax())
            if token in eos:
                assert matchers[i].is_finished or matchers[i].ll_matcher.is_accepting()
                live.remove(i)
            else:
                matchers[i].accept(token)
                outputs[i].append(token)
    assert not live, "a random walk did not finish within MAX_STEPS"
    return outputs


@pytest.mark.parametrize("tok_name", ["ministral", "smollm2"])
@pytest.mark.parametrize("schema_name", list(SCHEMAS))
def test_random_decoding_is_valid_against_the_schema(tok_name, schema_name):
    schema = SCHEMAS[schema_name]
    comp = compiler(tok_name)
    for sample, seeds in ((False, range(0, 12)), (True, range(100, 112))):
        for ids in decode(comp, GrammarSpec("json_schema", json.dumps(schema)), seeds, sample=sample):
            text = tokenizer(tok_name).decode(ids)
            jsonschema.validate(json.loads(text), schema)
            # Whitespace between tokens only in bounded gaps: no run a weak model could ramble on in.
            assert all(len(gap) <= MAX_JSON_INDENT + 1 and gap.count("\n") <= 1 for gap in blanks_between_tokens(text))


def blanks_between_tokens(text: str) -> list[str]:
    """The whitespace runs of a JSON text outside its strings."""
    gaps, gap, in_string, escaped = [], "", False, False
    for char in text:
        if in_string:
            in_string, escaped = escaped or char != '"', not escaped and char == "\\"
            continue
        if char.isspace():
            gap += char
            continue
        in_string = char == '"'
        gaps, gap = gaps + [gap] if gap else gaps, ""
    return gaps + [gap] if gap else gaps


@pytest.mark.parametrize("tok_name", ["qwen2vl", "smollm2"])
def test_json_object_gives_an_object(tok_name):
    # Unbounded grammar: a random walk might never close it, so the test bounds it by hand: after a few
    # steps, pick the most likely allowed token among those that end structures ("}" "]" "\"") when allowed.
    comp = compiler(tok_name)
    tok = tokenizer(tok_name)
    closers = [i for i in range(len(tok)) if tok.decode([i]) in {"}", "]", '"', "0"}]
    grammar = comp.compile(GrammarSpec("json_object"))
    for seed in range(8):
        gen = torch.Generator().manual_seed(seed)
        matcher, ids = grammar.matcher(), []
        for step in range(MAX_STEPS):
            logits = torch.randn(1, comp.model_vocab_size, generator=gen)
            if step > 6:
                logits[0, closers] += 50.0
            apply_grammar_masks(logits, [(0, matcher)])
            token = int(logits[0].argmax())
            if token in comp.eos_token_ids:
                break
            matcher.accept(token)
            ids.append(token)
        assert matcher.is_finished
        assert isinstance(json.loads(tok.decode(ids)), dict)


def test_padded_vocabulary_and_unlisted_rows():
    comp = compiler("ministral")
    matcher = comp.compile(GrammarSpec("json_object")).matcher()
    logits = torch.zeros(3, comp.model_vocab_size)
    apply_grammar_masks(logits, [(1, matcher)])
    assert torch.isneginf(logits[1, comp.vocab_size :]).all()  # padded ids: never allowed
    assert torch.isfinite(logits[1, : comp.vocab_size]).any()
    assert torch.equal(logits[0], torch.zeros(comp.model_vocab_size))  # rows not listed are untouched
    assert torch.equal(logits[2], torch.zeros(comp.model_vocab_size))
    allowed = torch.isfinite(logits[1]).nonzero().flatten().tolist()
    assert all(tokenizer("ministral").decode([i]).lstrip().startswith("{") for i in allowed)


def test_forbidden_token_raises():
    comp = compiler("ministral")
    matcher = comp.compile(GrammarSpec("json_object")).matcher()
    with pytest.raises(GrammarViolationError):
        matcher.accept(tokenizer("ministral").encode("x", add_special_tokens=False)[0])


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        (GrammarSpec("json_schema", "{not json"), "not valid JSON"),
        (GrammarSpec("json_schema", "[1, 2]"), "must be an object"),
        (GrammarSpec("json_schema", '{"type": "strin"}'), "Invalid type: strin"),
        (GrammarSpec("json_schema", '{"type": "array", "uniqueItems": true}'), "uniqueItems"),  # unsupported
        (GrammarSpec("json_schema", '{"$ref": "#/$defs/missing"}'), "/$defs/missing"),
        (GrammarSpec("lark", "start: nothing_here\n", param="tools"), "nothing_here"),
        (GrammarSpec("lark", 'start: <[TOOL_CALLS]> "x"\n', param="tool_choice"), "invalid digit"),
    ],
)
def test_bad_or_unsupported_grammar_is_an_invalid_request_naming_it(spec, needle):
    comp = compiler("ministral")
    failed = comp.stats().failed
    with pytest.raises(InvalidRequestError) as info:
        comp.compile(spec)
    assert needle in info.value.message
    assert info.value.param == spec.param
    assert info.value.http_status == 400
    assert comp.stats().failed == failed + 1


def test_cache_returns_the_same_grammar_and_counts_hits():
    tok = tokenizer("qwen2vl")
    comp = GrammarCompiler(tok, len(tok), [1026], cache_size=2)
    first = comp.compile(GrammarSpec("json_schema", '{"type": "object", "properties": {"a": {"type": "integer"}}}'))
    # Same schema, other formatting and param: one cache entry.
    again = comp.compile(
        GrammarSpec("json_schema", '{"type":"object","properties":{"a":{"type":"integer"}}}', param="x")
    )
    assert again is first
    stats = comp.stats()
    assert (stats.cold, stats.cached) == (1, 1)
    assert stats.cold_seconds > 0
    comp.compile(GrammarSpec("json_object"))
    comp.compile(GrammarSpec("lark", 'start: "a"\n'))  # evicts the least recently used (the schema)
    assert (
        comp.compile(GrammarSpec("json_schema", '{"type":"object","properties":{"a":{"type":"integer"}}}')) is not first
    )
    assert comp.stats().cold == 4
    # Matchers are independent per request.
    m1, m2 = first.matcher(), first.matcher()
    m1.accept(tok.encode("{", add_special_tokens=False)[0])
    logits = torch.zeros(2, len(tok))
    apply_grammar_masks(logits, [(0, m1), (1, m2)])
    assert not torch.equal(torch.isfinite(logits[0]), torch.isfinite(logits[1]))


def test_lark_grammar_with_special_tokens_mistral_tool_call_shape():
    tok = tokenizer("ministral")
    comp = compiler("ministral")
    tool_calls, args = tok.convert_tokens_to_ids(["[TOOL_CALLS]", "[ARGS]"])
    schema = SCHEMAS["defs"]
    source = f'start: <[{tool_calls}]> "get_weather" <[{args}]> arguments\narguments: %json {json.dumps(schema)}\n'
    for ids in decode(comp, GrammarSpec("lark", source, param="tools"), range(10), sample=False):
        assert ids[0] == tool_calls and args in ids
        text = tok.decode(ids, skip_special_tokens=False)
        assert text.startswith("[TOOL_CALLS]get_weather[ARGS]")
        jsonschema.validate(json.loads(text.removeprefix("[TOOL_CALLS]get_weather[ARGS]")), schema)
        # The special tokens are the tokens themselves, never their spelling in text pieces.
        assert ids.count(tool_calls) == 1 and ids.count(args) == 1
