"""Hostile and broken requests are clear OpenAI-style 4xx answers, never a 500: malformed JSON, wrong types,
junk nesting, numbers JSON or protobuf cannot carry, lone surrogates, bad image URLs and data URLs, and more.

The app runs in-process over a text engine that builds and serializes the protobuf request exactly as the
real client does (so what the wire cannot carry fails here as it would in production), a vision engine that
captions everything, and an image fetcher whose "internet" is one public host serving one PNG.
Each case of `BAD` is one kind of bad input; the issue-11 findings are marked. `ODD_BUT_VALID` are inputs
that look hostile but are fine: they must be answered (200), not refused.
"""

from __future__ import annotations

import ipaddress
import json
import time

import httpx
import pytest

from services.api_gateway.app import build_app
from services.api_gateway.clients.text_engine import OutputOptions, to_request
from services.api_gateway.dependencies import get_state
from services.api_gateway.media.fetcher import ImageFetcher
from services.api_gateway.serving.core import GenerationCore
from services.api_gateway.serving.image_policy import ImagePolicies
from services.api_gateway.serving.images import ImageLoader
from services.api_gateway.serving.registry import EngineRegistry
from services.api_gateway.serving.vision_rewrite import ProxyVisionRewriter
from services.api_gateway.serving.vision_status import VisionBackend
from services.api_gateway.state import GatewayState
from services.common.captions import CaptionDone
from services.common.config import ModelsConfig, parse_models_config
from tests.support.images import data_url, png

from .fakes import TEXT, VISION, FakeTextEngine, hello_script

PNG = png()
HI = [{"role": "user", "content": "Hi"}]


class WireCheckingEngine(FakeTextEngine):
    """The fake engine behind a check the real client makes implicitly: every call's GenerateRequest is built
    and serialized first (protobuf refuses what it cannot carry: lone surrogates, ints past uint32)."""

    def generate(self, messages, params, *, request_id, timeout, options=OutputOptions(), affinity_key="", prompt=None):
        request = to_request(self.model, messages, params, options, request_id, prompt)
        events = super().generate(
            messages,
            params,
            request_id=request_id,
            timeout=timeout,
            options=options,
            affinity_key=affinity_key,
            prompt=prompt,
        )
        return _serialized_first(request, events)


async def _serialized_first(request, events):
    request.SerializeToString()  # where the real client's stub would fail, on the first read of the stream
    async for event in events:
        yield event


class CaptioningVision:
    """A vision engine that is up and calls every image 'a cat'."""

    async def health(self, timeout, *, wait_for_ready=False):
        return "SERVING"

    async def describe(self, images, *, user_prompt, request_id, timeout):
        for index, _ in enumerate(images):
            yield CaptionDone(index, "a cat", "stop", 4, 2, False, 1.0)


