"""Proxy vision end to end: every multimodal example of the brief, through the official SDK, against real
engine and gateway processes. Images are served by a local HTTP server (the config opts in to 127.0.0.0/8)."""

from __future__ import annotations

import base64
import threading

import grpc
import httpx
import openai
import pytest

from services.common.pb.proxyvision.v1 import common_pb2, vision_engine_pb2 as vpb, vision_engine_pb2_grpc
from tests.support.http_servers import ScriptedServer, send_bytes
from tests.support.images import data_url, jpeg, png
from tests.support.models_yaml import TEXT_MODEL
from tests.support.stack import make_stack

pytestmark = pytest.mark.e2e

IMAGES = {
    "/image.jpg": jpeg((200, 40, 40)),
    "/photo.jpg": jpeg((40, 200, 40), (80, 60)),
    "/image1.jpg": jpeg((10, 10, 200)),
    "/image2.jpg": png((250, 250, 0), (50, 70)),
}


@pytest.fixture(scope="module")
def images_server():
    release = threading.Event()
    routes = {path: send_bytes(data, "image/jpeg") for path, data in IMAGES.items()}
    routes["/slow.jpg"] = lambda handler: release.wait(10)
    routes["/random.bin"] = send_bytes(b"\x00\x01not an image" * 50, "image/jpeg")
    server = ScriptedServer(routes)
    yield server
    release.set()
    server.close()


@pytest.fixture(scope="module")
def stack(tiny_models, tmp_path_factory):
    images = {"allow_private_networks": ["127.0.0.0/8"], "fetch_timeout_secs": 2, "max_images_per_request": 4}
    s = make_stack(tmp_path_factory.mktemp("vision_chat"), tiny_models, vision=True, gateway_extra={"images": images})
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(stack):
    return stack.client()


def image_part(url: str, detail: str | None = None) -> dict:
    part = {"type": "image_url", "image_url": {"url": url}}
    if detail:
        part["image_url"]["detail"] = detail
    return part


def describe_directly(stack, data: bytes, user_prompt: str, detail=common_pb2.DETAIL_AUTO) -> vpb.CaptionDone:
    with grpc.insecure_channel(stack.vision.address) as channel:
        responses = list(
            vision_engine_pb2_grpc.VisionEngineStub(channel).Describe(
                vpb.DescribeRequest(
                    images=[common_pb2.ImageInput(data=data, mime_type="image/jpeg", detail=detail)],
                    user_prompt=user_prompt,
                )
            )
        )
    return responses[-1].done


def text_only_prompt_tokens(client, text: str) -> int:
    return client.chat.completions.create(
        model=TEXT_MODEL, messages=[{"role": "user", "content": text}], max_tokens=1
    ).usage.prompt_tokens


def test_single_image_url_and_the_text_engine_sees_the_rewritten_prompt(stack, client, images_server):
    url = f"{images_server.base}/photo.jpg"
    response = client.chat.completions.create(
        model=TEXT_MODEL,
        max_tokens=8,
        messages=[{"role": "user", "content": [{"type": "text", "text": "What's in this image?"}, image_part(url)]}],
    )
    assert response.choices[0].message.content is not None
    # The caption the gateway used is in the vision cache now: ask for it directly (a cache hit).
    caption = describe_directly(stack, IMAGES["/photo.jpg"], "What's in this image?")
    assert caption.cached
    # The answer says what the text model was told (an extra the SDK keeps).
    (told,) = response.model_extra["proxy_vision"]["images"]
    assert (told["message"], told["index"], told["caption"]) == (0, 0, caption.caption.strip())
    assert told["cached"] in (True, False) and told["ms"] >= 0
    rewritten = f"What's in this image?\n\nImage 1: {caption.caption.strip()}"
    assert response.usage.prompt_tokens == text_only_prompt_tokens(client, rewritten)
    assert response.usage.prompt_tokens > text_only_prompt_tokens(client, "What's in this image?")


def test_brief_multimodal_curl_with_detail_high(stack, images_server):
    body = {
        "model": TEXT_MODEL,
        "max_tokens": 200,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What do you see in this image?"},
                    image_part(f"{images_server.base}/image.jpg", "high"),
                ],
            }
        ],
    }
    reply = httpx.post(f"{stack.base_url}/v1/chat/completions", json=body, timeout=120)
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["role"] == "assistant"


