"""The image policy per model, decided from models.yaml: native (images go to the model's own engine as parts,
in the user's order, never to the proxy), proxy (captioned), refuse (a 400 naming the model); a native model
and a proxied text model side by side; the same image checks for every model."""

from __future__ import annotations

import hashlib

import pytest

from services.api_gateway.clients.text_engine import OutputOptions, to_request
from services.api_gateway.schemas.chat import ChatCompletionRequest
from services.api_gateway.serving.image_policy import ImagePolicy, decide
from services.common.config import ModelsConfig, parse_models_config
from services.common.errors import InvalidRequestError, VisionUnavailableError
from services.common.generation import ChatTurn, Detail, ImageBytes, SamplingParams, TextPart
from services.common.pb.proxyvision.v1 import common_pb2
from tests.support.images import data_url, jpeg, png

from .fakes import TEXT, VISION, FakeTextEngine, FakeVision, hello_script, make_vision_state

NATIVE = "qwen2-vl-native"
RED, BLUE = png((200, 30, 30)), jpeg((30, 30, 200), (40, 30))


def config(*, native: bool = True, proxy: bool = True, **gateway) -> ModelsConfig:
    models = [{"name": TEXT, "hf_id": "x/text", "endpoint": "127.0.0.1:1"}]
    if native:
        models.append(
            {
                "name": NATIVE,
                "hf_id": "Qwen/Qwen2-VL-2B-Instruct",
                "endpoint": "127.0.0.1:2",
                "capabilities": {"vision_mode": "native"},
            }
        )
    if proxy:
        models.append(
            {"name": VISION, "hf_id": "x/vision", "endpoint": "127.0.0.1:3", "capabilities": {"vision_mode": "proxy"}}
        )
    return parse_models_config({"models": models, "gateway": gateway})


def image_part(payload: bytes, detail: str = "auto", mime: str = "image/png") -> dict:
    return {"type": "image_url", "image_url": {"url": data_url(payload, mime), "detail": detail}}


def compare_request(model: str, **fields) -> ChatCompletionRequest:
    content = [
        {"type": "text", "text": "compare this"},
        image_part(RED, "low"),
        {"type": "text", "text": "with this"},
        image_part(BLUE, "high", "image/jpeg"),
        {"type": "text", "text": "please"},
    ]
    return ChatCompletionRequest.model_validate(
        {
            "model": model,
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}],
            **fields,
        }
    )


def test_policies_for_the_three_cases_and_side_by_side():
    assert decide(config()) == {TEXT: ImagePolicy(TEXT, "proxy"), NATIVE: ImagePolicy(NATIVE, "native")}
    assert decide(config(proxy=False)) == {TEXT: ImagePolicy(TEXT, "refuse"), NATIVE: ImagePolicy(NATIVE, "native")}
    assert decide(config(native=False)) == {TEXT: ImagePolicy(TEXT, "proxy")}
    assert decide(config(native=False, proxy=False)) == {TEXT: ImagePolicy(TEXT, "refuse")}


async def test_native_model_gets_its_text_and_images_as_parts_in_order_and_nothing_is_captioned():
    engines = {TEXT: FakeTextEngine(TEXT, hello_script()), NATIVE: FakeTextEngine(NATIVE, hello_script())}
    vision = FakeVision()
    state = await make_vision_state(config(), engines, vision)
    body = await state.chat.complete(await state.chat.plan(compare_request(NATIVE)), "rid")
    assert body["choices"][0]["message"]["content"] == "Hello wörld"
    assert "proxy_vision" not in body  # nothing was captioned
    assert vision.calls == [] and engines[TEXT].calls == []
    system, user = engines[NATIVE].calls[0].messages
    assert system == ChatTurn("system", "Be brief.")
    red = ImageBytes(RED, "image/png", Detail.LOW, hashlib.sha256(RED).hexdigest())
    blue = ImageBytes(BLUE, "image/jpeg", Detail.HIGH, hashlib.sha256(BLUE).hexdigest())
    parts = (TextPart("compare this"), red, TextPart("with this"), blue, TextPart("please"))
    assert user == ChatTurn("user", "", parts=parts)
    # On the wire: ChatMessage.parts in the same order, the image as bytes + mime + detail + sha256.
    wire = to_request(NATIVE, [user], SamplingParams(), OutputOptions(), "rid").messages[0]
    assert [p.WhichOneof("part") for p in wire.parts] == ["text", "image", "text", "image", "text"]
    assert wire.content == "" and wire.parts[1].image.data == RED and wire.parts[3].image.mime_type == "image/jpeg"
    assert (wire.parts[1].image.detail, wire.parts[3].image.detail) == (common_pb2.DETAIL_LOW, common_pb2.DETAIL_HIGH)
    assert wire.parts[3].image.sha256 == hashlib.sha256(BLUE).hexdigest()


