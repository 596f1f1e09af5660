"""The text engine's output pipeline: token ids in, tagged events out.

    token ids -> MarkerDetokenizer (text, and the special tokens the parsers need kept as markers)
              -> OutputParser (reasoning vs answer)
              -> ToolCallParser (tool calls out of the answer only, when the request can call tools;
                 engine/tools/parsers.py)
              -> StopStringMatcher (answer text only, never reasoning or tool-call arguments)
              -> ReasoningDelta / TextDelta / ToolCallDelta events

No step knows the others: `OutputPipeline` (pipeline.py; `OutputPipeline.for_request`) wires them per
request; `parser_for` (parsers.py) chooses the model's reasoning and tool-call formats once at load.
"""

from .detokenizer import Marker, MarkerDetokenizer, Piece
from .parsers import Channel, OutputParser, ParserSpec, Segment, parser_for
from .pipeline import OutputDelta, OutputPipeline, merge_deltas

__all__ = [
    "Channel",
    "Marker",
    "MarkerDetokenizer",
    "OutputDelta",
    "OutputParser",
    "OutputPipeline",
    "ParserSpec",
    "Piece",
    "Segment",
    "merge_deltas",
    "parser_for",
]
