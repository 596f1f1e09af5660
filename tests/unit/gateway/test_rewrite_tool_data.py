"""The proxy-vision rewrite keeps tool data: a conversation with tools, tool calls and tool results whose
user message has an image comes out as text turns with every call, call id and name intact."""

from __future__ import annotations

from services.api_gateway.schemas.chat import ChatCompletionRequest
from services.api_gateway.serving.protocols.chat import chat_conversation
from services.api_gateway.serving.vision_rewrite import PendingImages
from services.api_gateway.serving.vision_status import VisionBackend
from services.common.captions import CaptionDone
from services.common.generation import Detail, ImageBytes, ToolCall

from .fakes import TEXT


class FakeVision:
    """Captions every image 'a red bicycle' and records the prompts it was given."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    async def describe(self, images, *, user_prompt, request_id, timeout):
        self.prompts.append(user_prompt)
        for index, _ in enumerate(images):
            yield CaptionDone(index, " a red bicycle ", "stop", 10, 4, False, 1.0)


async def test_captioned_conversation_keeps_tool_calls_ids_names_and_tool_text():
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "bike"}'}}
    request = ChatCompletionRequest.model_validate(
        {
            "model": TEXT,
            "tools": [{"type": "function", "function": {"name": "lookup"}}],
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    ],
                },
                {"role": "assistant", "content": None, "tool_calls": [call], "reasoning_content": "look it up"},
                {
                    "role": "tool",
                    "tool_call_id": "call_1",
                    "name": "lookup",
                    "content": [{"type": "text", "text": "a bicycle"}],
                },
            ],
        }
    )
    vision = FakeVision()
    image = ImageBytes(b"png", "image/png", Detail.AUTO, "hash")
    pending = PendingImages(chat_conversation(request).messages, {0: [image]}, vision, VisionBackend(None), 5.0)  # type: ignore[arg-type]
    user, assistant, tool = await pending.describe("rid")
    assert (user.role, user.content) == ("user", "What is this?\n\nImage 1: a red bicycle")
    assert (
        assistant.tool_calls == (ToolCall("call_1", "lookup", '{"q": "bike"}'),) and assistant.reasoning == "look it up"
    )
    assert (tool.role, tool.content, tool.tool_call_id, tool.name) == ("tool", "a bicycle", "call_1", "lookup")
    assert vision.prompts == ["What is this?"]
