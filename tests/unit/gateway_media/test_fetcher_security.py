"""The image fetcher refuses every way of reaching internal addresses, and a canary on 127.0.0.1 proves
no connection was made. Real sockets on loopback; DNS injected where the test needs a lie."""

from __future__ import annotations

import httpx
import pytest

from services.api_gateway.media.addresses import AddressPolicy
from services.api_gateway.media.fetcher import ImageFetcher
from services.common.config import ImageLimits
from services.common.errors import ImageDownloadTimeoutError, ImageTooLargeError, ImageUrlNotAccessibleError
from tests.support.http_servers import Canary, ScriptedServer, redirect_to, send_bytes
from tests.support.images import png

PUBLIC_IP = "93.184.216.34"  # never connected to: requests to it go to an in-memory transport
NA = "Image URL not accessible: "  # the brief's words; the reason follows


@pytest.fixture()
def canary():
    c = Canary()
    yield c
    c.close()


def closed_fetcher(**kw) -> ImageFetcher:
    return ImageFetcher(ImageLimits(fetch_timeout_secs=3), **kw)


# Each URL and why it is refused (what the message says after "Image URL not accessible: ").
REFUSED = [
    ("http://127.0.0.1:{P}/", "127.0.0.1 is a loopback address (127.0.0.0/8)"),
    ("http://localhost:{P}/", "localhost resolves to a loopback address"),
    ("http://2130706433:{P}/", "2130706433 resolves to a loopback address (127.0.0.0/8)"),
    ("http://0x7f.0.0.1:{P}/", "0x7f.0.0.1 resolves to a loopback address (127.0.0.0/8)"),
    ("http://127.1:{P}/", "127.1 resolves to a loopback address (127.0.0.0/8)"),
    ("http://0:{P}/", "0 resolves to an unspecified address (0.0.0.0/8)"),
    ("http://[::1]:{P}/", "::1 is a loopback address (::1/128)"),
    ("http://[::ffff:127.0.0.1]:{P}/", "::ffff:127.0.0.1 is an IPv6 form of a loopback address (127.0.0.0/8)"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local/metadata address (169.254.0.0/16)"),
    ("file:///etc/passwd", "the scheme 'file' is not supported"),
    ("http://127.0.0.1:{P}\\@example.com/", "the URL contains a backslash, a space or a control character"),
    ("http://user:pw@127.0.0.1:{P}/", "the URL carries a user name or password (user@host), which is not allowed"),
    ("gopher://127.0.0.1:{P}/", "the scheme 'gopher' is not supported"),
]


@pytest.mark.parametrize("template, why", REFUSED, ids=[t for t, _ in REFUSED])
async def test_internal_targets_are_refused_without_connecting(template, why, canary):
    fetcher = closed_fetcher()
    try:
        with pytest.raises(ImageUrlNotAccessibleError) as info:
            await fetcher.fetch(template.format(P=canary.port), param="messages[0].content[1]")
        assert info.value.message.startswith(NA + why), info.value.message
        assert (info.value.code, info.value.param) == ("image_url_not_accessible", "messages[0].content[1]")
        assert ":pw" not in info.value.message
    finally:
        await fetcher.aclose()
    assert canary.connections == 0


async def test_public_looking_host_with_private_dns_answer_is_refused(canary):
    async def lying_dns(host, port):
        return ["10.0.0.8", "127.0.0.1"] if host == "images.example.com" else []

    fetcher = closed_fetcher(resolver=lying_dns)
    try:
        with pytest.raises(ImageUrlNotAccessibleError) as info:
            await fetcher.fetch(f"http://images.example.com:{canary.port}/cat.png")
        # The class of the first refused answer, never the answer itself (the gateway's DNS may be internal).
        assert info.value.message == NA + "images.example.com resolves to a private address (10.0.0.0/8)"
    finally:
        await fetcher.aclose()
    assert canary.connections == 0


async def test_one_private_answer_among_public_ones_is_enough_to_refuse(canary):
    async def mixed_dns(host, port):
        return [PUBLIC_IP, "127.0.0.1"]

    fetcher = closed_fetcher(resolver=mixed_dns)
    try:
        with pytest.raises(ImageUrlNotAccessibleError) as info:
            await fetcher.fetch(f"http://mixed.example.com:{canary.port}/")
        assert info.value.message == NA + "mixed.example.com resolves to a loopback address (127.0.0.0/8)"
    finally:
        await fetcher.aclose()
    assert canary.connections == 0


async def test_dns_rebinding_has_no_second_lookup_to_exploit(canary):
    """First answer public, every later answer loopback: the fetcher resolves once and connects to
    the address it checked (seen by the transport), with the original Host header."""
    lookups = []

    async def rebinding_dns(host, port):
        lookups.append(host)
        return [PUBLIC_IP] if len(lookups) == 1 else ["127.0.0.1"]

    seen = []

    def transport(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host, request.headers["host"]))
        return httpx.Response(200, content=png(), headers={"content-type": "image/png"})

    fetcher = closed_fetcher(resolver=rebinding_dns, transport=httpx.MockTransport(transport))
    try:
        image = await fetcher.fetch(f"http://rebind.example.com:{canary.port}/img.png")
    finally:
        await fetcher.aclose()
    assert image.data == png()
    assert lookups == ["rebind.example.com"]
    assert seen == [(PUBLIC_IP, f"rebind.example.com:{canary.port}")]
    assert canary.connections == 0


