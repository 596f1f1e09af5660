"""Tool-call parsers on piece streams (text and kept markers), split at every position, and the output
pipeline around them: reasoning first, stop strings on answer text only, the format chosen at load, and a
real tekken tokenizer's ids."""

from __future__ import annotations

import itertools
import json
import re

import pytest

from services.common.generation import ReasoningDelta, TextDelta, TokenLogprob, ToolCallDelta
from services.common.hf_models import ModelLoadError
from services.common.tokenizers import load_tokenizer
from services.text_engine.engine.output import Marker, OutputPipeline, merge_deltas, parser_for
from services.text_engine.engine.tools.parsers import (
    HermesToolParser,
    MistralToolParser,
    mistral_call_id,
    openai_call_id,
)

from .test_output_pipeline import END_THINK, EOS, SPECIALS, THINK, WordTokenizer

TOOL_CALLS, ARGS = Marker(9, "[TOOL_CALLS]"), Marker(32, "[ARGS]")
OPEN, CLOSE = Marker(151657, "<tool_call>"), Marker(151658, "</tool_call>")


def counter_ids():
    numbers = itertools.count()
    return lambda: f"id{next(numbers)}"


def mistral():
    return MistralToolParser(TOOL_CALLS.token_id, ARGS.token_id, new_id=counter_ids())


def hermes():
    return HermesToolParser(new_id=counter_ids())


def collect(outputs):
    """(answer text, calls) from a parser's outputs, checking the deltas' order as OpenAI streams them:
    a call's first delta has its index, id and name, later ones only argument fragments."""
    answer, calls = "", []
    for item in outputs:
        if isinstance(item, Marker):
            continue  # markers the tool parser does not own pass on (the pipeline drops them)
        if isinstance(item, str):
            answer += item
        elif item.id:
            assert item.name and item.index == len(calls), item
            calls.append({"id": item.id, "name": item.name, "arguments": item.arguments})
        else:
            assert not item.name and item.index == len(calls) - 1, item
            calls[-1]["arguments"] += item.arguments
    return answer, calls


def feed(factory, pieces):
    parser = factory()
    out = [o for piece in pieces for o in parser.feed(piece)] + parser.finish()
    return collect(out), parser.made_calls


def units(pieces):
    """The stream cut into its smallest parts: each character of text, each marker."""
    return [u for p in pieces for u in ([p] if isinstance(p, Marker) else list(p))]


def regroup(parts):
    """Neighbouring characters joined into one text piece, as a detokenizer might deliver them."""
    out = []
    for part in parts:
        if isinstance(part, str) and out and isinstance(out[-1], str):
            out[-1] += part
        else:
            out.append(part)
    return out


def every_split(factory, pieces):
    """The result, the same whether the stream comes in two pieces cut at any position or one character
    at a time."""
    parts = units(pieces)
    streams = [regroup(parts[:cut]) + regroup(parts[cut:]) for cut in range(len(parts) + 1)] + [parts]
    results = {json.dumps(feed(factory, stream)) for stream in streams}
    assert len(results) == 1, results
    (answer, calls), made = json.loads(results.pop())
    return answer, calls, made


def call(index, name, arguments):
    return {"id": f"id{index}", "name": name, "arguments": arguments}


# Mistral -------------------------------------------------------------------------------------------------


def test_mistral_single_call_with_text_before_it():
    pieces = ["Let me check.", TOOL_CALLS, "get_weather", ARGS, '{"city": "Paris"}']
    assert every_split(mistral, pieces) == ("Let me check.", [call(0, "get_weather", '{"city": "Paris"}')], True)


def test_mistral_parallel_calls():
    pieces = [TOOL_CALLS, "get_weather", ARGS, '{"city": "Paris"}', TOOL_CALLS, "get_time", ARGS, '{"tz": "CET"}']
    assert every_split(mistral, pieces) == (
        "",
        [call(0, "get_weather", '{"city": "Paris"}'), call(1, "get_time", '{"tz": "CET"}')],
        True,
    )