async def public_resolver(host: str, port: int) -> list[str]:
    """As getaddrinfo: an IP literal is itself, a name is IDNA-encoded first; every name is one public address."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        host.encode("idna")
        return ["93.184.216.34"]


def serve_images(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/cat.png":  # on every (public) host
        return httpx.Response(200, content=PNG, headers={"content-type": "image/png"})
    return httpx.Response(404)


def hostile_config(limits: dict | None = None, images: dict | None = None) -> ModelsConfig:
    models = [
        {"name": TEXT, "hf_id": "x/text", "endpoint": "127.0.0.1:1"},
        {"name": VISION, "hf_id": "x/vision", "endpoint": "127.0.0.1:3", "capabilities": {"vision_mode": "proxy"}},
    ]
    images = {"max_images_per_request": 3, "max_image_bytes": 64 * 1024, **(images or {})}
    gateway = {"images": images, "limits": limits or {}}
    return parse_models_config({"models": models, "gateway": gateway})


async def hostile_app(config: ModelsConfig, engine: FakeTextEngine, fetcher: ImageFetcher | None = None):
    """The gateway app over the fakes above (the caller enters an httpx client on it); `fetcher` replaces the
    one whose internet is one public host serving /cat.png."""
    app = build_app(config)
    registry = EngineRegistry(config, {TEXT: engine}, None)
    backend = VisionBackend(CaptioningVision())  # type: ignore[arg-type]
    await backend.refresh()
    if fetcher is None:
        internet = httpx.MockTransport(serve_images)
        fetcher = ImageFetcher(config.gateway.images, resolver=public_resolver, transport=internet)
    loader = ImageLoader(fetcher, config.gateway.images)
    images = ImagePolicies(config, loader, ProxyVisionRewriter(loader, backend, 5.0))
    state = GatewayState(config, registry, GenerationCore(registry, images, 5.0, max_n=4), backend, int(time.time()))
    app.dependency_overrides[get_state] = lambda: state
    return app


@pytest.fixture
def engine():
    return WireCheckingEngine(TEXT, hello_script())


@pytest.fixture
async def client(engine):
    app = await hostile_app(
        hostile_config(
            {"max_messages": 64, "max_text_chars": 20_000, "max_completion_tokens": 4096, "max_body_bytes": 256 * 1024}
        ),
        engine,
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        yield c


def openai_error(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    return body["error"]


def image(url, **extra) -> list[dict]:
    """A user message with one image part (the object form; `url` may be anything)."""
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is it?"},
                {"type": "image_url", "image_url": {"url": url, **extra}},
            ],
        }
    ]


def raw(text: str) -> bytes:
    """A JSON body written by hand (for what json.dumps would not write: escapes, literals, duplicate keys)."""
    return text.replace("$TEXT", TEXT).encode()


def body(**fields) -> bytes:
    return json.dumps({"model": TEXT, "messages": HI, **fields}).encode()


def nested(depth: int) -> object:
    value: object = {"type": "string"}
    for _ in range(depth):
        value = {"type": "object", "properties": {"x": value}}
    return value


JSON = "application/json"
# (kind, body bytes, content type, status, param or None when any): one kind of bad input per row.
BAD = [
    # -- the body is not a JSON object --
    ("malformed JSON", b'{"model": "x", "messages": [', JSON, 400, None),
    ("empty body", b"", JSON, 400, None),
    ("a JSON array", b"[]", JSON, 400, None),
    ("a JSON string", b'"hello"', JSON, 400, None),
    ("JSON null", b"null", JSON, 400, None),
    ("not UTF-8", b"\xff\xfe\x00{", JSON, 400, None),
    ("text/plain body", body(), "text/plain", 400, None),
    ("form-encoded body", b"model=x&messages=hi", "application/x-www-form-urlencoded", 400, None),
    ("recursion: 100000 nested arrays", b"[" * 100_000, JSON, 400, None),
    (
        "an integer of 5000 digits",
        raw('{"model": "$TEXT", "messages": [], "seed": 1' + "0" * 5000 + "}"),
        JSON,
        400,
        None,
    ),
    # -- wrong types and junk --
    ("model missing", json.dumps({"messages": HI}).encode(), JSON, 400, "model"),
    ("model empty", body(model=""), JSON, 400, "model"),
    ("model a number", body(model=123), JSON, 400, "model"),
    ("model unknown", body(model="gpt-9"), JSON, 404, None),
    ("messages a string", body(messages="hi"), JSON, 400, "messages"),
    ("messages empty", body(messages=[]), JSON, 400, "messages"),
    ("a message that is a string", body(messages=["hi"]), JSON, 400, "messages[0]"),
    ("unknown role", body(messages=[{"role": "robot", "content": "x"}]), JSON, 400, "messages[0].role"),
    ("role missing", body(messages=[{"content": "x"}]), JSON, 400, "messages[0].role"),
    ("content a number", body(messages=[{"role": "user", "content": 42}]), JSON, 400, "messages[0].content"),
    ("user content null", body(messages=[{"role": "user", "content": None}]), JSON, 400, "messages[0].content"),
    (
        "content part without type",
        body(messages=[{"role": "user", "content": [{"text": "x"}]}]),
        JSON,
        400,
        "messages[0].content[0]",
    ),
    (
        "content part of unknown type",
        body(messages=[{"role": "user", "content": [{"type": "audio"}]}]),
        JSON,
        400,
        "messages[0].content[0]",
    ),
    (
        "text part with a list",
        body(messages=[{"role": "user", "content": [{"type": "text", "text": ["x"]}]}]),
        JSON,
        400,
        "messages[0].content[0].text",
    ),
    (
        "nested junk: lists of lists",
        body(messages=[{"role": "user", "content": [[[{"type": "text"}]]]}]),
        JSON,
        400,
        "messages[0].content[0]",
    ),
    ("temperature true", body(temperature="hot"), JSON, 400, "temperature"),
    ("max_tokens a fraction", body(max_tokens=1.5), JSON, 400, "max_tokens"),
    ("negative n", body(n=-1), JSON, 400, "n"),
    ("stop an object", body(stop={"a": 1}), JSON, 400, "stop"),
    ("stream_options a string", body(stream=True, stream_options="usage"), JSON, 400, "stream_options"),
    ("tools a string", body(tools="all"), JSON, 400, "tools"),
    # -- numbers JSON or the proto cannot carry --
    (
        "NaN literal",
        raw('{"model": "$TEXT", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}'),
        JSON,
        400,
        "temperature",
    ),
    (
        "Infinity literal",
        raw('{"model": "$TEXT", "messages": [{"role": "user", "content": "x"}], "top_p": Infinity}'),
        JSON,
        400,
        "top_p",
    ),
    (
        "-Infinity literal",
        raw('{"model": "$TEXT", "messages": [{"role": "user", "content": "x"}], "presence_penalty": -Infinity}'),
        JSON,
        400,
        "presence_penalty",
    ),
    (
        "1e999 (overflows to infinity)",
        raw('{"model": "$TEXT", "messages": [{"role": "user", "content": "x"}], "logit_bias": {"5": 1e999}}'),
        JSON,
        400,
        "logit_bias.5",
    ),
    (
        "NaN inside a tool's JSON Schema",
        raw(
            '{"model": "$TEXT", "messages": [{"role": "user", "content": "x"}], "tools": '
            '[{"type": "function", "function": {"name": "f", "parameters": {"maximum": NaN}}}]}'
        ),
        JSON,
        400,
        "tools[0].function.parameters.maximum",
    ),
    ("max_tokens 10^30", body(max_tokens=10**30), JSON, 400, "max_tokens"),
    ("min_tokens past uint32", body(min_tokens=2**40), JSON, 400, "min_tokens"),
    # -- text that is not Unicode (finding: a lone surrogate was a 500) --
    (
        "lone high surrogate in content",
        raw('{"model": "$TEXT", "messages": [{"role": "user", "content": "a\\ud800b"}]}'),
        JSON,
        400,
        "messages[0].content",
    ),
    (
        "lone low surrogate in a text part",
        raw('{"model": "$TEXT", "messages": [{"role": "user", "content": [{"type": "text", "text": "\\udc00"}]}]}'),
        JSON,
        400,
        "messages[0].content[0].text",
    ),
    (
        "lone surrogate in the model name",
        raw('{"model": "\\ud800", "messages": [{"role": "user", "content": "x"}]}'),
        JSON,
        400,
        "model",
    ),
    (
        "lone surrogate in a key",
        raw('{"model": "$TEXT", "messages": [{"role": "user", "content": "x"}], "metadata": {"\\ud800": 1}}'),
        JSON,
        400,
        "metadata",
    ),
    (
        "lone surrogate in a tool call",
        raw(
            '{"model": "$TEXT", "messages": [{"role": "user", "content": "x"}, {"role": '
            '"assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": '
            '"f", "arguments": "\\ud83d"}}]}]}'
        ),
        JSON,
        400,
        "messages[1].tool_calls[0].function.arguments",
    ),
    # -- nesting --
    (
        "a tool schema nested 100 deep",
        body(tools=[{"type": "function", "function": {"name": "f", "parameters": nested(100)}}]),
        JSON,
        400,
        None,
    ),
    # -- image URLs (finding: http://[::1 was a 500) --
    (
        "image URL with an unclosed IPv6 bracket",
        body(messages=image("http://[::1")),
        JSON,
        400,
        "messages[0].content[1].image_url.url",
    ),
    (
        "image URL string form, unclosed bracket",
        body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": "http://[::1"}]}]),
        JSON,
        400,
        "messages[0].content[0].image_url",
    ),
    (
        "image URL with port 99999",
        body(messages=image("http://images.example:99999/cat.png")),
        JSON,
        400,
        "messages[0].content[1].image_url.url",
    ),
    (
        "image URL with a port that is not a number",
        body(messages=image("http://images.example:http/cat.png")),
        JSON,
        400,
        "messages[0].content[1].image_url.url",
    ),
    (
        "image URL empty (developer message, finding)",
        body(messages=[{"role": "developer", "content": [{"type": "image_url", "image_url": ""}]}]),
        JSON,
        400,
        "messages[0].content[0].image_url",
    ),
    ("image URL empty (user message)", body(messages=image("")), JSON, 400, "messages[0].content[1].image_url.url"),
    (
        "image_url null",
        body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": None}]}]),
        JSON,
        400,
        "messages[0].content[0].image_url",
    ),
    (
        "image URL to loopback",
        body(messages=image("http://[::1]:8000/cat.png")),
        JSON,
        400,
        "messages[0].content[1].image_url",
    ),
    (
        "image URL to the metadata service",
        body(messages=image("http://169.254.169.254/latest")),
        JSON,
        400,
        "messages[0].content[1].image_url",
    ),
    (
        "image URL with ftp scheme",
        body(messages=image("ftp://images.example/cat.png")),
        JSON,
        400,
        "messages[0].content[1].image_url",
    ),
    (
        "image URL with file scheme",
        body(messages=image("file:///etc/passwd")),
        JSON,
        400,
        "messages[0].content[1].image_url",
    ),
    (
        "image URL javascript:",
        body(messages=image("javascript:alert(1)")),
        JSON,
        400,
        "messages[0].content[1].image_url",
    ),
    (
        "image URL with userinfo",
        body(messages=image("http://user:pw@images.example/cat.png")),
        JSON,
        400,
        "messages[0].content[1].image_url",
    ),
    (
        "image URL without a host",
        body(messages=image("http:///cat.png")),
        JSON,
        400,
        "messages[0].content[1].image_url",
    ),
    (
        "image URL with an empty label (IDNA)",
        body(messages=image("http://images..example/cat.png")),
        JSON,
        400,
        "messages[0].content[1].image_url",
    ),
    (
        "image URL with a 64-character label",
        body(messages=image(f"http://{'a' * 64}.example/cat.png")),
        JSON,
        400,
        "messages[0].content[1].image_url",
    ),
    (
        "image URL with a backslash",
        body(messages=image("http://images.example\\@evil/cat.png")),
        JSON,
        400,
        "messages[0].content[1].image_url",
    ),
    (
        "image URL with a space",
        body(messages=image("http://images.example/c at.png")),
        JSON,
        400,
        "messages[0].content[1].image_url",
    ),
    (
        "image URL that answers 404",
        body(messages=image("http://images.example/dog.png")),
        JSON,
        400,
        "messages[0].content[1].image_url",
    ),
    (
        "image URL of 100000 characters",
        body(messages=image("http://images.example/" + "a" * 100_000)),
        JSON,
        400,
        "messages[0].content[1].image_url",
    ),
    (
        "image detail 'ultra'",
        body(messages=image("http://images.example/cat.png", detail="ultra")),
        JSON,
        400,
        "messages[0].content[1].image_url.detail",
    ),
    (
        "an image in a system message",
        body(
            messages=[
                {
                    "role": "system",
                    "content": [{"type": "image_url", "image_url": {"url": "http://images.example/cat.png"}}],
                },
                *HI,
            ]
        ),
        JSON,
        400,
        "messages[0].content[0].image_url",
    ),
    (
        "more images than allowed",
        body(
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": "http://images.example/cat.png"}] * 4}
            ]
        ),
        JSON,
        400,
        "messages",
    ),
    # -- data URLs --
    (
        "data URL without a comma",
        body(messages=image("data:image/png;base64")),
        JSON,
        400,
        "messages[0].content[1].image_url",
    ),
    ("data URL not base64", body(messages=image("data:image/png,AAAA")), JSON, 400, "messages[0].content[1].image_url"),
    (
        "data URL with bad base64",
        body(messages=image("data:image/png;base64,@@@@")),
        JSON,
        400,
        "messages[0].content[1].image_url",
    ),
    (
        "data URL of text/plain",
        body(messages=image(data_url(PNG, "text/plain"))),
        JSON,
        400,
        "messages[0].content[1].image_url",
    ),
    (
        "data URL of bytes that are no image",
        body(messages=image(data_url(b"not an image at all", "image/png"))),
        JSON,
        400,
        "messages[0].content[1].image_url",
    ),
    (
        "data URL with no payload",
        body(messages=image("data:image/png;base64,")),
        JSON,
        400,
        "messages[0].content[1].image_url",
    ),
    (
        "data URL over max_image_bytes",
        body(messages=image(data_url(b"\0" * 70_000, "image/png"))),
        JSON,
        400,
        "messages[0].content[1].image_url",
    ),
    # -- duplicated keys: the last one counts, as in every JSON parser --
    (
        "duplicated key, the last one bad",
        raw('{"model": "$TEXT", "messages": [{"role": "user", "content": "x"}], "temperature": 1, "temperature": 9}'),
        JSON,
        400,
        "temperature",
    ),
    # -- request limits (finding: a 40 MB message did not answer) --
    ("body over max_body_bytes", body(messages=[{"role": "user", "content": "x" * 300_000}]), JSON, 413, None),
    ("more messages than max_messages", body(messages=HI * 65), JSON, 400, "messages"),
    (
        "more text than max_text_chars",
        body(messages=[{"role": "user", "content": "x" * 20_001}]),
        JSON,
        400,
        "messages",
    ),
    ("max_completion_tokens over the cap", body(max_completion_tokens=4097), JSON, 400, "max_completion_tokens"),
]


@pytest.mark.parametrize("kind, content, content_type, status, param", BAD, ids=[case[0] for case in BAD])
async def test_bad_input_is_a_clear_openai_error(client, engine, kind, content, content_type, status, param):
    response = await client.post("/v1/chat/completions", content=content, headers={"content-type": content_type})
    assert response.status_code == status, (kind, response.text[:500])
    error = openai_error(response)
    assert error["type"] == "invalid_request_error", error
    if param is not None:
        assert error["param"] == param, error
    assert engine.calls == []  # refused before the engine was asked anything


@pytest.mark.parametrize("stream", [False, True])
async def test_the_findings_as_reported_are_400s_streamed_or_not(client, engine, stream):
    """The issue's exact requests, with `stream` both ways (a stream must refuse before its first byte)."""
    surrogate = raw(
        '{"model": "$TEXT", "stream": ' + json.dumps(stream) + ', "messages": [{"role": "user", "content": "\\ud800"}]}'
    )
    developer = body(
        stream=stream, messages=[{"role": "developer", "content": [{"type": "image_url", "image_url": ""}]}]
    )
    ipv6 = body(stream=stream, messages=image("http://[::1"))
    for content in (surrogate, developer, ipv6):
        response = await client.post("/v1/chat/completions", content=content, headers={"content-type": JSON})
        assert response.status_code == 400 and response.headers["content-type"] == JSON, response.text
        assert openai_error(response)["code"] in ("invalid_unicode", "invalid_value")
    assert engine.calls == []


