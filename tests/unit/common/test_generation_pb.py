"""The generation contract's protobuf mapping, both ways: whatever one side writes, the other reads back equal."""

from __future__ import annotations

from dataclasses import fields

import pytest

from services.common.generation import (
    Accepted,
    ChatTurn,
    Detail,
    Finished,
    FinishReason,
    ImageBytes,
    RawPrompt,
    ReasoningDelta,
    ResponseFormat,
    ResponseFormatType,
    SamplingParams,
    TextDelta,
    TextPart,
    TokenLogprob,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolChoiceMode,
    TopLogprob,
)
from services.common.generation_pb import (
    event_from_pb,
    event_to_pb,
    image_from_pb,
    image_to_pb,
    raw_prompt_from_pb,
    raw_prompt_to_pb,
    response_format_from_pb,
    response_format_to_pb,
    sampling_from_pb,
    sampling_to_pb,
    tool_choice_from_pb,
    tool_choice_to_pb,
    tool_from_pb,
    tool_to_pb,
    turn_from_pb,
    turn_to_pb,
)
from services.common.pb.proxyvision.v1 import common_pb2, text_engine_pb2 as pb

EVERY_SAMPLING_FIELD = SamplingParams(
    max_tokens=9,
    temperature=0.5,
    top_p=0.75,
    top_k=3,
    seed=-7,
    stop=("a", "b"),
    presence_penalty=0.25,
    frequency_penalty=-0.5,
    repetition_penalty=1.25,
    min_p=0.125,
    min_tokens=2,
    logit_bias={5: -100.0, 6: 2.5},
    stop_token_ids=(1, 2),
    ignore_eos=True,
    top_logprobs=4,
)


def test_every_sampling_parameter_round_trips_and_unset_ones_stay_unset():
    assert all(getattr(EVERY_SAMPLING_FIELD, f.name) not in (None, (), {}) for f in fields(SamplingParams))
    assert sampling_from_pb(sampling_to_pb(EVERY_SAMPLING_FIELD)) == EVERY_SAMPLING_FIELD
    assert sampling_from_pb(sampling_to_pb(SamplingParams())) == SamplingParams()
    assert not sampling_to_pb(SamplingParams()).HasField("temperature")  # the model's default, not 0


@pytest.mark.parametrize("detail", list(Detail))
def test_a_turn_with_text_images_and_tool_calls_round_trips(detail):
    turn = ChatTurn(
        "assistant",
        "text",
        "thinking",
        (ToolCall("c1", "f", '{"x": 1}'),),
        "",
        "bob",
        (TextPart("look:"), ImageBytes(b"\x89PNG", "image/png", detail, "ab" * 32), TextPart("done")),
    )
    assert turn_from_pb(turn_to_pb(turn)) == turn


def test_an_image_without_a_detail_is_auto():
    assert image_from_pb(common_pb2.ImageInput(data=b"x")).detail is Detail.AUTO
    assert image_from_pb(image_to_pb(ImageBytes(b"x", "image/png", Detail.LOW))).detail is Detail.LOW


def test_tools_choices_formats_and_raw_prompts_round_trip():
    tool = Tool("get_weather", "Weather", '{"type": "object"}', True)
    assert tool_from_pb(tool_to_pb(tool)) == tool
    for mode in ToolChoiceMode:
        choice = ToolChoice(mode, "get_weather" if mode is ToolChoiceMode.NAMED else "")
        assert tool_choice_from_pb(tool_choice_to_pb(choice)) == choice
    for kind in ResponseFormatType:
        fmt = ResponseFormat(kind, '{"type": "object"}' if kind is ResponseFormatType.JSON_SCHEMA else "", "s")
        assert response_format_from_pb(response_format_to_pb(fmt)) == fmt
    prompt = RawPrompt("def f(", (1, 2, 3), "return x")
    assert raw_prompt_from_pb(raw_prompt_to_pb(prompt)) == prompt
    # Unset messages read as the defaults: tool_choice auto, a text answer.
    assert tool_choice_from_pb(pb.ToolChoice()) == ToolChoice()
    assert response_format_from_pb(pb.ResponseFormat()) == ResponseFormat()


@pytest.mark.parametrize(
    "event",
    [
        Accepted(12),
        TextDelta("hi", (TokenLogprob("hi", -0.5, b"hi", (TopLogprob("ho", -1.5, b"ho"),)),)),
        ReasoningDelta("hmm"),
        ToolCallDelta(0, "c1", "f", '{"x"'),
        *(Finished(reason, 3, 4, "boom" if reason is FinishReason.ERROR else "", 1, "STOP") for reason in FinishReason),
    ],
)
def test_every_event_round_trips(event):
    assert event_from_pb(event_to_pb(event)) == event


def test_unknown_kinds_and_reasons_from_a_newer_engine():
    assert event_from_pb(pb.GenerateResponse()) is None
    finished = event_from_pb(pb.GenerateResponse(finished=pb.Finished(finish_reason=99)))
    assert finished.reason is FinishReason.ERROR