def test_mistral_call_goes_out_whole_once_its_arguments_close():
    parser = mistral()
    assert parser.feed(TOOL_CALLS) == [] and parser.feed("f") == [] and parser.feed(ARGS) == []
    assert parser.feed('{"a": {"b": "}"}') == [] and parser.made_calls  # held: the call may still be cut
    assert parser.feed("} ") == [ToolCallDelta(0, id="id0", name="f"), ToolCallDelta(0, arguments='{"a": {"b": "}"}}')]
    assert parser.feed("trailing") == [] and parser.finish() == []  # after the arguments, up to the next call


def test_mistral_call_cut_off_by_max_tokens_is_dropped():
    # The arguments stop mid-object: no call, and the answer is what came before it.
    assert every_split(mistral, ["Hi", TOOL_CALLS, "f", ARGS, '{"a": "x']) == ("Hi", [], False)
    # Cut before [ARGS]: no call either; the name is no answer text.
    assert every_split(mistral, ["Hi ", TOOL_CALLS, "get_we"]) == ("Hi ", [], False)
    # Cut in a second call: the first went out whole; the output was cut, so the answer is no longer calls.
    pieces = [TOOL_CALLS, "f", ARGS, '{"a": 1}', TOOL_CALLS, "get"]
    assert every_split(mistral, pieces) == ("", [call(0, "f", '{"a": 1}')], False)
    # Arguments without brackets that are whole when the output ends make a call.
    assert every_split(mistral, [TOOL_CALLS, "f", ARGS, "42"]) == ("", [call(0, "f", "42")], True)


def test_mistral_malformed_calls():
    # Arguments that are not JSON still make a call when the model moves on to the next one (vLLM: the model
    # sees in the history that it tried); at the end of the output they cannot be told from cut ones.
    pieces = [TOOL_CALLS, "f", ARGS, "not json", TOOL_CALLS, "g", ARGS, "{}"]
    assert every_split(mistral, pieces) == ("", [call(0, "f", "not json"), call(1, "g", "{}")], True)
    assert every_split(mistral, [TOOL_CALLS, "f", ARGS, "not json"]) == ("", [], False)
    # Text after [TOOL_CALLS] that is no function name: it was prose, and stays answer text.
    assert every_split(mistral, [TOOL_CALLS, "I cannot do that.", ARGS, "{}"]) == ("I cannot do that.{}", [], False)
    # [TOOL_CALLS][ARGS] with no name: no call.
    assert every_split(mistral, [TOOL_CALLS, ARGS, "{}"]) == ("{}", [], False)
    # A stray [ARGS] in the answer is a special token, never shown.
    assert every_split(mistral, ["a", ARGS, "b"]) == ("ab", [], False)


def test_mistral_ids_are_nine_alphanumerics():
    parser = MistralToolParser(TOOL_CALLS.token_id, ARGS.token_id)
    parser.feed(TOOL_CALLS), parser.feed("f"), parser.feed(ARGS)
    delta, _ = parser.feed("{}")
    assert re.fullmatch(r"[A-Za-z0-9]{9}", delta.id) and re.fullmatch(r"[A-Za-z0-9]{9}", mistral_call_id())
    assert re.fullmatch(r"call_[A-Za-z0-9]{24}", openai_call_id())


# Hermes --------------------------------------------------------------------------------------------------

ONE = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "note": "a } in a string"}}\n</tool_call>'
ONE_ARGS = '{"city": "Paris", "note": "a } in a string"}'


@pytest.mark.parametrize("tags", ["text", "markers"])
def test_hermes_single_and_parallel_calls_with_text_before_them(tags):
    def pieces(text):
        if tags == "text":
            return [text]
        return [
            p
            for part in re.split(r"(</?tool_call>)", text)
            if part
            for p in [{"<tool_call>": OPEN, "</tool_call>": CLOSE}.get(part, part)]
        ]

    assert every_split(hermes, pieces("Let me check.\n\n" + ONE)) == (
        "Let me check.",
        [call(0, "get_weather", ONE_ARGS)],
        True,
    )
    two = ONE + '\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
    assert every_split(hermes, pieces(two)) == ("", [call(0, "get_weather", ONE_ARGS), call(1, "get_time", "{}")], True)


