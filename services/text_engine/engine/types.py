"""Domain types of one generation request and of the events it produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


@dataclass(frozen=True)
class ChatTurn:
    """One chat message, text only; an assistant turn may carry the reasoning its answer came with."""

    role: str
    content: str
    reasoning: str = ""


@dataclass(frozen=True)
class SamplingRequest:
    """Sampling parameters as the client sent them; None means "use the model's default"."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


@dataclass(frozen=True)
class GenerationRequest:
    """A chat completion to generate."""

    request_id: str
    messages: tuple[ChatTurn, ...]
    sampling: SamplingRequest = field(default_factory=SamplingRequest)


class FinishReason(str, Enum):
    """Why a generation ended."""

    STOP = "stop"
    LENGTH = "length"
    CANCELLED = "cancelled"
    ERROR = "error"


@dataclass(frozen=True)
class Accepted:
    """The first event of every request: it passed admission and waits for (or has) a batch slot."""

    prompt_tokens: int


@dataclass(frozen=True)
class TextDelta:
    """New answer text of one request (stop strings apply to it)."""

    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    """New reasoning text of one request (a reasoning model's thinking, markers removed)."""

    text: str


@dataclass(frozen=True)
class Finished:
    """The last event of one request."""

    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    error_message: str = ""
    reasoning_tokens: int = 0  # of completion_tokens


GenerationEvent = Accepted | TextDelta | ReasoningDelta | Finished
