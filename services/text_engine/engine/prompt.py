"""The prompt: a conversation rendered through the model's own chat template into token ids.

The engine owns the template, so clients never see model formats. An earlier assistant answer's reasoning
goes back to the template the way that template takes thinking (see `ParserSpec.thinking_in_content_chunks`):
as a `thinking` content chunk before the answer text (Mistral), or as the message's `reasoning_content`
key (`<think>` templates such as Qwen3's).

Tools go to the template as `tools=[{"type": "function", "function": {name, description, parameters}}]`,
also when tool_choice is `none` (vLLM's default, without --exclude-tools-when-tool-choice-none: the model
still knows the tools, it is just not asked to call them and its calls are not read). Earlier tool calls
travel the way Hugging Face chat templates take them (vLLM does the same): an assistant message's
`tool_calls` with `arguments` as a dict (Qwen's templates `tojson` it; Mistral's take a dict or a string),
and `tool` messages with `tool_call_id` and `name`.

A message with content parts (native vision) goes to the template as Hugging Face chat templates take
multimodal content: a list of `{"type": "text", "text": ...}` and `{"type": "image"}` in the order sent; the
template writes its placeholder per image (`[IMG]`, `<|vision_start|><|image_pad|><|vision_end|>`), which
admission expands with the image's own tokens (images.py). Parts without an image are joined into one text
(by newlines, as vLLM joins text parts), so text-only templates keep their string content.

A raw prompt (legacy completions, `render_raw_prompt`) skips the template: text is tokenized as vLLM's
completions endpoint tokenizes it (the tokenizer's defaults: its BOS only where it adds one by default, special
tokens written in the text read as such), token ids are taken as given. A `suffix` asks for fill-in-the-middle
in the prefix-suffix-middle order, with the tokenizer's FIM tokens (`fim_tokens`): a tokenizer without them
refuses it, since the model was never taught to fill a middle.
"""

from __future__ import annotations

import json

from services.common.errors import InvalidRequestError
from services.common.generation import ChatTurn, ImageBytes, RawPrompt, TextPart, Tool, ToolCall, ToolChoiceMode

from .output import ParserSpec
from .output.parsers import special_token_id
from .tools.validation import parameters_schema
from .types import GenerationRequest

_ROLE_ALIASES = {"developer": "system"}


def template_message(turn: ChatTurn, parser: ParserSpec, call_names: dict[str, str] | None = None) -> dict:
    """One message as chat templates expect it; `call_names` (earlier calls' id -> function name) names a
    tool result whose turn does not."""
    message: dict = {"role": _ROLE_ALIASES.get(turn.role, turn.role), "content": content_of(turn)}
    if turn.role == "assistant" and turn.reasoning:
        if parser.thinking_in_content_chunks:
            message["content"] = [
                {"type": "thinking", "thinking": turn.reasoning},
                {"type": "text", "text": turn.content},
            ]
        else:
            message["reasoning_content"] = turn.reasoning
    if turn.role == "assistant" and turn.tool_calls:
        message["tool_calls"] = [template_tool_call(call) for call in turn.tool_calls]
    if turn.role == "tool":
        message["tool_call_id"] = turn.tool_call_id
        name = turn.name or (call_names or {}).get(turn.tool_call_id, "")
        if name:
            message["name"] = name
    return message


def content_of(turn: ChatTurn) -> str | list[dict]:
    """The message's content: its text, or its parts as content chunks when it has an image."""
    if not turn.parts:
        return turn.content
    if not turn.images:
        return "\n".join(part.text for part in turn.parts if isinstance(part, TextPart))
    return [
        {"type": "image"} if isinstance(part, ImageBytes) else {"type": "text", "text": part.text}
        for part in turn.parts
    ]


def template_tool_call(call: ToolCall) -> dict:
    """An earlier call; its arguments as a dict when they are a JSON object, else the text as it was (a
    malformed call the model made stays what it made)."""
    try:
        arguments = json.loads(call.arguments) if call.arguments else {}
    except ValueError:
        arguments = call.arguments
    if not isinstance(arguments, dict):
        arguments = call.arguments
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": arguments}}


def template_tool(tool: Tool) -> dict:
    """A tool as chat templates take it (OpenAI's shape, parameters as a dict)."""
    function: dict = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    function["parameters"] = parameters_schema(tool)
    return {"type": "function", "function": function}