def test_hermes_call_goes_out_whole_once_its_arguments_close():
    parser = hermes()
    assert parser.feed('<tool_call>\n{"name": "f", "argu') == [] and not parser.made_calls
    assert parser.feed('ments": {"a": ') == [] and parser.made_calls  # held: the call may still be cut
    assert parser.feed("[1, 2]}}\n</tool") == [
        ToolCallDelta(0, id="id0", name="f"),
        ToolCallDelta(0, arguments='{"a": [1, 2]}'),
    ]
    assert parser.feed("_call>") == [] and parser.finish() == []


def test_hermes_text_that_only_looks_like_a_tag_is_text():
    assert every_split(hermes, ["a < b and <tool_c is not a tag"]) == ("a < b and <tool_c is not a tag", [], False)


def test_hermes_text_after_a_call_stays_answer_but_its_whitespace_does_not():
    assert every_split(hermes, [ONE + "\n\nDone.\n"]) == ("Done.\n", [call(0, "get_weather", ONE_ARGS)], True)


def test_hermes_call_cut_off_by_max_tokens_is_dropped():
    # Inside the arguments or before them: no call, no markup; the answer is what came before it.
    assert every_split(hermes, ['Hi\n<tool_call>\n{"name": "f", "arguments": {"a": "x']) == ("Hi", [], False)
    assert every_split(hermes, ['Hi\n<tool_call>\n{"name": "f"']) == ("Hi", [], False)
    # Cut in a second call: the first went out whole; the output was cut, so the answer is no longer calls.
    second = ONE + '\n<tool_call>\n{"name": "get_weat'
    assert every_split(hermes, [second]) == ("", [call(0, "get_weather", ONE_ARGS)], False)
    # Cut after the arguments closed: the call is whole.
    assert every_split(hermes, [ONE.removesuffix("}\n</tool_call>")]) == ("", [call(0, "get_weather", ONE_ARGS)], True)


def test_hermes_block_that_closes_inside_its_arguments_is_a_call_with_what_arrived():
    # The model ended it (`<` is never JSON outside a string), as the next [TOOL_CALLS] ends a Mistral call.
    assert every_split(hermes, ['<tool_call>{"name": "f", "arguments": {"a": </tool_call> ok']) == (
        "ok",
        [call(0, "f", '{"a": ')],
        True,
    )


def test_hermes_blocks_of_another_shape_are_parsed_whole_or_returned_as_text():
    # Keys in the other order: not streamable, but a valid call once the block is complete.
    other_order = '<tool_call>{"arguments": {"a": 1}, "name": "f"}</tool_call>'
    assert every_split(hermes, [other_order]) == ("", [call(0, "f", '{"a": 1}')], True)
    # The same without its closing tag (the output ended): still a call.
    assert every_split(hermes, [other_order.removesuffix("</tool_call>")]) == ("", [call(0, "f", '{"a": 1}')], True)
    # Not JSON: the block is answer text, tags included.
    assert every_split(hermes, ["x <tool_call>oops</tool_call> y"]) == ("x <tool_call>oops</tool_call> y", [], False)
    # A block that closes before any arguments: a name alone is a call without arguments; no name, no call.
    assert every_split(hermes, ['a <tool_call>{"name": "f"}</tool_call>']) == ("a", [call(0, "f", "{}")], True)
    assert every_split(hermes, ['<tool_call>{"name": 3}</tool_call>']) == (
        '<tool_call>{"name": 3}</tool_call>',
        [],
        False,
    )


def test_hermes_markers_it_does_not_own_pass_through():
    other = Marker(5, "<|im_end|>")
    assert hermes().feed(other) == [other]


# The pipeline --------------------------------------------------------------------------------------------

TOOL_ID, ARGS_ID = 509, 510
WORDS = {2000 + i: w for i, w in enumerate(["get_weather", '{"city":', ' "Paris"}', "Sure", " STOP", "Let", " me"])}
T = {w: i for i, w in WORDS.items()}


