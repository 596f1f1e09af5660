"""The text engine's output pipeline: token ids in, tagged events out.

    token ids -> MarkerDetokenizer (text, and the special tokens a parser needs kept as markers)
              -> OutputParser (reasoning vs answer; tool calls plug in here later)
              -> StopStringMatcher (answer text only)
              -> ReasoningDelta / TextDelta events

No step knows the others: `OutputPipeline` (pipeline.py) wires them per request; `parser_for` (parsers.py)
chooses the model's parser once at load.
"""

from .detokenizer import Marker, MarkerDetokenizer, Piece
from .parsers import Channel, OutputParser, ParserSpec, Segment, parser_for
from .pipeline import OutputPipeline

__all__ = ["Channel", "Marker", "MarkerDetokenizer", "OutputParser", "OutputPipeline", "ParserSpec", "Piece",
           "Segment", "parser_for"]
