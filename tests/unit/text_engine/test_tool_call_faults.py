"""Tool-calling faults agent frameworks found (issue 24, item 6), in the tool_choice grammars:

2. tool_choice `required` with parallel calls: the model may end after any complete call;
3. a named tool_choice: exactly one call of that function, parallel or not.

(1, a call cut by max_tokens: test_tool_call_faults_cut.py; 4, JSON whitespace: test_tool_call_faults_json.py.)
The helpers here are theirs too. Real stand-in tokenizers (models/tiny/, built by `make models`) and the real
grammar compiler; no model.
"""

from __future__ import annotations

import json
from functools import cache

import pytest
import torch

from services.common.generation import Tool, ToolChoice, ToolChoiceMode
from services.common.tokenizers import load_tokenizer
from services.text_engine.engine.output import parser_for
from services.text_engine.engine.sampling.grammar import GrammarCompiler, GrammarSpec
from services.text_engine.engine.tools.constraints import tool_call_grammar

MODELS = {"mistral": ("models/tiny/ministral-3-tiny", [2]), "hermes": ("models/tiny/qwen3-tiny", [151645, 151643])}
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 8}},
    "required": ["city"],
    "additionalProperties": False,
}
TOOLS = (Tool("get_weather", "", json.dumps(WEATHER)), Tool("get_time", "", ""))
REQUIRED, NAMED = ToolChoice(ToolChoiceMode.REQUIRED), ToolChoice(ToolChoiceMode.NAMED, "get_weather")


@cache
@cache  # loading a tokenizer and building its grammar compiler is most of these tests' time
def model(fmt):
    path, eos = MODELS[fmt]
    tokenizer = load_tokenizer(path)
    spec = parser_for("auto", tokenizer, "auto")
    assert spec.tools == fmt
    return tokenizer, spec, GrammarCompiler(tokenizer, len(tokenizer), eos)


def head(fmt, name):
    """What comes before a call's arguments, as the model's chat template writes it."""
    return f"[TOOL_CALLS]{name}[ARGS]" if fmt == "mistral" else f'<tool_call>\n{{"name": "{name}", "arguments": '


def call_text(fmt, name, arguments):
    """One whole call; calls follow each other directly (Mistral) or on the next line (Qwen's templates)."""
    if fmt == "mistral":
        return head(fmt, name) + arguments
    return head(fmt, name) + arguments + "}\n</tool_call>"


def calls_text(fmt, *calls):
    return ("\n" if fmt == "hermes" else "").join(call_text(fmt, *c) for c in calls)


def encode(fmt, text):
    return model(fmt)[0].encode(text, add_special_tokens=False)


def eos(fmt) -> set[int]:
    return set(model(fmt)[2].eos_token_ids)


# Grammars: what the mask allows after a text ---------------------------------------------------------------


def allowed_after(fmt, grammar: GrammarSpec, text: str) -> set[int] | None:
    """The tokens the grammar allows after `text`; None when it refuses `text` itself."""
    _, _, compiler = model(fmt)
    matcher = compiler.compile(grammar).matcher().ll_matcher
    if not all(matcher.consume_token(t) for t in encode(fmt, text)):
        return None
    mask = torch.zeros((compiler.vocab_size + 31) // 32, dtype=torch.int32)
    matcher.unsafe_compute_mask_ptr(mask.data_ptr(), mask.numel() * 4)
    bits = (mask.view(-1, 1) >> torch.arange(32, dtype=torch.int32)) & 1  # bit j of word w: token 32w + j
    return {i for i in bits.flatten().nonzero().flatten().tolist() if i < compiler.vocab_size}


# 2. required + parallel: the model may end after any complete call ------------------------------------------


@pytest.mark.parametrize("fmt", list(MODELS))
def test_required_parallel_calls_may_end_after_any_complete_call(fmt):
    grammar = tool_call_grammar(model(fmt)[1], TOOLS, REQUIRED, parallel=True)
    start = {"mistral": "[TOOL_CALLS]", "hermes": "\n"}[fmt]
    calls = [("get_time", "{}"), ("get_weather", '{"city": "Oslo"}'), ("get_time", "{}")]
    for n in range(1, len(calls) + 1):
        text = calls_text(fmt, *calls[:n])
        after = allowed_after(fmt, grammar, text)
        assert eos(fmt) <= after and set(encode(fmt, start)) <= after, text  # the end, or one more call
        if fmt == "hermes":
            # Calls are a newline apart; a model that writes the newline after its last call must still be free to
            # stop there, not be forced into one more call (and another, until max_tokens cuts the last one).
            assert eos(fmt) | set(encode(fmt, "<tool_call>")) <= allowed_after(fmt, grammar, text + "\n"), text


# 3. A named tool_choice: exactly one call ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(MODELS))
@pytest.mark.parametrize("parallel", [True, False])
def test_a_named_choice_allows_one_call_and_then_only_the_end(fmt, parallel):
    grammar = tool_call_grammar(model(fmt)[1], TOOLS, NAMED, parallel)
    one = call_text(fmt, "get_weather", '{"city": "Oslo"}')
    if fmt == "mistral":
        assert allowed_after(fmt, grammar, one) == eos(fmt)  # no second [TOOL_CALLS]
    else:
        assert allowed_after(fmt, grammar, one + "\n") == eos(fmt)  # the template's newline, then only the end
    assert allowed_after(fmt, grammar, calls_text(fmt, *[("get_weather", '{"city": "Oslo"}')] * 2)) is None
