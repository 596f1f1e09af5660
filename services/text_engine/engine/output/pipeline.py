"""One request's output pipeline: token ids in, reasoning, answer and tool-call deltas out."""

from __future__ import annotations

from collections.abc import Sequence

from services.common.generation import ReasoningDelta, TextDelta, ToolCallDelta

from ..stopping import StopStringMatcher
from ..tools.parsers import ToolCallParser
from .detokenizer import Marker, MarkerDetokenizer
from .parsers import Channel, LiteralParser, OutputParser, ParserSpec, Segment

OutputDelta = TextDelta | ReasoningDelta | ToolCallDelta


class OutputPipeline:
    """Detokenizer -> reasoning parser -> tool-call parser (answer only) -> stop strings (answer text only)
    for one request.

    `push(token_id)` returns the deltas that token completes (neighbours merged, see `merge_deltas`); once a
    stop string matched, `stopped` is True (`stop_sequence` says which one) and later tokens are ignored. `reasoning_tokens` counts the
    tokens generated inside the reasoning, its start and end markers included. `made_tool_calls` says
    whether the answer is tool calls (the request then finishes with TOOL_CALLS); a call goes out whole, once
    its end is read, and one the output ends in (cut by max_tokens) is dropped. Without a tool parser
    (`tools=None`: the model has no tool format, or the request asked for no tool calls) the answer is all
    text."""

    def __init__(
        self,
        detokenizer: MarkerDetokenizer,
        parser: OutputParser,
        stops: StopStringMatcher,
        tools: ToolCallParser | None = None,
    ) -> None:
        self._detok, self._parser, self._stops, self._tools = detokenizer, parser, stops, tools
        self.reasoning_tokens = 0
        self.stopped = False
        self.stop_sequence = ""  # the stop string that matched

    @classmethod
    def for_request(
        cls,
        spec: ParserSpec,
        tokenizer,
        prompt_ids: Sequence[int],
        stop: tuple[str, ...],
        parse_tools: bool = False,
        constrained: bool = False,
        raw: bool = False,
    ) -> OutputPipeline:
        """The pipeline of one request of a model whose parsing is `spec`; `parse_tools` when the request
        offers tools and lets the model call them (tool_choice is not `none`); `constrained` when a grammar
        shapes the output from its first token (see `ParserSpec.new`); `raw` for a raw prompt (legacy
        completions): no parsing, the output is all answer text, its reasoning markers written out."""
        if raw:
            return cls(MarkerDetokenizer(tokenizer, prompt_ids, spec.keep), LiteralParser(), StopStringMatcher(stop))
        tools = spec.new_tool_parser() if parse_tools else None
        detokenizer = MarkerDetokenizer(tokenizer, prompt_ids, spec.keep_for(tools is not None))
        return cls(detokenizer, spec.new(constrained), StopStringMatcher(stop), tools)

    @property
    def made_tool_calls(self) -> bool:
        """Whether the answer is tool calls: from a call's head on; after `finish`, only if no call was cut
        off (see ToolCallParser.made_calls)."""
        return self._tools is not None and self._tools.made_calls

    def push(self, token_id: int) -> list[OutputDelta]:
        """Feed one generated token."""
        if self.stopped:
            return []
        was_reasoning = self._parser.in_reasoning
        segments = [s for piece in self._detok.push(token_id) for s in self._parser.feed(piece)]
        if was_reasoning or self._parser.in_reasoning:
            self.reasoning_tokens += 1
        return self._emit(self._read_tool_calls(segments))

    def finish(self) -> list[OutputDelta]:
        """End of generation: release what the detokenizer, the parsers and the stop matcher still hold."""
        if self.stopped:
            return []
        segments = [s for piece in self._detok.flush() for s in self._parser.feed(piece)] + self._parser.finish()
        items = self._read_tool_calls(segments)
        if self._tools is not None:
            items += [self._answer(item) for item in self._tools.finish()]
        out = self._emit(items)
        if not self.stopped:
            out = merge_deltas(out + [TextDelta(self._stops.flush())])
        return out

    def _read_tool_calls(self, segments: list[Segment]) -> list[Segment | ToolCallDelta]:
        """Answer segments through the tool-call parser; reasoning passes by it."""
        if self._tools is None:
            return list(segments)
        out: list[Segment | ToolCallDelta] = []
        for segment in segments:
            if segment.channel is Channel.ANSWER:
                out += [self._answer(item) for item in self._tools.feed(segment.piece)]
            else:
                out.append(segment)
        return out

    @staticmethod
    def _answer(item):
        return item if isinstance(item, ToolCallDelta) else Segment(Channel.ANSWER, item)

    def _emit(self, items: list[Segment | ToolCallDelta]) -> list[OutputDelta]:
        out: list[OutputDelta] = []
        for item in items:
            if isinstance(item, ToolCallDelta):
                # Stop strings never apply to arguments; answer text held as a possible stop start goes first.
                out += [TextDelta(self._stops.flush()), item]
                continue
            if isinstance(item.piece, Marker) or not item.piece:
                continue  # a marker no parser consumed: a special token, never shown as text
            if item.channel is Channel.REASONING:
                out += [TextDelta(self._stops.flush()), ReasoningDelta(item.piece)]
                continue
            result = self._stops.push(item.piece)
            out.append(TextDelta(result.text))
            if result.stopped:
                self.stopped, self.stop_sequence = True, result.stop
                break
        return merge_deltas(out)


def merge_deltas(deltas: list[OutputDelta]) -> list[OutputDelta]:
    """Drop empty deltas and join neighbours of one kind (fewer messages, same content): answer text with
    its logprobs, reasoning text, and argument fragments of the same call. A call's first delta (id and
    name) is never merged into, so each call still starts with its own delta."""
    out: list[OutputDelta] = []
    for delta in deltas:
        if _empty(delta):
            continue
        last = out[-1] if out else None
        if isinstance(delta, TextDelta) and isinstance(last, TextDelta):
            out[-1] = TextDelta(last.text + delta.text, last.logprobs + delta.logprobs)
        elif isinstance(delta, ReasoningDelta) and isinstance(last, ReasoningDelta):
            out[-1] = ReasoningDelta(last.text + delta.text)
        elif (
            isinstance(delta, ToolCallDelta)
            and isinstance(last, ToolCallDelta)
            and last.index == delta.index
            and not (last.id or last.name or delta.id or delta.name)
        ):
            out[-1] = ToolCallDelta(delta.index, arguments=last.arguments + delta.arguments)
        else:
            out.append(delta)
    return out


def _empty(delta: OutputDelta) -> bool:
    if isinstance(delta, ToolCallDelta):
        return not (delta.id or delta.name or delta.arguments)
    if isinstance(delta, TextDelta):
        return not (delta.text or delta.logprobs)
    return not delta.text