def test_two_images_are_numbered_in_the_rewrite(stack, client, images_server):
    response = client.chat.completions.create(
        model=TEXT_MODEL,
        max_tokens=4,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare these two images:"},
                    image_part(f"{images_server.base}/image1.jpg", "high"),
                    image_part(f"{images_server.base}/image2.jpg", "high"),
                ],
            }
        ],
    )
    first = describe_directly(stack, IMAGES["/image1.jpg"], "Compare these two images:", common_pb2.DETAIL_HIGH)
    second = describe_directly(stack, IMAGES["/image2.jpg"], "Compare these two images:", common_pb2.DETAIL_HIGH)
    assert first.cached and second.cached
    rewritten = f"Compare these two images:\n\nImage 1: {first.caption.strip()}\nImage 2: {second.caption.strip()}"
    assert response.usage.prompt_tokens == text_only_prompt_tokens(client, rewritten)
    stack.gateway.wait_for_log("Processing multimodal request with 2 images")
    told = response.model_extra["proxy_vision"]["images"]
    assert [(i["message"], i["index"], i["caption"]) for i in told] == [
        (0, 0, first.caption.strip()),
        (0, 1, second.caption.strip()),
    ]


def test_captions_land_where_each_image_was(stack, client, images_server):
    """'compare this [image] with this [image]': each caption stands where its image was, between the texts."""
    response = client.chat.completions.create(
        model=TEXT_MODEL,
        max_tokens=2,
        messages=[
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "compare this"},
                    image_part(f"{images_server.base}/image1.jpg", "low"),
                    {"type": "text", "text": "with this"},
                    image_part(f"{images_server.base}/photo.jpg", "low"),
                    {"type": "text", "text": "Which is bluer?"},
                ],
            },
        ],
    )
    prompt = "compare this\nwith this\nWhich is bluer?"  # what the vision model was asked about the images
    first = describe_directly(stack, IMAGES["/image1.jpg"], prompt, common_pb2.DETAIL_LOW)
    second = describe_directly(stack, IMAGES["/photo.jpg"], prompt, common_pb2.DETAIL_LOW)
    assert first.cached and second.cached
    told = response.model_extra["proxy_vision"]["images"]
    assert [(i["message"], i["index"], i["caption"]) for i in told] == [
        (2, 0, first.caption.strip()),
        (2, 1, second.caption.strip()),
    ]
    in_place = (
        f"compare this\n\nImage 1: {first.caption.strip()}\n\nwith this\n\nImage 2: {second.caption.strip()}"
        f"\n\nWhich is bluer?"
    )
    history = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": in_place},
    ]
    expected = client.chat.completions.create(model=TEXT_MODEL, max_tokens=1, messages=history).usage.prompt_tokens
    assert response.usage.prompt_tokens == expected


def test_base64_data_url(client):
    url = data_url(jpeg((90, 90, 90), (64, 64)))
    response = client.chat.completions.create(
        model=TEXT_MODEL,
        max_tokens=5,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Analyze this image:"},
                    {"type": "image_url", "image_url": {"url": url, "detail": "high"}},
                ],
            }
        ],
    )
    assert response.usage.completion_tokens == 5
    (told,) = response.model_extra["proxy_vision"]["images"]
    assert (told["message"], told["index"]) == (0, 0) and told["caption"]


def test_plain_string_image_url_form(client):
    response = client.chat.completions.create(
        model=TEXT_MODEL,
        max_tokens=3,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look"},
                    {"type": "image_url", "image_url": data_url(png((1, 2, 3)))},
                ],
            }
        ],
    )
    assert response.usage.completion_tokens == 3


def test_streaming_multimodal_response(client, images_server):
    stream = client.chat.completions.create(
        model=TEXT_MODEL,
        max_tokens=6,
        stream=True,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe this image:"},
                    image_part(f"{images_server.base}/image.jpg"),
                ],
            }
        ],
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "length"
    # The brief's loop (`chunk.choices[0].delta.content`) works on every chunk, the captions' one included.
    assert "".join(c.choices[0].delta.content or "" for c in chunks)
    carrying = [c for c in chunks if (c.model_extra or {}).get("proxy_vision")]
    assert len(carrying) == 1 and carrying[0].choices[0].delta.content is None
    (told,) = carrying[0].model_extra["proxy_vision"]["images"]
    assert (told["message"], told["index"]) == (0, 0) and told["caption"]
    assert chunks.index(carrying[0]) < next(i for i, c in enumerate(chunks) if c.choices[0].delta.content)


