"""Tools and tool-call history rendered through real chat templates: the Ministral-3 stand-in's (a mirror of
the real one) and the Qwen3 stand-in's (Hermes tags)."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidRequestError
from services.common.generation import ChatTurn, Tool, ToolCall, ToolChoice, ToolChoiceMode
from services.common.tokenizers import load_tokenizer
from services.text_engine.engine.output import parser_for
from services.text_engine.engine.prompt import render_prompt, template_message
from services.text_engine.engine.types import GenerationRequest

MINISTRAL = "models/tiny/ministral-3-tiny"
QWEN3 = "models/tiny/qwen3-tiny"
WEATHER = Tool("get_weather", "Current weather", '{"type": "object", "properties": {"city": {"type": "string"}}}')
HISTORY = (
    ChatTurn("user", "Weather in Paris?"),
    ChatTurn("assistant", "", tool_calls=(ToolCall("abcdefgh1", "get_weather", '{"city": "Paris"}'),)),
    ChatTurn("tool", "22 C", tool_call_id="abcdefgh1"),
)


@pytest.fixture(scope="module")
def ministral():
    tokenizer = load_tokenizer(MINISTRAL)
    return tokenizer, parser_for("auto", tokenizer, "auto")


def rendered(tokenizer, spec, request):
    return tokenizer.decode(render_prompt(tokenizer, request, spec), skip_special_tokens=False)


def test_ministral_prompt_shows_tools_calls_and_results(ministral):
    tokenizer, spec = ministral
    text = rendered(tokenizer, spec, GenerationRequest("r", HISTORY, tools=(WEATHER,)))
    assert (
        '[AVAILABLE_TOOLS][{"type": "function", "function": {"name": "get_weather", "description": "Current '
        'weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}][/AVAILABLE_TOOLS]'
        "[INST]Weather in Paris?[/INST]"
    ) in text
    assert text.endswith(
        '[INST]Weather in Paris?[/INST][TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}</s>'
        "[TOOL_RESULTS]22 C[/TOOL_RESULTS]"
    )
    ids = render_prompt(tokenizer, GenerationRequest("r", HISTORY, tools=(WEATHER,)), spec)
    # The markers are the special tokens, not their spelling.
    for marker in ("[AVAILABLE_TOOLS]", "[TOOL_CALLS]", "[ARGS]", "[TOOL_RESULTS]"):
        assert tokenizer.convert_tokens_to_ids(marker) in ids


def test_tools_stay_in_the_prompt_with_tool_choice_none_and_a_tool_without_parameters_takes_any_object(ministral):
    tokenizer, spec = ministral
    request = GenerationRequest("r", HISTORY[:1], tools=(Tool("ping"),), tool_choice=ToolChoice(ToolChoiceMode.NONE))
    text = rendered(tokenizer, spec, request)
    assert (
        '[AVAILABLE_TOOLS][{"type": "function", "function": {"name": "ping", "parameters": {"type": "object", '
        '"properties": {}}}}][/AVAILABLE_TOOLS]' in text
    )
    assert "[AVAILABLE_TOOLS]" not in rendered(tokenizer, spec, GenerationRequest("r", HISTORY[:1]))


def test_parallel_calls_and_malformed_history_arguments_render_as_the_model_made_them(ministral):
    tokenizer, spec = ministral
    calls = (ToolCall("abcdefgh1", "get_weather", '{"city": "Paris"}'), ToolCall("abcdefgh2", "get_weather", "{oops"))
    history = (
        HISTORY[0],
        ChatTurn("assistant", "Checking.", tool_calls=calls),
        ChatTurn("tool", "22 C", tool_call_id="abcdefgh1"),
        ChatTurn("tool", "error", tool_call_id="abcdefgh2"),
    )
    text = rendered(tokenizer, spec, GenerationRequest("r", history, tools=(WEATHER,)))
    assert text.endswith(
        'Checking.[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_weather[ARGS]{oops</s>'
        "[TOOL_RESULTS]22 C[/TOOL_RESULTS][TOOL_RESULTS]error[/TOOL_RESULTS]"
    )


def test_history_messages_have_the_shape_hugging_face_templates_take(ministral):
    _, spec = ministral
    assistant, tool = (template_message(t, spec, {"abcdefgh1": "get_weather"}) for t in HISTORY[1:])
    assert assistant == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "abcdefgh1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
        ],
    }
    # A tool result without a name gets the name of the call it answers.
    assert tool == {"role": "tool", "content": "22 C", "tool_call_id": "abcdefgh1", "name": "get_weather"}


def test_a_conversation_the_template_refuses_is_an_invalid_request(ministral):
    tokenizer, spec = ministral
    with pytest.raises(InvalidRequestError, match="alternate") as error:
        render_prompt(tokenizer, GenerationRequest("r", (HISTORY[0], HISTORY[0]), tools=(WEATHER,)), spec)
    assert error.value.param == "messages"
    with pytest.raises(InvalidRequestError) as error:
        render_prompt(tokenizer, GenerationRequest("r", HISTORY[:1], tools=(Tool("f", parameters="[1]"),)), spec)
    assert error.value.param == "tools"


def test_qwen3_prompt_shows_hermes_tools_calls_and_results():
    tokenizer = load_tokenizer(QWEN3)
    spec = parser_for("auto", tokenizer, "auto")
    assert spec.tools == "hermes"
    text = rendered(tokenizer, spec, GenerationRequest("r", HISTORY, tools=(WEATHER,)))
    assert '{"type": "function", "function": {"name": "get_weather", "description": "Current weather", ' in text
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in text
    assert "<tool_response>\n22 C\n</tool_response>" in text
