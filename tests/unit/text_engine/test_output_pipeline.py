"""The output pipeline on token-id sequences: the four reasoning cases (as vLLM's parsers define them),
stop strings on the answer only, reasoning-token accounting, and the same result however the engine's
steps group the tokens (every split position of the stream)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from services.common.generation import Finished, ReasoningDelta, TextDelta
from services.common.hf_models import ModelLoadError
from services.text_engine.engine.admission import PreparedRequest
from services.text_engine.engine.output import parser_for
from services.text_engine.engine.sampling.spec import SamplingSpec
from services.text_engine.engine.stream import RequestStream

EOS, THINK, END_THINK, OPEN, CLOSE, TOOL = 502, 534, 535, 540, 541, 509
SPECIALS = {
    EOS: "</s>",
    THINK: "[THINK]",
    END_THINK: "[/THINK]",
    OPEN: "<think>",
    CLOSE: "</think>",
    TOOL: "[TOOL_CALLS]",
}
WORDS = {1000 + i: w for i, w in enumerate(["Let", " me", " think", ".", "Hello", " there", "!", " STOP", " here"])}
W = {w: i for i, w in WORDS.items()}


class WordTokenizer:
    """Ids < 256 are raw bytes (so a character can be split), 1000+ words, a few special tokens; decoding
    skips the special ones, as Hugging Face tokenizers do with skip_special_tokens=True."""

    unk_token, unk_token_id = "<unk>", 0

    def __init__(self, specials=SPECIALS):
        self.specials = dict(specials)

    def decode(self, ids, skip_special_tokens=True):
        data = b""
        for i in ids:
            if i in self.specials:
                data += b"" if skip_special_tokens else self.specials[i].encode()
            else:
                data += bytes([i]) if i < 256 else WORDS[i].encode()
        return data.decode("utf-8", errors="replace")

    def convert_tokens_to_ids(self, token):
        return next((i for i, t in self.specials.items() if t == token), self.unk_token_id)

    def convert_ids_to_tokens(self, token_id):
        return self.specials.get(token_id, self.unk_token)


@dataclass
class Output:
    generated_tokens: list[int]
    finished: bool
    error: str | None = None

    def is_finished(self):
        return self.finished


def ids(*names):
    return [n if isinstance(n, int) else W[n] for n in names]


async def run(tokens, *, split=None, parser="mistral", stop=(), tokenizer=None):
    """Stream `tokens` as the manager would (cumulative lists), in two steps split at `split`."""
    tokenizer = tokenizer or WordTokenizer()
    prepared = PreparedRequest(prompt_ids=[1001], max_new_tokens=64, spec=SamplingSpec(0.0, 1.0, 0), stop=tuple(stop))
    stream = RequestStream("k", prepared, tokenizer, [EOS], parser_for(parser, tokenizer))
    cuts = [c for c in (split, len(tokens)) if c]
    for n, cut in enumerate(cuts):
        stream.on_output(Output(tokens[:cut], finished=n == len(cuts) - 1))
    events = [e async for e in stream.events()]
    assert isinstance(events[-1], Finished)
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    answer = "".join(e.text for e in events if isinstance(e, TextDelta))
    return reasoning, answer, events[-1]


async def every_split(tokens, **kw):
    """The result, checked to be the same at every split position of the stream."""
    results = {
        (r, a, f.reason, f.reasoning_tokens)
        for r, a, f in [await run(tokens, split=s, **kw) for s in range(len(tokens) + 1)]
    }
    assert len(results) == 1, results
    return results.pop()


CASES = [
    # both markers: reasoning between them, the rest is answer
    (ids(THINK, "Let", " me", " think", END_THINK, "Hello", "!", EOS), "Let me think", "Hello!", "stop", 5),
    # only [THINK] (cut by max_tokens): the rest is reasoning
    (ids(THINK, "Let", " me"), "Let me", "", "length", 3),
    # only [/THINK]: the marker is dropped, everything is answer
    (ids("Let", END_THINK, "Hello", EOS), "", "LetHello", "stop", 0),
    # neither marker: everything is answer
    (ids("Hello", " there", EOS), "", "Hello there", "stop", 0),
    # answer text before [THINK] stays answer
    (ids("Hello", THINK, " me", END_THINK, "!", EOS), " me", "Hello!", "stop", 3),
]


@pytest.mark.parametrize(("tokens", "reasoning", "answer", "reason", "reasoning_tokens"), CASES)
async def test_mistral_reasoning_cases_at_every_split(tokens, reasoning, answer, reason, reasoning_tokens):
    assert await every_split(tokens) == (reasoning, answer, reason, reasoning_tokens)


async def test_deepseek_r1_treats_text_before_the_end_marker_as_reasoning():
    # Its templates open <think> in the prompt: the output starts inside the reasoning.
    assert await every_split(ids("Let", " me", CLOSE, "Hello", EOS), parser="deepseek_r1") == (
        "Let me",
        "Hello",
        "stop",
        3,
    )
    assert await every_split(ids(OPEN, "Let", CLOSE, "Hello", EOS), parser="deepseek_r1") == ("Let", "Hello", "stop", 3)
    assert await every_split(ids("Let", " me"), parser="deepseek_r1") == ("Let me", "", "length", 2)


async def test_none_parser_and_models_without_markers_pass_everything_as_answer():
    tokens = ids(THINK, "Let", END_THINK, "Hello", EOS)
    assert await every_split(tokens, parser="none") == ("", "LetHello", "stop", 0)  # specials skipped as before
    no_think = WordTokenizer({EOS: "</s>"})
    assert parser_for("auto", no_think).reasoning == "none"
    assert parser_for("auto", WordTokenizer()).reasoning == "mistral"
    assert (
        parser_for("auto", WordTokenizer({EOS: "</s>", OPEN: "<think>", CLOSE: "</think>"})).reasoning == "deepseek_r1"
    )


def test_an_explicit_parser_whose_markers_are_missing_fails_the_load():
    with pytest.raises(ModelLoadError, match=r"\[THINK\] and \[/THINK\]"):
        parser_for("mistral", WordTokenizer({EOS: "</s>"}))


async def test_stop_strings_apply_to_the_answer_only():
    tokens = ids(THINK, "Let", " STOP", END_THINK, "Hello", " STOP", " here", EOS)
    reasoning, answer, reason, reasoning_tokens = await every_split(tokens, stop=("STOP",))
    assert (reasoning, answer, reason) == ("Let STOP", "Hello ", "stop")
    assert reasoning_tokens == 4


async def test_the_finish_names_the_stop_string_that_ended_the_answer():
    *_, stopped = await run(ids("Hello", " STOP", " here", EOS), stop=("END", "STOP"))
    *_, ended = await run(ids("Hello", EOS), stop=("STOP",))
    assert (stopped.reason.name, stopped.stop_sequence) == ("STOP", "STOP")
    assert (ended.reason.name, ended.stop_sequence) == ("STOP", "")  # end of sequence: no stop string


async def test_a_character_split_across_tokens_before_a_marker_stays_on_its_side():
    e_acute = list("é".encode())
    tokens = ids(THINK, *e_acute, END_THINK, *e_acute, EOS)
    assert await every_split(tokens) == ("é", "é", "stop", 4)
    # An unfinished character right before the end marker is released (as U+FFFD) on the reasoning side.
    assert await every_split(ids(THINK, e_acute[0], END_THINK, "Hello", EOS)) == ("\ufffd", "Hello", "stop", 3)


async def test_markers_no_parser_owns_are_never_shown_and_text_that_looks_like_a_marker_is_text():
    assert await every_split(ids("Hello", TOOL, "!", EOS)) == ("", "Hello!", "stop", 0)
    literal = list(b"[THINK]x")
    assert await every_split([*literal, EOS]) == ("", "[THINK]x", "stop", 0)
