"""Prompts with content parts (native vision): the real chat templates' image chunks, in order, and admission's
image handling (detail budgets, refusals naming the part) with the stand-ins' own tokenizers and processors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from transformers import AutoConfig

from services.common.config import ModelEntry
from services.common.errors import InvalidRequestError
from services.common.generation import ChatTurn, Detail, ImageBytes, TextPart
from services.common.multimodal import load_family
from services.common.multimodal.detail import LOW_DETAIL_TOKENS, image_token_budget
from services.common.tokenizers import load_tokenizer
from services.text_engine.engine.images import (
    encode_images,
    expand,
    refuse_images,
)
from services.text_engine.engine.prompt import content_of, render_prompt
from services.text_engine.engine.types import GenerationRequest
from tests.support.images import png

RED = png((200, 20, 20), (100, 60))


def request(*turns: ChatTurn) -> GenerationRequest:
    return GenerationRequest("r", turns)


def entry(mode: str = "native", max_image_tokens: int = 1280) -> ModelEntry:
    capabilities = {"vision_mode": mode}
    if mode == "native":
        capabilities["native_vision"] = {"max_image_tokens": max_image_tokens}
    return ModelEntry.model_validate({"name": "m", "local_path": "/nowhere", "capabilities": capabilities})


@pytest.fixture(scope="module")
def stand_ins(tiny_models):
    """kind -> (tokenizer, family) of the two native stand-ins (no weights loaded)."""
    out = {}
    for kind in ("text", "vision"):
        path = str(tiny_models[kind])
        tokenizer = load_tokenizer(path)
        out[kind] = (tokenizer, load_family(path, AutoConfig.from_pretrained(path), tokenizer))
    return out


def rendered(tokenizer, *turns: ChatTurn) -> str:
    return tokenizer.decode(render_prompt(tokenizer, request(*turns)))


def test_parts_become_template_chunks_in_order():
    turn = ChatTurn("user", "", parts=(ImageBytes(RED), TextPart("compare"), ImageBytes(RED), TextPart("with this")))
    assert content_of(turn) == [
        {"type": "image"},
        {"type": "text", "text": "compare"},
        {"type": "image"},
        {"type": "text", "text": "with this"},
    ]
    # Text-only parts stay a string, so text-only templates keep working.
    assert content_of(ChatTurn("user", "", parts=(TextPart("a"), TextPart("b")))) == "a\nb"
    assert content_of(ChatTurn("user", "plain")) == "plain"


def test_ministral_template_renders_img_where_the_image_is(stand_ins):
    tokenizer, _ = stand_ins["text"]
    two = rendered(
        tokenizer, ChatTurn("user", "", parts=(TextPart("first"), ImageBytes(RED), TextPart("then"), ImageBytes(RED)))
    )
    assert two.endswith("[INST]first[IMG]then[IMG][/INST]")
    # The real template's one exception: a lone [text, image] pair is written image first.
    pair = rendered(tokenizer, ChatTurn("user", "", parts=(TextPart("What is it?"), ImageBytes(RED))))
    assert pair.endswith("[INST][IMG]What is it?[/INST]")


def test_qwen2_vl_template_renders_vision_tokens_in_order(stand_ins):
    tokenizer, _ = stand_ins["vision"]
    text = rendered(
        tokenizer, ChatTurn("user", "", parts=(TextPart("A:"), ImageBytes(RED), TextPart("B:"), ImageBytes(RED)))
    )
    image = "<|vision_start|><|image_pad|><|vision_end|>"
    assert f"<|im_start|>user\nA:{image}B:{image}<|im_end|>" in text


@pytest.mark.parametrize("kind", ["text", "vision"])
def test_each_placeholder_expands_to_its_images_tokens(stand_ins, kind):
    tokenizer, family = stand_ins[kind]
    turns = (
        ChatTurn("user", "", parts=(TextPart("x"), ImageBytes(RED), TextPart("y"), ImageBytes(png(size=(200, 90))))),
    )
    loaded = SimpleNamespace(family=family)
    images = encode_images(request(*turns), loaded, entry(), memory_tokens=10**6)
    ids = render_prompt(tokenizer, request(*turns))
    expanded = expand(ids, loaded, images)
    assert len(expanded) == len(ids) - 2 + sum(len(i.tokens) for i in images)
    assert expanded.count(family.placeholder_id) == sum(i.image_tokens for i in images)
    assert images[0].image_tokens < images[1].image_tokens  # the larger image costs more


def test_a_prompt_spelling_the_placeholder_itself_is_refused(stand_ins):
    tokenizer, family = stand_ins["text"]
    turns = (ChatTurn("user", "", parts=(TextPart("sneaky [IMG] here"), ImageBytes(RED))),)
    loaded = SimpleNamespace(family=family)
    images = encode_images(request(*turns), loaded, entry(), memory_tokens=10**6)
    with pytest.raises(InvalidRequestError, match="do not match their images"):
        expand(render_prompt(tokenizer, request(*turns)), loaded, images)


def test_detail_budgets():
    assert image_token_budget(Detail.LOW, 5000, max_image_tokens=1280, memory_tokens=10**6) == LOW_DETAIL_TOKENS
    assert image_token_budget(Detail.HIGH, 10, max_image_tokens=1280, memory_tokens=10**6) == 1280
    assert image_token_budget(Detail.AUTO, 5000, max_image_tokens=1280, memory_tokens=10**6) == 1280
    assert image_token_budget(Detail.AUTO, 600, max_image_tokens=1280, memory_tokens=10**6) == 600
    assert image_token_budget(Detail.AUTO, 10, max_image_tokens=1280, memory_tokens=10**6) == LOW_DETAIL_TOKENS
    assert image_token_budget(Detail.HIGH, 10, max_image_tokens=1280, memory_tokens=300) == 300


@pytest.mark.parametrize("kind", ["text", "vision"])
def test_detail_low_costs_fewer_tokens_than_high(stand_ins, kind):
    _, family = stand_ins[kind]
    big = png(size=(1200, 900))
    costs = {}
    for detail in (Detail.LOW, Detail.HIGH):
        turns = (ChatTurn("user", "", parts=(ImageBytes(big, detail=detail),)),)
        (image,) = encode_images(request(*turns), SimpleNamespace(family=family), entry(max_image_tokens=1024), 10**6)
        costs[detail] = image.image_tokens
    assert costs[Detail.LOW] <= LOW_DETAIL_TOKENS < costs[Detail.HIGH] <= 1024


def test_a_bad_image_names_its_message_and_part(stand_ins):
    _, family = stand_ins["text"]
    turns = (
        ChatTurn("user", "hi"),
        ChatTurn("assistant", "yes"),
        ChatTurn("user", "", parts=(TextPart("look"), ImageBytes(RED), ImageBytes(b"\x89PNG broken"))),
    )
    with pytest.raises(InvalidRequestError, match="Invalid image") as caught:
        encode_images(request(*turns), SimpleNamespace(family=family), entry(), 10**6)
    assert caught.value.param == "messages[2].parts[2].image"


def test_images_to_a_model_without_native_vision_are_refused():
    turns = (ChatTurn("user", "", parts=(TextPart("look"), ImageBytes(RED))),)
    with pytest.raises(InvalidRequestError, match=r"model m does not take images \(vision_mode 'disabled'\)"):
        refuse_images(request(*turns), entry("disabled"))
    with pytest.raises(InvalidRequestError, match="does not take images"):
        encode_images(request(*turns), SimpleNamespace(family=None), entry("disabled"), 10**6)
    refuse_images(request(ChatTurn("user", "", parts=(TextPart("text only"),))), entry("disabled"))  # no image: fine