async def test_redirect_from_allowed_server_to_loopback_is_refused(canary):
    """A real server on 127.0.0.2 (allowed by the operator) redirects to the canary on 127.0.0.1."""
    server = ScriptedServer({"/img.png": redirect_to(f"http://127.0.0.1:{canary.port}/secret")}, host="127.0.0.2")
    fetcher = ImageFetcher(ImageLimits(fetch_timeout_secs=3, allow_private_networks=["127.0.0.2/32"]))
    try:
        with pytest.raises(ImageUrlNotAccessibleError) as info:
            await fetcher.fetch(f"{server.base}/img.png")
        assert (
            info.value.message == NA + "after a redirect from 127.0.0.2, 127.0.0.1 is a loopback address (127.0.0.0/8)"
        )
        assert [path for path, _ in server.requests] == ["/img.png"]
    finally:
        await fetcher.aclose()
        server.close()
    assert canary.connections == 0


def test_address_policy_classification():
    policy = AddressPolicy()
    for refused in [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "::ffff:10.0.0.1",
        "64:ff9b::7f00:1",
        "2002:7f00:1::",
        "224.0.0.1",
        "240.0.0.1",
    ]:
        assert not policy.permits(refused), refused
    for allowed in [PUBLIC_IP, "8.8.8.8", "2606:4700:4700::1111"]:
        assert policy.permits(allowed), allowed
    assert AddressPolicy(["10.0.0.0/8"]).permits("10.9.9.9")


def test_a_refused_address_is_named_by_its_class_and_block():
    policy = AddressPolicy()
    assert {
        address: policy.refusal(address)
        for address in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "::ffff:10.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            PUBLIC_IP,
        ]
    } == {
        "10.1.2.3": "a private address (10.0.0.0/8)",
        "172.16.0.1": "a private address (172.16.0.0/12)",
        "192.168.1.1": "a private address (192.168.0.0/16)",
        "127.0.0.1": "a loopback address (127.0.0.0/8)",
        "169.254.169.254": "a link-local/metadata address (169.254.0.0/16)",
        "100.64.0.1": "a carrier-grade NAT address (100.64.0.0/10)",
        "0.0.0.0": "an unspecified address (0.0.0.0/8)",
        "224.0.0.1": "a multicast address (224.0.0.0/4)",
        "240.0.0.1": "a reserved address (240.0.0.0/4)",
        "255.255.255.255": "the broadcast address (255.255.255.255/32)",
        "::1": "a loopback address (::1/128)",
        "::": "an unspecified address (::/128)",
        "fe80::1": "a link-local address (fe80::/10)",
        "fc00::1": "a private (unique local) address (fc00::/7)",
        "::ffff:10.0.0.1": "an IPv6 form of a private address (10.0.0.0/8)",
        "64:ff9b::7f00:1": "an IPv6 form of a loopback address (127.0.0.0/8)",
        "2002:7f00:1::": "an IPv6 form of a loopback address (127.0.0.0/8)",
        PUBLIC_IP: None,
    }


# Opt-in behaviour against a real local server -------------------------------------------------------


@pytest.fixture()
def local_fetch_limits():
    return ImageLimits(fetch_timeout_secs=3, allow_private_networks=["127.0.0.0/8"], max_image_bytes=10_000)


async def test_allowed_local_server_serves_images_and_5xx_is_retried(local_fetch_limits):
    attempts = {"n": 0}

    def flaky(handler):
        attempts["n"] += 1
        (send_bytes(b"", status=503) if attempts["n"] == 1 else send_bytes(png()))(handler)

    server = ScriptedServer({"/ok.png": send_bytes(png()), "/flaky.png": flaky})
    fetcher = ImageFetcher(local_fetch_limits)
    try:
        assert (await fetcher.fetch(f"{server.base}/ok.png")).data == png()
        assert (await fetcher.fetch(f"{server.base}/flaky.png")).data == png()
        assert attempts["n"] == 2
        with pytest.raises(ImageUrlNotAccessibleError) as info:
            await fetcher.fetch(f"{server.base}/missing.png")  # 404: not retried, not accessible
        assert info.value.message == NA + "the server at 127.0.0.1 answered 404"
    finally:
        await fetcher.aclose()
        server.close()


async def test_size_limit_is_enforced_while_streaming(local_fetch_limits):
    def chunked_big(handler):
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for _ in range(20):
            handler.wfile.write(b"1000\r\n" + b"x" * 4096 + b"\r\n")
        handler.wfile.write(b"0\r\n\r\n")

    server = ScriptedServer({"/declared.png": send_bytes(b"x" * 20_000), "/chunked.png": chunked_big})
    fetcher = ImageFetcher(local_fetch_limits)
    try:
        for path, how in [("/declared.png", "declared 20000"), ("/chunked.png", "sent more")]:
            with pytest.raises(ImageTooLargeError) as info:
                await fetcher.fetch(f"{server.base}{path}", param="messages[0].content[1]")
            assert info.value.message == f"Image is larger than the limit of 10000 bytes: 127.0.0.1 {how}"
            assert (info.value.code, info.value.param) == ("image_too_large", "messages[0].content[1]")
    finally:
        await fetcher.aclose()
        server.close()


async def test_slow_server_hits_the_deadline():
    import threading

    release = threading.Event()

    def slow(handler):
        release.wait(5)

    server = ScriptedServer({"/slow.png": slow})
    fetcher = ImageFetcher(ImageLimits(fetch_timeout_secs=0.5, allow_private_networks=["127.0.0.0/8"]))
    try:
        with pytest.raises(ImageDownloadTimeoutError) as info:
            await fetcher.fetch(f"{server.base}/slow.png")
        assert info.value.message == "Image download timeout: 127.0.0.1 did not answer within 0.5 s"
        assert info.value.code == "image_download_timeout"
    finally:
        release.set()
        await fetcher.aclose()
        server.close()
