"""tool_choice required/named: random-logit decoding through the real grammar compiler's masks yields output
that the model's own tool parser reads as valid calls (names from the tools, arguments valid against their
schemas, one call unless `required` with parallel calls); and validate_tools refuses what a model cannot serve,
naming the field."""

from __future__ import annotations

import json
from functools import cache

import jsonschema
import pytest
import torch

from services.common.errors import InvalidRequestError
from services.common.generation import (
    ChatTurn,
    ReasoningDelta,
    TextDelta,
    Tool,
    ToolCallDelta,
    ToolChoice,
    ToolChoiceMode,
)
from services.common.tokenizers import load_tokenizer
from services.text_engine.engine.output import OutputPipeline, parser_for
from services.text_engine.engine.sampling.grammar import GrammarCompiler, apply_grammar_masks
from services.text_engine.engine.tools.constraints import tool_call_grammar
from services.text_engine.engine.tools.validation import calls_tools, validate_tools
from services.text_engine.engine.types import GenerationRequest

MODELS = {"mistral": ("models/tiny/ministral-3-tiny", [2]), "hermes": ("models/tiny/qwen3-tiny", [151645, 151643])}
MAX_STEPS = 400
# Bounded schemas, so that every random walk ends within MAX_STEPS.
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 6}, "unit": {"enum": ["c", "f"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
ORDER = {
    "type": "object",
    "properties": {"qty": {"type": "integer", "minimum": 1, "maximum": 99}, "gift": {"type": "boolean"}},
    "required": ["qty"],
    "additionalProperties": False,
}
TOOLS = (Tool("get_weather", "Weather now", json.dumps(WEATHER)), Tool("place_order", "", json.dumps(ORDER)))
SCHEMAS = {"get_weather": WEATHER, "place_order": ORDER}


@cache
def model(fmt):
    path, eos = MODELS[fmt]
    tokenizer = load_tokenizer(path)
    spec = parser_for("auto", tokenizer, "auto")
    assert spec.tools == fmt
    return tokenizer, spec, GrammarCompiler(tokenizer, len(tokenizer), eos)


def random_walk(compiler, grammar, seed):
    """Tokens chosen by random logits through the grammar's masks, up to end-of-sequence."""
    matcher, generator, tokens = compiler.compile(grammar).matcher(), torch.Generator().manual_seed(seed), []
    for _ in range(MAX_STEPS):
        logits = (torch.randn(compiler.model_vocab_size, generator=generator) * 4).unsqueeze(0)
        apply_grammar_masks(logits, [(0, matcher)])
        token = int(torch.multinomial(torch.softmax(logits[0], -1), 1, generator=generator))
        if token in compiler.eos_token_ids:
            assert matcher.ll_matcher.is_accepting()
            return tokens
        matcher.accept(token)
        tokens.append(token)
    raise AssertionError("a random walk did not end within MAX_STEPS")


def parsed(fmt, tokens):
    """(answer text, calls) as the output pipeline reads the tokens."""
    tokenizer, spec, _ = model(fmt)
    pipeline = OutputPipeline.for_request(spec, tokenizer, [], (), parse_tools=True, constrained=True)
    deltas = [d for t in tokens for d in pipeline.push(t)] + pipeline.finish()
    calls: list[dict] = []
    for delta in (d for d in deltas if isinstance(d, ToolCallDelta)):
        if delta.id:
            calls.append({"name": delta.name, "arguments": ""})
        calls[delta.index]["arguments"] += delta.arguments
    assert pipeline.made_tool_calls == bool(calls)
    assert not [d for d in deltas if isinstance(d, ReasoningDelta)]
    return "".join(d.text for d in deltas if isinstance(d, TextDelta)), calls


@pytest.mark.parametrize("fmt", list(MODELS))
@pytest.mark.parametrize(
    ("choice", "parallel"),
    [
        (ToolChoice(ToolChoiceMode.REQUIRED), True),
        (ToolChoice(ToolChoiceMode.REQUIRED), False),
        (ToolChoice(ToolChoiceMode.NAMED, "place_order"), True),
    ],
)
def test_random_decoding_under_the_grammar_gives_valid_calls(fmt, choice, parallel):
    _, spec, compiler = model(fmt)
    grammar = tool_call_grammar(spec, TOOLS, choice, parallel)
    several = parallel and choice.mode is ToolChoiceMode.REQUIRED
    counts = set()
    # With parallel calls a random walk may end after any call (Hermes: after its newline too), so it takes
    # more walks to see several calls.
    for seed in range(12 if several else 6):
        answer, calls = parsed(fmt, random_walk(compiler, grammar, seed))
        assert answer.strip() == "" and calls
        counts.add(len(calls))
        for call in calls:
            assert call["name"] in (SCHEMAS if choice.mode is ToolChoiceMode.REQUIRED else [choice.name])
            jsonschema.validate(json.loads(call["arguments"]), SCHEMAS[call["name"]])
    # `required` with parallel calls: one or more; otherwise one (a named choice is one call, as OpenAI's).
    assert max(counts) > 1 if several else counts == {1}


def test_the_grammar_rejects_another_tool_and_invalid_arguments():
    tokenizer, spec, compiler = model("mistral")
    grammar = compiler.compile(tool_call_grammar(spec, TOOLS, ToolChoice(ToolChoiceMode.NAMED, "get_weather"), False))

    def accepts(text):
        matcher = grammar.matcher()
        return (
            all(matcher.ll_matcher.consume_token(t) for t in tokenizer.encode(text, add_special_tokens=False))
            and matcher.ll_matcher.is_accepting()
        )

    assert accepts('[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "unit": "c"}')
    assert not accepts('[TOOL_CALLS]place_order[ARGS]{"qty": 1}')  # not the named tool
    assert not accepts('[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}')  # "unit" is required
    assert not accepts('[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "unit": "c"}[TOOL_CALLS]get_weather[ARGS]{}')
    assert not accepts('Sure.[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "unit": "c"}')  # no text first


def test_no_grammar_for_auto_and_none():
    _, spec, _ = model("mistral")
    for mode in (ToolChoiceMode.AUTO, ToolChoiceMode.NONE):
        assert tool_call_grammar(spec, TOOLS, ToolChoice(mode), True) is None


def request(tools=TOOLS, choice=ToolChoice()):
    return GenerationRequest("r", (ChatTurn("user", "hi"),), tools=tools, tool_choice=choice)


@pytest.mark.parametrize(
    ("req", "fmt", "param", "needle"),
    [
        (request(), "none", "tools", "no tool-call format"),
        (
            request(choice=ToolChoice(ToolChoiceMode.NAMED, "fly")),
            "mistral",
            "tool_choice",
            "'fly', which is not in tools",
        ),
        (request(tools=(Tool("f", parameters="{nope"),)), "hermes", "tools", "not valid JSON"),
        (request(tools=(Tool("f", parameters="[]"),)), "hermes", "tools", "must be a JSON Schema object"),
        (request(tools=(Tool("f", parameters='{"type": "string"}'),)), "hermes", "tools", "must describe an object"),
        (request(tools=(Tool("f"), Tool("f"))), "mistral", "tools", "given twice"),
        (request(tools=(Tool("get weather"),)), "mistral", "tools", "not a function name"),
        (request(tools=(), choice=ToolChoice(ToolChoiceMode.REQUIRED)), "mistral", "tool_choice", "needs tools"),
        (request(tools=(), choice=ToolChoice(ToolChoiceMode.NAMED, "f")), "mistral", "tool_choice", "needs tools"),
    ],
)
def test_validate_tools_refuses_with_the_field_it_is_about(req, fmt, param, needle):
    with pytest.raises(InvalidRequestError, match=needle) as error:
        validate_tools(req, fmt)
    assert error.value.param == param


def test_validate_tools_accepts_what_can_be_served():
    validate_tools(request(choice=ToolChoice(ToolChoiceMode.NAMED, "place_order")), "mistral")
    validate_tools(request(tools=(Tool("ping"),)), "hermes")
    validate_tools(request(tools=()), "none")  # no tools: nothing to serve
    assert calls_tools(request()) and not calls_tools(request(choice=ToolChoice(ToolChoiceMode.NONE)))
    assert not calls_tools(request(tools=()))


def test_a_forced_call_is_answer_even_where_output_starts_inside_the_reasoning():
    # Qwen3's `<think>` format assumes the output opens inside a reasoning; a grammar that forces a call from
    # the first token leaves no room for one, so the pipeline of a constrained request starts in the answer.
    tokenizer, spec, compiler = model("hermes")
    tokens = random_walk(compiler, tool_call_grammar(spec, TOOLS, ToolChoice(ToolChoiceMode.REQUIRED), False), 0)
    unconstrained = OutputPipeline.for_request(spec, tokenizer, [], (), parse_tools=True)
    deltas = [d for t in tokens for d in unconstrained.push(t)] + unconstrained.finish()
    assert all(isinstance(d, ReasoningDelta) for d in deltas) and not unconstrained.made_tool_calls
    assert len(parsed("hermes", tokens)[1]) == 1