# Inputs that look hostile but are valid requests: answered, with what the client sent reaching the engine intact.
ODD_BUT_VALID = [
    (
        "NUL characters in content",
        raw('{"model": "$TEXT", "messages": [{"role": "user", "content": "a\\u0000b"}]}'),
        "a\x00b",
    ),
    (
        "a surrogate pair (an emoji) as escapes",
        raw('{"model": "$TEXT", "messages": [{"role": "user", "content": "\\ud83d\\ude00"}]}'),
        "\U0001f600",
    ),
    (
        "duplicated model key, the last one served",
        raw('{"model": "nope", "model": "$TEXT", "messages": [{"role": "user", "content": "dup"}]}'),
        "dup",
    ),
    (
        "unknown fields, deeply junk",
        body(messages=[{"role": "user", "content": "junk", "extra": [[[{}]]]}], foo={"bar": [1]}),
        "junk",
    ),
    (
        "right-to-left and combining marks",
        body(messages=[{"role": "user", "content": "\u202eabc\u0301"}]),
        "\u202eabc\u0301",
    ),
    ("top_k past uint32 (as good as no top-k)", body(top_k=2**40, messages=[{"role": "user", "content": "k"}]), "k"),
    ("an image URL with an IPv6 literal", body(messages=image("http://[2606:2800:220:1::]/cat.png")), None),
    ("an image as a data URL", body(messages=image(data_url(PNG))), None),
]