def render_prompt(tokenizer, request: GenerationRequest, parser: ParserSpec = ParserSpec("none")) -> list[int]:
    """Apply the model's chat template; a conversation the template refuses is a 400 that says why."""
    if not request.messages:
        raise InvalidRequestError("messages must not be empty", param="messages")
    call_names = {call.id: call.name for turn in request.messages for call in turn.tool_calls}
    messages = [template_message(m, parser, call_names) for m in request.messages]
    extra = {"tools": [template_tool(tool) for tool in request.tools]} if request.tools else {}
    try:
        ids = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False, **extra
        )
    except Exception as exc:  # noqa: BLE001 - templates raise jinja's own exceptions for bad conversations
        raise InvalidRequestError(
            f"The model's chat template rejected these messages: {exc}", param="messages"
        ) from exc
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return list(ids)


# Fill-in-the-middle tokens (prefix, suffix, middle) by family, in the order they are looked for.
FIM_STYLES = (
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),  # StarCoder, SmolLM2
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),  # Qwen2.5 and later
)


def fim_tokens(tokenizer) -> tuple[str, str, str] | None:
    """The tokenizer's FIM tokens (prefix, suffix, middle), when all three are single tokens of its vocabulary."""
    for style in FIM_STYLES:
        if all(special_token_id(tokenizer, token) is not None for token in style):
            return style
    return None


def render_raw_prompt(tokenizer, request: GenerationRequest, vocab_size: int, model: str) -> list[int]:
    """The token ids of a raw prompt (no chat template); a request that mixes it with chat-only fields, a token
    id outside the vocabulary or a suffix for a model without FIM tokens is a 400 that says why."""
    prompt = request.prompt
    assert prompt is not None
    _refuse_chat_fields(request)
    if prompt.text and prompt.token_ids:
        raise InvalidRequestError("prompt: give its text or its token ids, not both", param="prompt")
    bad = next((i for i in prompt.token_ids if not 0 <= i < vocab_size), None)
    if bad is not None:
        raise InvalidRequestError(
            f"prompt: token id {bad} is not in this model's vocabulary (0..{vocab_size - 1})", param="prompt"
        )
    ids = _fim(tokenizer, prompt, model) if prompt.suffix else _tokens(tokenizer, prompt)
    if not ids:
        raise InvalidRequestError("prompt must not be empty", param="prompt")
    return ids


def _refuse_chat_fields(request: GenerationRequest) -> None:
    """A raw prompt is not a conversation: nothing in it renders tools or reads calls back."""
    if request.messages:
        raise InvalidRequestError("give either messages or a prompt, not both", param="messages")
    if request.tools:
        raise InvalidRequestError("tools need messages (a chat template renders them), not a raw prompt", param="tools")
    if request.tool_choice.mode is not ToolChoiceMode.AUTO or request.tool_choice.name:
        raise InvalidRequestError("tool_choice needs tools, which a raw prompt cannot have", param="tool_choice")


def _tokens(tokenizer, prompt: RawPrompt) -> list[int]:
    if prompt.token_ids:
        return list(prompt.token_ids)
    return list(tokenizer(prompt.text)["input_ids"])


def _fim(tokenizer, prompt: RawPrompt, model: str) -> list[int]:
    """`<fim_prefix>{prompt}<fim_suffix>{suffix}<fim_middle>`: from text, the whole of it tokenized as a text
    prompt is (the same BOS rule; the FIM tokens are special tokens, so nothing merges across them); around
    token ids, the FIM tokens' ids and the suffix's tokens (no special tokens added)."""
    style = fim_tokens(tokenizer)
    if style is None:
        raise InvalidRequestError(
            f"model {model} has no fill-in-the-middle tokens; suffix is not supported", param="suffix"
        )
    prefix, suffix, middle = style
    if not prompt.token_ids:
        return list(tokenizer(f"{prefix}{prompt.text}{suffix}{prompt.suffix}{middle}")["input_ids"])
    fim = [special_token_id(tokenizer, token) for token in style]
    suffix_ids = tokenizer(prompt.suffix, add_special_tokens=False)["input_ids"]
    return [fim[0], *prompt.token_ids, fim[1], *suffix_ids, fim[2]]
