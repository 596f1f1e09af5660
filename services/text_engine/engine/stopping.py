"""Stop strings, matched on detokenized text and never included in the output.

A stop string may arrive split over several deltas ("Hel" + "lo"), so text that could be the start of a
stop string is held back until the next delta tells whether it is one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StopResult:
    """What to emit now, and whether a stop string matched (`stop`: which one)."""

    text: str
    stopped: bool
    stop: str = ""


class StopStringMatcher:
    """Per-request stop-string state."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""

    def push(self, text: str) -> StopResult:
        """Feed new text; return the part that is safe to emit."""
        if not self._stops:
            return StopResult(text, False)
        buffer = self._held + text
        first = min(((buffer.find(s), s) for s in self._stops if s in buffer), default=None)
        if first is not None:
            self._held = ""
            return StopResult(buffer[: first[0]], True, first[1])
        keep = self._longest_partial_suffix(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return StopResult(buffer[: len(buffer) - keep], False)

    def flush(self) -> str:
        """At the end of generation, the held-back text was not a stop string after all."""
        held, self._held = self._held, ""
        return held

    def _longest_partial_suffix(self, buffer: str) -> int:
        best = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(buffer)), best, -1):
                if buffer.endswith(stop[:length]):
                    best = length
                    break
        return best