def test_streamed_multimodal_reports_its_time_split_as_an_sse_comment(stack, images_server):
    body = {
        "model": TEXT_MODEL,
        "stream": True,
        "max_tokens": 3,
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "Time me"}, image_part(f"{images_server.base}/image1.jpg", "low")],
            }
        ],
    }
    with httpx.stream("POST", f"{stack.base_url}/v1/chat/completions", json=body, timeout=60) as reply:
        lines = [line for line in reply.iter_lines() if line]
    timing = next(line for line in lines if line.startswith(": timing "))
    assert {item.split("=")[0] for item in timing.split()[2:]} == {"fetch_ms", "vision_ms", "text_ttft_ms"}
    # After the role chunk and the captions' chunk, before any content.
    assert lines.index(timing) == 2 and '"proxy_vision"' in lines[1]
    assert lines[-1] == "data: [DONE]"


def test_same_image_twice_second_describe_is_a_cache_hit_without_model_work(stack):
    data = png((123, 45, 67), (90, 90))
    first = describe_directly(stack, data, "cache test")
    second = describe_directly(stack, data, "cache test")
    assert not first.cached and first.caption_tokens > 0
    assert second.cached and second.caption == first.caption and second.elapsed_ms == 0.0


def test_multi_turn_conversation_reuses_captions(client, images_server, stack):
    turn = {
        "role": "user",
        "content": [{"type": "text", "text": "Remember this"}, image_part(f"{images_server.base}/image2.jpg")],
    }
    first = client.chat.completions.create(model=TEXT_MODEL, max_tokens=3, messages=[turn])
    history = [
        turn,
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "And now?"},
    ]
    second = client.chat.completions.create(model=TEXT_MODEL, max_tokens=3, messages=history)
    assert second.usage.prompt_tokens > first.usage.prompt_tokens


@pytest.mark.parametrize(
    "url, code, why",
    [
        (
            "http://169.254.169.254/latest/meta-data/",
            "image_url_not_accessible",
            "169.254.169.254 is a link-local/metadata address (169.254.0.0/16)",
        ),
        ("file:///etc/passwd", "image_url_not_accessible", "the scheme 'file' is not supported"),
        ("{base}/missing.jpg", "image_url_not_accessible", "the server at 127.0.0.1 answered 404"),
        ("{base}/slow.jpg", "image_download_timeout", "127.0.0.1 did not answer within 2 s"),
        ("{base}/random.bin", "invalid_image", "from 127.0.0.1 (served as image/jpeg): not a decodable image"),
        ("data:image/png;base64,@@@@", "invalid_image", "invalid base64 in data URL"),
        (
            "data:image/svg+xml;base64," + base64.b64encode(b"<svg xmlns='http://www.w3.org/2000/svg'/>").decode(),
            "invalid_image",
            "not a decodable image in a supported format",
        ),
    ],
)
def test_bad_images_are_400s_with_the_brief_words_and_the_reason(client, images_server, stack, url, code, why):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=TEXT_MODEL,
            max_tokens=3,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        image_part(url.format(base=images_server.base)),
                    ],
                }
            ],
        )
    assert info.value.body["code"] == code and info.value.body["param"] == "messages[0].content[1].image_url"
    expected = {
        "image_url_not_accessible": "Image URL not accessible",
        "image_download_timeout": "Image download timeout",
        "invalid_image": "Invalid image",
    }[code]
    assert info.value.body["message"].startswith(expected)
    assert why in info.value.body["message"]
    assert httpx.get(f"{stack.base_url}/health").status_code == 200


def test_too_many_images(client):
    data = data_url(png())
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=TEXT_MODEL,
            max_tokens=3,
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "Many"}, *[image_part(data) for _ in range(5)]]}
            ],
        )
    assert info.value.body["code"] == "too_many_images"


def test_brief_log_lines(stack):
    stack.text.wait_for_log(f"Building InferenceEngine for model {TEXT_MODEL}")
    stack.vision.wait_for_log("Building InferenceEngine for model qwen2-vl-7b")
    stack.gateway.wait_for_log("Vision backend: Available")
    stack.gateway.wait_for_log("Processing multimodal request with 1 images")
    stack.vision.wait_for_log("Vision processing completed in ")
    assert "ms" in stack.vision.log_text().split("Vision processing completed in ", 1)[1][:12]


def test_ready_and_models_include_the_vision_engine(stack):
    ready = httpx.get(f"{stack.base_url}/ready").json()
    assert ready["engines"] == {TEXT_MODEL: "SERVING", "qwen2-vl-7b": "SERVING"} and ready["vision"]["available"]
    ids = [m["id"] for m in httpx.get(f"{stack.base_url}/v1/models").json()["data"]]
    assert ids == [TEXT_MODEL, "qwen2-vl-7b"]
