"""Captions land where each image was, and users can see them: `proxy_vision` at the top level of a non-streamed
answer and in exactly one chunk of a stream (with gateway.show_captions, the default); none with it off."""

from __future__ import annotations

import hashlib
import json

import pytest

from services.api_gateway.schemas.chat import ChatCompletionRequest
from services.common.config import parse_models_config

from .fakes import TEXT, VISION, FakeTextEngine, FakeVision, hello_script, make_vision_state
from .test_image_policy import BLUE, RED, image_part

RED_HASH, BLUE_HASH = hashlib.sha256(RED).hexdigest(), hashlib.sha256(BLUE).hexdigest()


def config(**gateway):
    models = [
        {"name": TEXT, "hf_id": "x/text", "endpoint": "127.0.0.1:1"},
        {"name": VISION, "hf_id": "x/vision", "endpoint": "127.0.0.1:3", "capabilities": {"vision_mode": "proxy"}},
    ]
    return parse_models_config({"models": models, "gateway": gateway})


def conversation(**fields) -> ChatCompletionRequest:
    """Two user messages with images: 'compare this [red] with this [blue]', then a lone image after a question."""
    return ChatCompletionRequest.model_validate(
        {
            "model": TEXT,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "compare this"},
                        image_part(RED),
                        {"type": "text", "text": "with this"},
                        image_part(BLUE, "high", "image/jpeg"),
                        {"type": "text", "text": "Which is warmer?"},
                    ],
                },
                {"role": "assistant", "content": "The first."},
                {"role": "user", "content": [{"type": "text", "text": "And this one?"}, image_part(RED)]},
            ],
            **fields,
        }
    )


async def state_with(vision: FakeVision, **gateway):
    engine = FakeTextEngine(TEXT, hello_script())
    state = await make_vision_state(config(**gateway), {TEXT: engine}, vision)
    return state, engine


def events(transcript: str) -> list[dict]:
    return [json.loads(line[6:]) for line in transcript.splitlines() if line.startswith("data: {")]


VISION_CAPTIONS = {RED_HASH: "a red square", BLUE_HASH: "a blue square"}


async def test_each_image_is_replaced_in_place_by_its_caption():
    state, engine = await state_with(FakeVision(VISION_CAPTIONS))
    await state.chat.complete(await state.chat.plan(conversation()), "rid")
    system, first, assistant, second = engine.calls[0].messages
    assert first.content == (
        "compare this\n\nImage 1: a red square\n\nwith this\n\nImage 2: a blue square\n\nWhich is warmer?"
    )
    assert second.content == "And this one?\n\nImage 1: a red square"  # numbered per message
    assert (system.content, assistant.content) == ("Be brief.", "The first.")


@pytest.mark.parametrize(
    "content, expected",
    [
        (
            [image_part(RED), image_part(BLUE), {"type": "text", "text": "Which is warmer?"}],
            "Image 1: a red square\nImage 2: a blue square\n\nWhich is warmer?",
        ),
        (
            [{"type": "text", "text": "Look:"}, {"type": "text", "text": "closely"}, image_part(RED)],
            "Look:\nclosely\n\nImage 1: a red square",
        ),
        ([image_part(BLUE)], "Image 1: a blue square"),
    ],
)
async def test_captions_between_text_parts_keep_the_users_order(content, expected):
    state, engine = await state_with(FakeVision(VISION_CAPTIONS))
    request = ChatCompletionRequest.model_validate({"model": TEXT, "messages": [{"role": "user", "content": content}]})
    await state.chat.complete(await state.chat.plan(request), "rid")
    assert engine.calls[0].messages[0].content == expected


async def test_a_non_streamed_answer_carries_proxy_vision_with_every_caption():
    vision = FakeVision(VISION_CAPTIONS, cached={RED_HASH})
    state, _ = await state_with(vision)
    body = await state.chat.complete(await state.chat.plan(conversation()), "rid")
    assert body["proxy_vision"] == {
        "images": [
            {"message": 1, "index": 0, "caption": "a red square", "cached": True, "ms": 0.0},
            {"message": 1, "index": 1, "caption": "a blue square", "cached": False, "ms": 12.5},
            {"message": 3, "index": 0, "caption": "a red square", "cached": True, "ms": 0.0},
        ]
    }
    assert list(body)[-1] == "proxy_vision" and body["choices"][0]["message"]["content"] == "Hello wörld"


async def test_a_stream_carries_proxy_vision_in_exactly_one_chunk_with_a_choice():
    state, _ = await state_with(FakeVision(VISION_CAPTIONS))
    plan = await state.chat.plan(conversation(stream=True, stream_options={"include_usage": True}))
    transcript = "".join([frame async for frame in await state.chat.stream(plan, "rid")])
    chunks = events(transcript)
    carrying = [i for i, c in enumerate(chunks) if "proxy_vision" in c]
    assert len(carrying) == 1
    annotated = chunks[carrying[0]]
    assert carrying[0] == 1  # right after the role chunk: the captions exist before the answer starts
    assert annotated["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": None}]
    assert annotated["proxy_vision"]["images"][1] == {
        "message": 1,
        "index": 1,
        "caption": "a blue square",
        "cached": False,
        "ms": 12.5,
    }
    assert annotated["id"] == chunks[0]["id"] and annotated["object"] == "chat.completion.chunk"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello wörld" and transcript.endswith("data: [DONE]\n\n")


async def test_n_choices_still_get_one_proxy_vision_chunk():
    engine = FakeTextEngine(TEXT, scripts=[hello_script(), hello_script()])
    state = await make_vision_state(config(), {TEXT: engine}, FakeVision(VISION_CAPTIONS))
    plan = await state.chat.plan(conversation(stream=True, n=2))
    chunks = events("".join([frame async for frame in await state.chat.stream(plan, "rid")]))
    assert sum("proxy_vision" in c for c in chunks) == 1
    assert {c["choices"][0]["index"] for c in chunks if c["choices"][0].get("finish_reason")} == {0, 1}


async def test_show_captions_off_means_no_field_anywhere():
    state, engine = await state_with(FakeVision(VISION_CAPTIONS), show_captions=False)
    body = await state.chat.complete(await state.chat.plan(conversation()), "rid")
    assert "proxy_vision" not in body and "Image 1: a red square" in engine.calls[0].messages[1].content
    plan = await state.chat.plan(conversation(stream=True))
    transcript = "".join([frame async for frame in await state.chat.stream(plan, "rid")])
    assert "proxy_vision" not in transcript and all(
        c["choices"][0]["delta"] != {} or c["choices"][0]["finish_reason"] for c in events(transcript)
    )


async def test_text_only_answers_carry_no_proxy_vision():
    state, _ = await state_with(FakeVision(VISION_CAPTIONS))
    request = ChatCompletionRequest(model=TEXT, messages=[{"role": "user", "content": "hi"}])
    assert "proxy_vision" not in await state.chat.complete(await state.chat.plan(request), "rid")