class ToolTokenizer(WordTokenizer):
    """The pipeline test's tokenizer with tool markers and a few more words."""

    def __init__(self, chat_template=None):
        super().__init__({**SPECIALS, TOOL_ID: "[TOOL_CALLS]", ARGS_ID: "[ARGS]"})
        self.chat_template = chat_template

    def decode(self, ids, skip_special_tokens=True):
        return "".join(
            WORDS[i] if i in WORDS else super(ToolTokenizer, self).decode([i], skip_special_tokens) for i in ids
        )


def run_pipeline(tokens, *, parse_tools=True, stop=(), spec=None, tokenizer=None):
    tokenizer = tokenizer or ToolTokenizer()
    spec = spec or parser_for("auto", tokenizer, "auto")
    pipeline = OutputPipeline.for_request(spec, tokenizer, [], stop, parse_tools=parse_tools)
    deltas = merge_deltas([d for t in tokens for d in pipeline.push(t)] + pipeline.finish())
    return deltas, pipeline


def ids(*names):
    return [n if isinstance(n, int) else T[n] for n in names]


CALL_TOKENS = ids(TOOL_ID, "get_weather", ARGS_ID, '{"city":', ' "Paris"}')


def test_pipeline_reasoning_then_a_call():
    tokens = ids(THINK, "Let", " me", END_THINK, "Sure", *CALL_TOKENS, EOS)
    deltas, pipeline = run_pipeline(tokens)
    assert [type(d) for d in deltas] == [ReasoningDelta, TextDelta, ToolCallDelta, ToolCallDelta]
    assert deltas[0].text == "Let me" and deltas[1].text == "Sure"
    assert (deltas[2].index, deltas[2].name, deltas[2].arguments) == (0, "get_weather", "")
    assert deltas[3] == ToolCallDelta(0, arguments='{"city": "Paris"}')  # the fragments merged
    assert pipeline.made_tool_calls


def test_pipeline_never_reads_calls_out_of_the_reasoning():
    deltas, pipeline = run_pipeline(ids(THINK, *CALL_TOKENS, END_THINK, "Sure", EOS))
    assert deltas == [ReasoningDelta('get_weather{"city": "Paris"}'), TextDelta("Sure")]
    assert not pipeline.made_tool_calls


def test_pipeline_stop_strings_apply_to_answer_text_not_to_arguments():
    tokens = ids("Sure", TOOL_ID, "get_weather", ARGS_ID, '{"city":', " STOP", ' "Paris"}', EOS)
    deltas, _ = run_pipeline(tokens, stop=("STOP",))
    assert deltas[-1] == ToolCallDelta(0, arguments='{"city": STOP "Paris"}')
    deltas, pipeline = run_pipeline(ids("Sure", " STOP", *CALL_TOKENS), stop=("STOP",))
    assert deltas == [TextDelta("Sure ")] and pipeline.stopped and not pipeline.made_tool_calls


def test_pipeline_without_tool_parsing_shows_no_markers_and_makes_no_calls():
    deltas, pipeline = run_pipeline(ids("Sure", *CALL_TOKENS, EOS), parse_tools=False)
    assert deltas == [TextDelta('Sureget_weather{"city": "Paris"}')] and not pipeline.made_tool_calls


def test_merge_deltas_keeps_logprobs_and_call_boundaries():
    lp = TokenLogprob("a", -0.1, b"a"), TokenLogprob("b", -0.2, b"b")
    assert merge_deltas([TextDelta("a", lp[:1]), TextDelta("", ()), TextDelta("b", lp[1:])]) == [TextDelta("ab", lp)]
    assert merge_deltas([TextDelta("", lp[:1])]) == [TextDelta("", lp[:1])]  # logprobs of a token with no text yet
    first, second = ToolCallDelta(0, id="x", name="f"), ToolCallDelta(1, id="y", name="g")
    merged = merge_deltas(
        [
            first,
            ToolCallDelta(0, arguments="{"),
            ToolCallDelta(0, arguments="}"),
            second,
            ToolCallDelta(1, arguments="{}"),
            ToolCallDelta(1),
        ]
    )
    assert merged == [first, ToolCallDelta(0, arguments="{}"), second, ToolCallDelta(1, arguments="{}")]


