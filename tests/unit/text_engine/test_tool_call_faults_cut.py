"""Tool-calling fault 1 (issue 24, item 6): a call cut by max_tokens was reported as `tool_calls` with broken
arguments (`'{"'`), or its partial name leaked into the content with `length`. Now a call goes out only once
its end is read, so a cut call never shows, not even streamed; the request finishes `length` and keeps the
text before the call as its content. Checked through the request stream (the finish reason) and the output
pipeline, on the real stand-in tokenizers, at every cut position.
"""

from __future__ import annotations

import pytest

from services.common.generation import Finished, ReasoningDelta, TextDelta, ToolCallDelta
from services.text_engine.engine.admission import PreparedRequest
from services.text_engine.engine.output import Marker, OutputPipeline
from services.text_engine.engine.sampling.spec import SamplingSpec
from services.text_engine.engine.stream import RequestStream
from services.text_engine.engine.tools.parsers import HermesToolParser, MistralToolParser

from .test_output_pipeline import Output
from .test_tool_call_faults import MODELS, call_text, calls_text, encode, head, model

PARIS = '{"city": "Paris"}'
# Qwen3's output starts inside a reasoning (its template opens it); an empty one first, as it writes when told
# not to think, puts the rest in the answer.
NO_THINKING = {"mistral": "", "hermes": "<think>\n\n</think>\n\n"}


async def stream(fmt, tokens):
    """The request stream's events over `tokens`, delivered one step at a time as the engine delivers them;
    the last is `Finished`. Unless the last token is an end-of-sequence, the request ran into max_tokens."""
    tokenizer, spec, compiler = model(fmt)
    prepared = PreparedRequest(
        prompt_ids=[1], max_new_tokens=len(tokens), spec=SamplingSpec(0.0, 1.0, 0), stop=(), parse_tools=True
    )
    request = RequestStream("k", prepared, tokenizer, list(compiler.eos_token_ids), spec)
    for n in range(1, len(tokens) + 1):
        request.on_output(Output(tokens[:n], finished=n == len(tokens)))
    events = [event async for event in request.events()]
    assert isinstance(events[-1], Finished)
    return events


def calls_of(events):
    calls = []
    for event in (e for e in events if isinstance(e, ToolCallDelta)):
        if event.id:
            calls.append({"name": event.name, "arguments": ""})
        calls[event.index]["arguments"] += event.arguments
    return calls


def answer_of(events):
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def first_token_with(fmt, tokens, needle, start=0):
    """How many tokens it takes for the text after `tokens[:start]` to contain `needle`."""
    decode = model(fmt)[0].decode
    return next(
        n for n in range(start, len(tokens) + 1) if needle in decode(tokens[start:n], skip_special_tokens=False)
    )


@pytest.mark.parametrize("fmt", list(MODELS))
async def test_a_call_cut_anywhere_by_max_tokens_finishes_length_with_only_the_text_before_it(fmt):
    # Every cut from the call's first token up to the one that closes its arguments: no call (not even its
    # first delta), no name or markup in the content, finish reason length.
    intro = "Let me check."
    tokens = encode(
        fmt, NO_THINKING[fmt] + intro + ("\n" if fmt == "hermes" else "") + call_text(fmt, "get_weather", PARIS)
    )
    marker = first_token_with(fmt, tokens, "[TOOL_CALLS]" if fmt == "mistral" else "<tool_call>")
    closing = first_token_with(fmt, tokens, "}", start=marker)
    for cut in range(marker, closing):
        events = await stream(fmt, tokens[:cut])
        assert (answer_of(events).strip(), calls_of(events), events[-1].reason.value) == (intro, [], "length"), cut
    # From the token that closes its arguments on, the call is whole: it goes out, and the answer is a call.
    for cut in range(closing, len(tokens) + 1):
        events = await stream(fmt, tokens[:cut])
        assert calls_of(events) == [{"name": "get_weather", "arguments": PARIS}], cut
        assert (answer_of(events).strip(), events[-1].reason.value) == (intro, "tool_calls"), cut


@pytest.mark.parametrize("fmt", list(MODELS))
async def test_complete_calls_stay_and_a_cut_last_call_is_dropped(fmt):
    # Parallel calls cut in the last one: the complete ones were streamed already, the cut one never shows,
    # and the finish reason says that the output was cut (as OpenAI and vLLM report a cut parallel call).
    text = calls_text(fmt, ("get_time", "{}")) + ("\n" if fmt == "hermes" else "") + head(fmt, "get_weather") + '{"ci'
    events = await stream(fmt, encode(fmt, NO_THINKING[fmt] + text))
    assert calls_of(events) == [{"name": "get_time", "arguments": "{}"}]
    assert (answer_of(events).strip(), events[-1].reason.value) == ("", "length")


@pytest.mark.parametrize("fmt", list(MODELS))
def test_a_call_streams_when_its_arguments_close_not_before(fmt):
    # No piece of a call goes out before its end is read, so a cut can never leave half a call at a client.
    tokenizer, spec, compiler = model(fmt)
    thinking, tokens = encode(fmt, NO_THINKING[fmt]), encode(fmt, call_text(fmt, "get_weather", PARIS))
    closing = first_token_with(fmt, tokens, "}")
    pipeline = OutputPipeline.for_request(spec, tokenizer, [], (), parse_tools=True)
    assert [d for t in thinking for d in pipeline.push(t) if not isinstance(d, ReasoningDelta)] == []
    for n, token in enumerate(tokens, start=1):
        deltas = pipeline.push(token)
        assert any(isinstance(d, ToolCallDelta) for d in deltas) == (n == closing), (n, deltas)
    assert pipeline.push(compiler.eos_token_ids[0]) + pipeline.finish() == []
    assert pipeline.made_tool_calls


def test_a_cut_mistral_call_header_is_not_answer_text():
    parser = MistralToolParser(9, 32)
    out = parser.feed("Sure.") + parser.feed(Marker(9, "[TOOL_CALLS]")) + parser.feed("get_wea") + parser.finish()
    assert out == ["Sure."] and not parser.made_calls


@pytest.mark.parametrize(
    "cut",
    [
        'Sure.\n<tool_call>\n{"name": "get_wea',
        "Sure.\n<tool_call>\n{",
        "Sure.\n<tool_ca",
        'Sure.\n<tool_call>\n{"arguments": {"a": 1}, "na',
    ],
)
def test_a_cut_hermes_block_or_tag_is_not_answer_text(cut):
    parser = HermesToolParser()
    out = parser.feed(cut) + parser.finish()
    assert out == ["Sure."] and not parser.made_calls
