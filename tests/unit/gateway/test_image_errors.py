"""An image refusal says why: one case per reason, each through the whole app, with the full error body.

The message keeps the brief's words first ("Image URL not accessible", "Image download timeout", "Invalid
image") and names the reason and the host the client sent; `code` and `param` are the same as before this
change whatever the reason (clients match on them). A refusal never shows the address a name resolved to
or an exception's text: the gateway's DNS and network are not the client's to see.

The fetcher's "internet": images.example (public) serves the paths of `serve`, images.corp resolves to a
private address, localhost to loopback, and every other name does not resolve.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket

import httpx
import pytest

from services.api_gateway.media.fetcher import ImageFetcher
from tests.support.images import png

from .fakes import TEXT, hello_script
from .test_bad_inputs import WireCheckingEngine, hostile_app, hostile_config, image, openai_error

PUBLIC_IP = "93.184.216.34"
DNS = {"images.example": [PUBLIC_IP], "images.corp": ["10.1.2.3"], "localhost": ["127.0.0.1"]}
PARAM = "messages[0].content[1].image_url"
SCHEMES = "use an http(s) URL or a data:image/...;base64 URL"
LIMIT = 64 * 1024  # hostile_config's max_image_bytes
SECRET = "internal detail: 10.9.8.7 refused"  # an exception's text, which must not reach the client


async def resolve(host: str, port: int) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        host.encode("idna")  # as getaddrinfo: UnicodeError for a name IDNA cannot encode
    if host not in DNS:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return DNS[host]


async def serve(request: httpx.Request) -> httpx.Response:
    path = request.url.path
    if path == "/cat.png":
        return httpx.Response(200, content=png(), headers={"content-type": "image/png"})
    if path == "/page.html":
        return httpx.Response(200, content=b"<html>hello</html>", headers={"content-type": "text/html; charset=utf-8"})
    if path == "/big.png":
        return httpx.Response(200, content=b"x" * (LIMIT + 1), headers={"content-type": "image/png"})
    if path == "/broken.png":
        return httpx.Response(503)
    if path == "/down.png":
        raise httpx.ConnectError(SECRET)
    if path == "/moved.png":
        return httpx.Response(302, headers={"location": "http://10.0.0.5/cat.png"})
    if path == "/loop.png":
        return httpx.Response(302, headers={"location": "/loop.png"})
    if path == "/slow.png":
        await asyncio.sleep(5)
    return httpx.Response(404)


def data_url(payload: str) -> str:
    return f"data:image/png;base64,{payload}"


NOT_ACCESSIBLE, TIMEOUT, TOO_LARGE, INVALID = (
    "image_url_not_accessible",
    "image_download_timeout",
    "image_too_large",
    "invalid_image",
)
# One case a row (reason, URL, code, the whole message): columns the formatter would break apart.
CASES = [
    (
        "private address",
        "http://images.corp/cat.png",
        NOT_ACCESSIBLE,
        "Image URL not accessible: images.corp resolves to a private address (10.0.0.0/8)",
    ),
    (
        "loopback",
        "http://localhost:8000/cat.png",
        NOT_ACCESSIBLE,
        "Image URL not accessible: localhost resolves to a loopback address (127.0.0.0/8)",
    ),
    (
        "metadata service",
        "http://169.254.169.254/latest/meta-data/",
        NOT_ACCESSIBLE,
        "Image URL not accessible: 169.254.169.254 is a link-local/metadata address (169.254.0.0/16)",
    ),
    (
        "IPv6 loopback",
        "http://[::1]/cat.png",
        NOT_ACCESSIBLE,
        "Image URL not accessible: ::1 is a loopback address (::1/128)",
    ),
    (
        "DNS failure",
        "http://nosuch.example/cat.png",
        NOT_ACCESSIBLE,
        "Image URL not accessible: the host name nosuch.example does not resolve",
    ),
    (
        "host IDNA cannot encode",
        "http://images..example/cat.png",
        NOT_ACCESSIBLE,
        "Image URL not accessible: images..example is not a valid host name",
    ),
    (
        "HTTP status",
        "http://images.example/dog.png",
        NOT_ACCESSIBLE,
        "Image URL not accessible: the server at images.example answered 404",
    ),
    (
        "5xx after retries",
        "http://images.example/broken.png",
        NOT_ACCESSIBLE,
        "Image URL not accessible: the server at images.example answered 503 (3 attempts)",
    ),
    (
        "connection refused",
        "http://images.example/down.png",
        NOT_ACCESSIBLE,
        "Image URL not accessible: could not connect to images.example (3 attempts)",
    ),
    (
        "unsupported scheme",
        "ftp://images.example/cat.png",
        NOT_ACCESSIBLE,
        f"Image URL not accessible: the scheme 'ftp' is not supported ({SCHEMES})",
    ),
    (
        "file scheme",
        "file:///etc/passwd",
        NOT_ACCESSIBLE,
        f"Image URL not accessible: the scheme 'file' is not supported ({SCHEMES})",
    ),
    (
        "credentials in the URL",
        "http://user:pw@images.example/cat.png",
        NOT_ACCESSIBLE,
        "Image URL not accessible: the URL carries a user name or password (user@host), which is not allowed",
    ),
    (
        "redirect to a blocked address",
        "http://images.example/moved.png",
        NOT_ACCESSIBLE,
        "Image URL not accessible: after a redirect from images.example, 10.0.0.5 is a private address (10.0.0.0/8)",
    ),
    (
        "too many redirects",
        "http://images.example/loop.png",
        NOT_ACCESSIBLE,
        "Image URL not accessible: more than 3 redirects, starting at images.example",
    ),
    (
        "too large",
        "http://images.example/big.png",
        TOO_LARGE,
        f"Image is larger than the limit of {LIMIT} bytes: images.example declared {LIMIT + 1}",
    ),
    (
        "too large data URL",
        data_url("AAAA" * (LIMIT // 3 + 1)),
        TOO_LARGE,
        f"Image is larger than the limit of {LIMIT} bytes: the data URL holds {3 * (LIMIT // 3 + 1)}",
    ),
    (
        "not an image",
        "http://images.example/page.html",
        INVALID,
        "Invalid image from images.example (served as text/html): not a decodable image in a supported format "
        "(JPEG, PNG, WEBP, GIF, BMP)",
    ),
    (
        "bad base64",
        data_url("@@@@"),
        INVALID,
        "Invalid image: invalid base64 in data URL (Only base64 data is allowed)",
    ),
    ("bad padding", data_url("QQ="), INVALID, "Invalid image: invalid base64 in data URL (Incorrect padding)"),
    (
        "bad data URL",
        "data:image/png;base64",
        INVALID,
        "Invalid image: malformed data URL (expected data:image/<type>;base64,<data>)",
    ),
    (
        "data URL of text",
        "data:text/plain;base64," + base64.b64encode(b"hi").decode(),
        INVALID,
        "Invalid image: data URL type 'text/plain' is not an image (data:image/<type>;base64,<data>)",
    ),
]


async def post_image(url: str, images: dict | None = None) -> dict:
    config = hostile_config(images=images)
    fetcher = ImageFetcher(config.gateway.images, resolver=resolve, transport=httpx.MockTransport(serve))
    engine = WireCheckingEngine(TEXT, hello_script())
    app = await hostile_app(config, engine, fetcher)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            response = await client.post("/v1/chat/completions", json={"model": TEXT, "messages": image(url)})
    finally:
        await fetcher.aclose()
    assert response.status_code == 400, response.text
    assert engine.calls == []
    return openai_error(response)


@pytest.mark.parametrize("reason, url, code, message", CASES, ids=[case[0] for case in CASES])
async def test_an_image_refusal_says_why_and_keeps_its_code_and_param(reason, url, code, message):
    error = await post_image(url)
    assert error == {"message": message, "type": "invalid_request_error", "param": PARAM, "code": code}


async def test_a_timeout_names_the_host_and_the_limit_in_the_brief_words():
    error = await post_image("http://images.example/slow.png", images={"fetch_timeout_secs": 0.3})
    assert error == {
        "message": "Image download timeout: images.example did not answer within 0.3 s",
        "type": "invalid_request_error",
        "param": PARAM,
        "code": TIMEOUT,
    }


async def test_a_refusal_shows_neither_resolved_addresses_nor_exception_text():
    for url, hidden in [
        ("http://images.corp/cat.png", "10.1.2.3"),
        ("http://images.example/down.png", SECRET),
        ("http://localhost/cat.png", "127.0.0.1"),
    ]:
        error = await post_image(url)
        assert hidden not in error["message"], error
        assert "Error" not in error["message"] and "Traceback" not in error["message"], error


async def test_allowed_domains_names_the_host_it_refused():
    error = await post_image("http://images.example/cat.png", images={"allowed_domains": ["cdn.example"]})
    assert error["message"] == (
        "Image URL not accessible: images.example is not among the image domains this gateway allows"
    )
    assert (error["code"], error["param"]) == (NOT_ACCESSIBLE, PARAM)
    assert "cdn.example" not in error["message"]  # the operator's list stays the operator's
