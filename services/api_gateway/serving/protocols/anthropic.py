"""Anthropic Messages over the request core: the request as a `Conversation`, the core's events as a `message` or
a stream of Anthropic's named SSE events (anthropic_output.py).

Translation: the system prompt is a system message; a user turn's `tool_result` blocks are one tool message each
(in the turn's order, images kept: the proxy-vision layer captions them), its other blocks user messages; an
assistant turn's `thinking` is that turn's reasoning, its `tool_use` blocks its tool calls. `tool_choice` any is
"required", tool is "named"; `disable_parallel_tool_use` is `parallel_tool_calls: false`. A reasoning model may
think whatever `thinking` says; its thinking is returned only when `thinking` is enabled or adaptive.
"""

from __future__ import annotations

import json

from services.common.generation import (
    Detail,
    ResponseFormat,
    ResponseFormatType,
    SamplingParams,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
)

from ...clients.text_engine import OutputOptions
from ...schemas.anthropic import (
    CountTokensRequest,
    ImageBlock,
    InputMessage,
    MessagesRequest,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from .. import sse
from ..conversation import Conversation, ImageInput, Message, Part
from ..core import GenerationCore
from ..params import tool_spec, top_k
from .anthropic_output import content_blocks, message_frames, message_id, stop_reason
from .plan import ProtocolPlan


def _image(block: ImageBlock, param: str) -> ImageInput:
    return ImageInput(block.url, Detail.AUTO, param)


def _tool_message(block: ToolResultBlock, param: str, names: dict[str, str]) -> Message:
    """One tool result: its text and images in order; an error result says so first."""
    content = block.content
    if content is None:
        parts: tuple[Part, ...] = ()
    elif isinstance(content, str):
        parts = (content,)
    else:
        parts = tuple(
            b.text if isinstance(b, TextBlock) else _image(b, f"{param}.content[{k}].source")
            for k, b in enumerate(content)
        )
    if block.is_error:
        parts = ("Error:", *parts)
    return Message("tool", parts, tool_call_id=block.tool_use_id, name=names.get(block.tool_use_id, ""))


def turn_messages(turn: InputMessage, index: int, names: dict[str, str]) -> list[Message]:
    """One Anthropic turn as the core's messages (`names`: the tool name of every earlier tool_use id, updated)."""
    if isinstance(turn.content, str):
        return [Message(turn.role, (turn.content,))]
    if turn.role == "assistant":
        calls = tuple(ToolCall(b.id, b.name, json.dumps(b.input)) for b in turn.content if isinstance(b, ToolUseBlock))
        names.update((call.id, call.name) for call in calls)
        return [
            Message(
                "assistant",
                tuple(b.text for b in turn.content if isinstance(b, TextBlock)),
                "".join(b.thinking for b in turn.content if isinstance(b, ThinkingBlock)),
                tool_calls=calls,
            )
        ]
    messages: list[Message] = []
    pending: list[Part] = []  # the user's own blocks since the last tool result
    for j, block in enumerate(turn.content):
        param = f"messages[{index}].content[{j}]"
        if isinstance(block, ToolResultBlock):
            if pending:
                messages.append(Message("user", tuple(pending)))
                pending = []
            messages.append(_tool_message(block, param, names))
        elif isinstance(block, TextBlock):
            pending.append(block.text)
        elif isinstance(block, ImageBlock):
            pending.append(_image(block, f"{param}.source"))
    if pending or not messages:
        messages.append(Message("user", tuple(pending)))
    return messages


def output_options(request: CountTokensRequest) -> OutputOptions:
    """Tools, tool_choice and the output format for the engine."""
    tools = tuple(tool_spec(t.name, t.description, t.input_schema, t.strict) for t in request.tools or ())
    choice = request.tool_choice
    mode = ToolChoiceMode({"any": "required", "tool": "named"}.get(choice.type, choice.type) if choice else "auto")
    fmt = request.output_config.format if request.output_config else None
    return OutputOptions(
        tools=tools,
        tool_choice=ToolChoice(mode, (choice.name or "") if mode is ToolChoiceMode.NAMED else ""),
        parallel_tool_calls=False if choice and choice.disable_parallel_tool_use else None,
        response_format=ResponseFormat(ResponseFormatType.JSON_SCHEMA, json.dumps(fmt.schema_), "output")
        if fmt
        else ResponseFormat(),
    )


def generation_params(request: CountTokensRequest) -> SamplingParams:
    """The sampling parameters a Messages request sets (none for a count)."""
    if not isinstance(request, MessagesRequest):
        return SamplingParams()
    return SamplingParams(
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        top_k=top_k(request.top_k),
        stop=tuple(s for s in request.stop_sequences or () if s),
    )


def messages_conversation(request: CountTokensRequest) -> Conversation:
    """A validated Messages (or count_tokens) request as the core's conversation."""
    messages = [Message("system", (request.system_text,))] if request.system_text else []
    names: dict[str, str] = {}
    for index, turn in enumerate(request.messages):
        messages.extend(turn_messages(turn, index, names))
    metadata = getattr(request, "metadata", None)
    return Conversation(
        request.model,
        tuple(messages),
        generation_params(request),
        output_options(request),
        user=metadata.user_id if metadata else None,
    )


MessagesPlan = ProtocolPlan[MessagesRequest]


class AnthropicMessages:
    """`POST /v1/messages` and `POST /v1/messages/count_tokens` over the request core."""

    def __init__(self, core: GenerationCore) -> None:
        self.core = core

    async def plan(self, request: MessagesRequest, client_timeout: float | None = None) -> MessagesPlan:
        """The request planned by the core (every refusal before a response starts)."""
        return MessagesPlan(request, await self.core.plan(messages_conversation(request), client_timeout))

    async def complete(self, plan: MessagesPlan, request_id: str) -> dict:
        """A non-streamed `message` (with `proxy_vision` when its images were captioned)."""
        outcome = await self.core.complete(plan.core, request_id)
        finished = outcome.finished[0]
        reason, sequence = stop_reason(finished)
        return {
            "id": message_id(),
            "type": "message",
            "role": "assistant",
            "model": plan.request.model,
            "content": content_blocks(outcome.answers[0], plan.request.shows_thinking),
            "stop_reason": reason,
            "stop_sequence": sequence,
            "usage": {"input_tokens": finished.prompt_tokens, "output_tokens": finished.completion_tokens},
            **({"proxy_vision": outcome.proxy_vision} if outcome.proxy_vision is not None else {}),
        }

    async def stream(self, plan: MessagesPlan, request_id: str) -> sse.FrameStream:
        """Anthropic's SSE events. Text-only: first waits for the engine to accept the request (raising its
        refusal)."""
        live = await self.core.stream(plan.core, request_id)
        frames = message_frames(live, plan.request.model, plan.request.shows_thinking)
        return sse.FrameStream(frames, live)

    async def count_tokens(
        self, request: CountTokensRequest, request_id: str, client_timeout: float | None = None
    ) -> dict:
        """`{"input_tokens": n}`: what `usage.input_tokens` of the same request would say."""
        plan = await self.core.plan(messages_conversation(request), client_timeout)
        return {"input_tokens": await self.core.count_tokens(plan, request_id)}
