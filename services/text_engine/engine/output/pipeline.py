"""One request's output pipeline: token ids in, reasoning and answer deltas out."""

from __future__ import annotations

from ..stopping import StopStringMatcher
from ..types import ReasoningDelta, TextDelta
from .detokenizer import Marker, MarkerDetokenizer
from .parsers import Channel, OutputParser, Segment

OutputDelta = TextDelta | ReasoningDelta


class OutputPipeline:
    """Detokenizer -> parser -> stop strings (answer only) for one request.

    `push(token_id)` returns the deltas that token completes (consecutive deltas of one kind merged);
    once a stop string matched, `stopped` is True and later tokens are ignored. `reasoning_tokens` counts
    the tokens generated inside the reasoning, its start and end markers included."""

    def __init__(self, detokenizer: MarkerDetokenizer, parser: OutputParser, stops: StopStringMatcher) -> None:
        self._detok, self._parser, self._stops = detokenizer, parser, stops
        self.reasoning_tokens = 0
        self.stopped = False

    def push(self, token_id: int) -> list[OutputDelta]:
        """Feed one generated token."""
        if self.stopped:
            return []
        was_reasoning = self._parser.in_reasoning
        segments = [s for piece in self._detok.push(token_id) for s in self._parser.feed(piece)]
        if was_reasoning or self._parser.in_reasoning:
            self.reasoning_tokens += 1
        return self._emit(segments)

    def finish(self) -> list[OutputDelta]:
        """End of generation: release what the detokenizer, the parser and the stop matcher still hold."""
        if self.stopped:
            return []
        segments = [s for piece in self._detok.flush() for s in self._parser.feed(piece)] + self._parser.finish()
        out = self._emit(segments)
        if not self.stopped:
            out = merge_deltas(out + [TextDelta(self._stops.flush())])
        return out

    def _emit(self, segments: list[Segment]) -> list[OutputDelta]:
        out: list[OutputDelta] = []
        for segment in segments:
            if isinstance(segment.piece, Marker) or not segment.piece:
                continue  # a marker no parser consumed: a special token, never shown as text
            if segment.channel is Channel.REASONING:
                # Answer text held back as a possible stop-string start goes out before the reasoning.
                out += [TextDelta(self._stops.flush()), ReasoningDelta(segment.piece)]
                continue
            result = self._stops.push(segment.piece)
            out.append(TextDelta(result.text))
            if result.stopped:
                self.stopped = True
                break
        return merge_deltas(out)


def merge_deltas(deltas: list[OutputDelta]) -> list[OutputDelta]:
    """Drop empty deltas and join neighbours of the same kind (fewer messages, same text)."""
    out: list[OutputDelta] = []
    for delta in deltas:
        if not delta.text:
            continue
        if out and type(out[-1]) is type(delta):
            out[-1] = type(delta)(out[-1].text + delta.text)
        else:
            out.append(delta)
    return out
