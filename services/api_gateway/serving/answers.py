"""One choice of a non-streamed answer, assembled from its engine events: text, reasoning, tool calls with
their full arguments, and the answer tokens' logprobs."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.common.config import ReasoningField
from services.common.generation import Finished, GenerationEvent, ReasoningDelta, TextDelta, TokenLogprob, ToolCallDelta

from . import chunks


@dataclass
class _Call:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class ChoiceAnswer:
    """What one engine call said, until its `Finished`."""

    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: dict[int, _Call] = field(default_factory=dict)  # the call's index in the answer -> the call
    logprobs: list[TokenLogprob] = field(default_factory=list)

    def add(self, event: GenerationEvent) -> None:
        """Take one output event (not the Finished)."""
        if isinstance(event, TextDelta):
            self.text.append(event.text)
            self.logprobs.extend(event.logprobs)
        elif isinstance(event, ReasoningDelta):
            self.reasoning.append(event.text)
        elif isinstance(event, ToolCallDelta):
            call = self.calls.setdefault(event.index, _Call())
            call.id, call.name = event.id or call.id, event.name or call.name
            call.arguments.append(event.arguments)

    def choice(
        self,
        index: int,
        finished: Finished,
        *,
        include_reasoning: bool,
        reasoning_field: ReasoningField,
        logprobs: bool,
    ) -> dict:
        """`choices[index]` of the `chat.completion`."""
        tool_calls = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": "".join(c.arguments)}}
            for _, c in sorted(self.calls.items())
        ]
        thinking = "".join(self.reasoning) if include_reasoning else None
        return {
            "index": index,
            "message": chunks.message("".join(self.text), thinking, reasoning_field, tool_calls),
            "finish_reason": finished.reason,
            "logprobs": chunks.choice_logprobs(self.logprobs) if logprobs else None,
        }