@pytest.mark.parametrize("kind, content, reaches_engine", ODD_BUT_VALID, ids=[case[0] for case in ODD_BUT_VALID])
async def test_odd_but_valid_input_is_answered(client, engine, kind, content, reaches_engine):
    response = await client.post("/v1/chat/completions", content=content, headers={"content-type": JSON})
    assert response.status_code == 200, (kind, response.text[:500])
    assert response.json()["choices"][0]["message"]["content"] == "Hello wörld"
    (call,) = engine.calls
    if reaches_engine is not None:
        assert call.messages[-1].content == reaches_engine
    else:
        assert "Image 1: a cat" in call.messages[-1].content


async def test_junk_headers_do_not_matter(client, engine):
    response = await client.post(
        "/v1/chat/completions",
        content=body(),
        headers={"content-type": JSON, "x-request-id": "../../etc/passwd\t", "x-stainless-timeout": "NaN"},
    )
    assert response.status_code == 200 and response.headers["x-request-id"].startswith("req-")
    assert engine.calls[0].timeout == 5.0  # the configured deadline: NaN is no timeout


async def test_wrong_method_and_path_are_openai_errors(client):
    assert openai_error(await client.get("/v1/chat/completions"))["code"] == "method_not_allowed"
    assert openai_error(await client.post("/v1/chat/completion", content=body()))["code"] == "not_found"


def test_there_are_at_least_thirty_kinds():
    assert len({case[0] for case in BAD}) >= 30