async def test_native_stream_is_accepted_before_it_starts_like_text():
    engine = FakeTextEngine(NATIVE, hello_script())
    state = await make_vision_state(config(), {TEXT: FakeTextEngine(TEXT), NATIVE: engine}, FakeVision())
    plan = await state.chat.plan(compare_request(NATIVE, stream=True))
    assert plan.core.images is None and plan.core.turns is not None  # nothing to wait for: no caption step
    transcript = "".join([frame async for frame in await state.chat.stream(plan, "rid")])
    assert '"content":"Hello"' in transcript and "proxy_vision" not in transcript and ": timing" not in transcript
    assert engine.calls[0].messages[1].parts[0] == TextPart("compare this")


async def test_side_by_side_the_text_model_is_captioned_through_the_proxy():
    engines = {TEXT: FakeTextEngine(TEXT, hello_script()), NATIVE: FakeTextEngine(NATIVE, hello_script())}
    vision = FakeVision()
    state = await make_vision_state(config(), engines, vision)
    await state.chat.complete(await state.chat.plan(compare_request(TEXT)), "rid")
    assert [len(images) for _, images in vision.calls] == [2] and engines[NATIVE].calls == []
    user = engines[TEXT].calls[0].messages[1]
    assert user.parts == () and "caption of image 1" in user.content and "caption of image 2" in user.content


async def test_a_text_model_without_a_proxy_refuses_images_with_a_400_that_says_how():
    engines = {TEXT: FakeTextEngine(TEXT, hello_script()), NATIVE: FakeTextEngine(NATIVE, hello_script())}
    state = await make_vision_state(config(proxy=False), engines, None)
    with pytest.raises(InvalidRequestError) as info:
        await state.chat.plan(compare_request(TEXT))
    error = info.value.to_openai()["error"]
    assert info.value.http_status == 400 and error["param"] == "messages" and error["code"] == "images_not_supported"
    assert f"'{TEXT}'" in error["message"] and "vision_mode 'proxy'" in error["message"]
    assert "vision_mode 'native'" in error["message"]
    # Text still works for it, and the native model beside it still takes images.
    text = ChatCompletionRequest(model=TEXT, messages=[{"role": "user", "content": "hi"}])
    assert (await state.chat.complete(await state.chat.plan(text), "r2"))["choices"][0]["message"]["content"]
    await state.chat.complete(await state.chat.plan(compare_request(NATIVE)), "r3")
    assert len(engines[NATIVE].calls[0].messages[1].parts) == 5 and engines[TEXT].calls[0].messages[0].content == "hi"


async def test_a_configured_proxy_that_is_down_is_still_the_503():
    vision = FakeVision(health="NOT_SERVING")
    state = await make_vision_state(config(native=False), {TEXT: FakeTextEngine(TEXT, hello_script())}, vision)
    with pytest.raises(VisionUnavailableError) as info:
        await state.chat.plan(compare_request(TEXT))
    assert info.value.http_status == 503 and info.value.message.startswith("Vision model unavailable: ")


@pytest.mark.parametrize(
    "content, code, param",
    [
        (
            [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@@"}}],
            "invalid_image",
            "messages[0].content[1].image_url",
        ),
        ([image_part(RED)] * 5, "too_many_images", "messages"),
        (
            [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}],
            "image_url_not_accessible",
            "messages[0].content[0].image_url",
        ),
    ],
)
async def test_native_images_get_the_same_checks_and_400s(content, code, param):
    engine = FakeTextEngine(NATIVE, hello_script())
    state = await make_vision_state(
        config(images={"max_images_per_request": 4}), {TEXT: FakeTextEngine(TEXT), NATIVE: engine}, None
    )
    request = ChatCompletionRequest.model_validate(
        {"model": NATIVE, "messages": [{"role": "user", "content": content}]}
    )
    with pytest.raises(InvalidRequestError) as info:
        await state.chat.plan(request)
    assert (info.value.http_status, info.value.code, info.value.param) == (400, code, param)
    assert engine.calls == []


async def test_native_images_outside_user_messages_are_refused():
    state = await make_vision_state(config(), {TEXT: FakeTextEngine(TEXT), NATIVE: FakeTextEngine(NATIVE)}, None)
    request = ChatCompletionRequest.model_validate(
        {
            "model": NATIVE,
            "messages": [{"role": "system", "content": [image_part(RED)]}, {"role": "user", "content": "hi"}],
        }
    )
    with pytest.raises(InvalidRequestError) as info:
        await state.chat.plan(request)
    assert info.value.param == "messages[0].content[0].image_url"
