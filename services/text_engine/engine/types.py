"""The engine's request: one generation, built from the shared domain types (services/common/generation.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.common.generation import ChatTurn, RawPrompt, ResponseFormat, SamplingParams, Tool, ToolChoice


@dataclass(frozen=True)
class GenerationRequest:
    """A completion to generate: of a chat (`messages`), or of a raw prompt (`prompt`, `messages` empty: no chat
    template, and the output is not parsed for reasoning or tool calls)."""

    request_id: str
    messages: tuple[ChatTurn, ...]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = field(default_factory=ToolChoice)
    parallel_tool_calls: bool = True
    response_format: ResponseFormat = field(default_factory=ResponseFormat)
    prompt: RawPrompt | None = None

    @property
    def has_images(self) -> bool:
        """Whether any message carries an image part."""
        return any(turn.images for turn in self.messages)
