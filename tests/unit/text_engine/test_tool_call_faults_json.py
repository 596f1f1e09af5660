"""Tool-calling fault 4 (issue 24, item 6): JSON grammars forced json.dumps' one layout and masked the
whitespace a weak model wants (SmolLM2 derails under instructor's JSON mode). They let bounded whitespace
through now: a pretty-printed object passes, an endless run of blanks does not. The same options shape
response_format json_object and json_schema and a tool call's arguments.
"""

from __future__ import annotations

import json

import pytest
import torch

from services.text_engine.engine.sampling.grammar import GrammarSpec, apply_grammar_masks
from services.text_engine.engine.tools.constraints import tool_call_grammar

from .test_tool_call_faults import MODELS, NAMED, TOOLS, WEATHER, allowed_after, head, model

# What models write: json.dumps' layout, compact, pretty-printed with 2 or 4 spaces.
PRETTY = [
    '{"city": "Oslo"}',
    '{"city":"Oslo"}',
    '{\n  "city": "Oslo"\n}',
    '{\n    "city": "Oslo"\n}',
    '{ "city" : "Oslo" }',
    '{\n  "city":\n    "Oslo"\n}',
]
# What a weak model loops on: blank lines, and runs of blanks no indentation needs.
RAMBLING = [
    '{\n\n  "city": "Oslo"}',
    "{" + " " * 40 + '"city": "Oslo"}',
    '{"city":' + "\n" * 3 + '"Oslo"}',
    "{\n" + " " * 40 + '"city": "Oslo"}',
    '{"city": "Oslo"' + "\t" * 40 + "}",
]


def json_grammars(fmt):
    """response_format json_object and json_schema, and a named call's arguments (after the call's head)."""
    return [
        (GrammarSpec("json_object"), ""),
        (GrammarSpec("json_schema", json.dumps(WEATHER)), ""),
        (tool_call_grammar(model(fmt)[1], TOOLS, NAMED, False), head(fmt, "get_weather")),
    ]


@pytest.mark.parametrize("fmt", list(MODELS))
def test_json_grammars_let_a_model_indent_but_not_ramble(fmt):
    for grammar, prefix in json_grammars(fmt):
        for text in PRETTY:
            assert allowed_after(fmt, grammar, prefix + text) is not None, (grammar.kind, text)
        for text in RAMBLING:
            assert allowed_after(fmt, grammar, prefix + text) is None, (grammar.kind, text)


@pytest.mark.parametrize("fmt", list(MODELS))
def test_a_model_that_loves_whitespace_still_closes_its_object(fmt):
    # Greedy decoding that prefers any whitespace token over everything else: the grammar lets some through
    # (the answer is laid out over lines) and then holds the model to the structure, so it ends.
    tokenizer, _, compiler = model(fmt)
    blank = [i for i in range(compiler.vocab_size) if (s := tokenizer.decode([i])) and s.isspace()]
    matcher, ids = compiler.compile(GrammarSpec("json_schema", json.dumps(WEATHER))).matcher(), []
    for step in range(200):
        logits = torch.randn(1, compiler.model_vocab_size, generator=torch.Generator().manual_seed(step))
        logits[0, blank] += 100.0
        apply_grammar_masks(logits, [(0, matcher)])
        token = int(logits[0].argmax())
        if token in compiler.eos_token_ids:
            break
        matcher.accept(token)
        ids.append(token)
    else:
        raise AssertionError(f"no end within 200 tokens: {tokenizer.decode(ids)!r}")
    text = tokenizer.decode(ids)
    assert "\n" in text and set(json.loads(text)) == {"city"}