def test_the_tool_format_is_chosen_at_load():
    assert parser_for("auto", ToolTokenizer(), "auto").tools == "mistral"
    assert parser_for("auto", ToolTokenizer(), "none").tools == "none"
    plain = WordTokenizer({EOS: "</s>"})
    assert parser_for("auto", plain, "auto").tools == "none"
    plain.chat_template = "{% if tools %}<tool_call>{% endif %}"
    hermes_spec = parser_for("auto", plain, "auto")
    assert (hermes_spec.tools, hermes_spec.tool_markers) == ("hermes", ())  # its tags are read from text
    assert parser_for("auto", WordTokenizer({EOS: "</s>"}), "hermes").tools == "hermes"
    with pytest.raises(ModelLoadError, match=r"\[TOOL_CALLS\] and \[ARGS\]"):
        parser_for("auto", WordTokenizer({EOS: "</s>"}), "mistral")


def test_a_real_tekken_tokenizers_call_becomes_a_call():
    tokenizer = load_tokenizer("models/tiny/ministral-3-tiny")
    spec = parser_for("auto", tokenizer, "auto")
    assert (spec.reasoning, spec.tools) == ("mistral", "mistral")
    text = (
        '[THINK]Weather, so a tool.[/THINK]On it.[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}'
        '[TOOL_CALLS]get_time[ARGS]{"tz": "CET"}'
    )
    tokens = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
    deltas, pipeline = run_pipeline(tokens, spec=spec, tokenizer=tokenizer)
    answer, calls = collect(
        [d.text if isinstance(d, TextDelta) else d for d in deltas if not isinstance(d, ReasoningDelta)]
    )
    assert "".join(d.text for d in deltas if isinstance(d, ReasoningDelta)) == "Weather, so a tool."
    assert answer == "On it." and pipeline.made_tool_calls
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"tz": "CET"}),
    ]
    assert all(re.fullmatch(r"[A-Za-z0-9]{9}", c["id"]) for c in calls)


def test_a_real_qwen3_tokenizers_calls_become_calls():
    tokenizer = load_tokenizer("models/tiny/qwen3-tiny")
    spec = parser_for("auto", tokenizer, "auto")
    assert (spec.reasoning, spec.tools) == ("deepseek_r1", "hermes")
    text = (
        '<think>\nWeather, so a tool.\n</think>\n\nOn it.\n<tool_call>\n{"name": "get_weather", "arguments": '
        '{"city": "Paris"}}\n</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {"tz": "CET"}}\n</tool_call>'
    )
    tokens = tokenizer.encode(text, add_special_tokens=False)
    assert spec.tool_markers[0].token_id in tokens  # the tags are single (non-special) tokens here
    deltas, pipeline = run_pipeline(
        tokens + [tokenizer.convert_tokens_to_ids("<|im_end|>")], spec=spec, tokenizer=tokenizer
    )
    answer, calls = collect(
        [d.text if isinstance(d, TextDelta) else d for d in deltas if not isinstance(d, ReasoningDelta)]
    )
    assert "".join(d.text for d in deltas if isinstance(d, ReasoningDelta)).strip() == "Weather, so a tool."
    assert answer.strip() == "On it." and pipeline.made_tool_calls
    assert [(c["name"], c["arguments"]) for c in calls] == [
        ("get_weather", '{"city": "Paris"}'),
        ("get_time", '{"tz": "CET"}'),
    ]
    assert all(re.fullmatch(r"call_[A-Za-z0-9]{24}", c["id"]) for c in calls)
    # Without tool parsing the tags are what they are in this vocabulary: text.
    deltas, pipeline = run_pipeline(tokens, spec=spec, tokenizer=tokenizer, parse_tools=False)
    assert "<tool_call>" in "".join(d.text for d in deltas if isinstance(d, TextDelta)) and not pipeline.made_tool_calls
