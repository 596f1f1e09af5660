"""The one internal request every protocol is translated into: a conversation, its sampling and its output options.

Chat Completions, Responses, Anthropic Messages and legacy Completions each parse their own body (schemas/) and
translate it into a `Conversation` (protocols/); everything after that (the image policy, captions, admission,
engine calls, metrics, errors) is the request core's (core.py), written once. A message keeps its text and images
as ordered `parts`, so "compare this [image] with this [image]" keeps its order whatever protocol carried it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from services.common.generation import Detail, RawPrompt, SamplingParams, ToolCall

from ..clients.text_engine import OutputOptions

Role = Literal["system", "developer", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ImageInput:
    """An image as the client sent it: an http(s) or data: URL, its detail, and `param`, where it is in the
    client's own request (named in a 400 about it: `messages[0].content[1].image_url`, `input[2].content[0]`...)."""

    url: str
    detail: Detail = Detail.AUTO
    param: str = ""


Part = str | ImageInput


@dataclass(frozen=True)
class Message:
    """One message: its text and images in the order sent, and the tool data and reasoning it carries.

    An assistant message may carry the reasoning and the tool calls its answer came with; a tool message answers
    the call `tool_call_id` (and may name its function). Images may be in user and tool messages (a tool's result
    may be a screenshot)."""

    role: Role
    parts: tuple[Part, ...] = ()
    reasoning: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""
    name: str = ""

    def text(self) -> str:
        """The text parts joined by newlines (as vLLM joins them); images are the vision layer's."""
        return "\n".join(part for part in self.parts if isinstance(part, str))

    def images(self) -> list[ImageInput]:
        """The image parts, in order."""
        return [part for part in self.parts if isinstance(part, ImageInput)]


@dataclass(frozen=True)
class Conversation:
    """A protocol-neutral request: what to generate from, how to sample, and what the answer may be.

    What to generate from is the `messages` (the engine applies the chat template), or a `prompt` sent as it is
    (legacy completions; `messages` is then empty). `messages_param` is the client's name for the conversation
    (`messages`, `input`), for errors that name it; `user` identifies an end user's session (routing affinity),
    when the protocol carries one."""

    model: str
    messages: tuple[Message, ...]
    params: SamplingParams = field(default_factory=SamplingParams)
    options: OutputOptions = field(default_factory=OutputOptions)
    n: int = 1
    user: str | None = None
    messages_param: str = "messages"
    prompt: RawPrompt | None = None
