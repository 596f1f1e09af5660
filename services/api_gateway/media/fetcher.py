"""Fetch an image URL without letting a request reach what it should not (SSRF-safe).

For every hop (the URL and each redirect, at most `max_redirects`): only http/https, no userinfo or
backslashes (parser-confusion tricks), the domain allowlist if configured, ONE DNS resolution whose
every answer must be permitted by the AddressPolicy, and a connection to the address that was checked
(the request goes to the IP, with the original Host header and TLS SNI), so DNS rebinding has no second
lookup to exploit. Proxy environment variables are ignored. Retries (tenacity) only for connection
errors and 5xx answers; one deadline covers the whole fetch; the byte limit is enforced while streaming.
Clients learn only "Image URL not accessible"; the reason goes to the gateway log.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from services.common.config import ImageLimits
from services.common.errors import ImageDownloadTimeoutError, ImageTooLargeError, ImageUrlNotAccessibleError

from .addresses import AddressPolicy

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], Awaitable[list[str]]]
NOT_ACCESSIBLE = "Image URL not accessible"
_REDIRECTS = {301, 302, 303, 307, 308}


async def system_resolver(host: str, port: int) -> list[str]:
    """All addresses the system resolver gives for host (numeric forms like 127.1 included)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


@dataclass(frozen=True)
class FetchedImage:
    """Downloaded bytes and the server's content type."""

    data: bytes
    content_type: str


class _Refused(Exception):
    """This URL may not be fetched; the message is for the log only."""


class _Retryable(Exception):
    """A connection error or a 5xx answer: worth another attempt."""


@dataclass(frozen=True)
class _Target:
    url: httpx.URL
    host: str
    port: int


class ImageFetcher:
    """One per gateway; owns its httpx client."""

    ATTEMPTS = 3

    def __init__(self, limits: ImageLimits, *, resolver: Resolver = system_resolver,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:  # fmt: skip
        self._limits = limits
        self._policy = AddressPolicy(limits.allow_private_networks)
        self._resolver = resolver
        self._client = httpx.AsyncClient(
            trust_env=False, follow_redirects=False, transport=transport,
            timeout=httpx.Timeout(limits.fetch_timeout_secs), headers={"User-Agent": "ProxyVision-image-fetcher/1"},
        )  # fmt: skip

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def fetch(self, url: str, *, param: str | None = None) -> FetchedImage:
        """Download one image or raise our 400 errors (timeout, not accessible, too large)."""
        try:
            async with asyncio.timeout(self._limits.fetch_timeout_secs):
                return await self._follow(url)
        except TimeoutError:
            raise ImageDownloadTimeoutError("Image download timeout", param=param) from None
        except _Refused as why:
            log.info("Image fetch refused (%s): %s", why, _redact(url))
            raise ImageUrlNotAccessibleError(NOT_ACCESSIBLE, param=param) from None
        except ImageTooLargeError as error:
            error.param = param
            raise

    async def _follow(self, url: str) -> FetchedImage:
        for _ in range(self._limits.max_redirects + 1):
            target = self._check_url(url)
            address = await self._resolve(target)
            result = await self._get_with_retries(target, address)
            if isinstance(result, FetchedImage):
                return result
            try:
                url = urljoin(url, result)  # a redirect: the next hop is checked like the first
            except ValueError as exc:  # a Location that is not a URL ("http://[::1")
                raise _Refused(f"bad redirect location: {exc}") from None
        raise _Refused(f"more than {self._limits.max_redirects} redirects")

    def _check_url(self, url: str) -> _Target:
        if "\\" in url or any(ord(ch) < 0x21 for ch in url):
            raise _Refused("backslash or control character in URL")
        try:
            parts = urlsplit(url)
        except ValueError as exc:  # an unclosed IPv6 bracket; the schema refuses it first, a redirect may not
            raise _Refused(f"malformed URL: {exc}") from None
        if parts.scheme.lower() not in ("http", "https"):
            raise _Refused(f"scheme {parts.scheme!r} not allowed")
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            raise _Refused("userinfo in URL")
        try:
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            raise _Refused(f"bad host or port: {exc}") from None
        if not host:
            raise _Refused("no host")
        allowed = self._limits.allowed_domains
        if allowed and not any(host == d or host.endswith("." + d) for d in (a.lower().strip(".") for a in allowed)):
            raise _Refused(f"host {host} not in allowed_domains")
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise _Refused(f"invalid URL: {exc}") from None
        return _Target(parsed, host, port or (443 if parts.scheme.lower() == "https" else 80))

    async def _resolve(self, target: _Target) -> str:
        try:
            addresses = await self._resolver(target.host, target.port)
        except (OSError, UnicodeError) as exc:  # UnicodeError: a host IDNA cannot encode ("a..b", a 64-char label)
            raise _Refused(f"cannot resolve {target.host}: {exc}") from None
        if not addresses:
            raise _Refused(f"no address for {target.host}")
        refused = [a for a in addresses if not self._policy.permits(a)]
        if refused:
            raise _Refused(f"{target.host} resolves to non-public address(es) {', '.join(refused)}")
        return addresses[0]

    async def _get_with_retries(self, target: _Target, address: str) -> FetchedImage | str:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.ATTEMPTS), wait=wait_exponential(multiplier=0.2, max=2),
            retry=retry_if_exception_type(_Retryable), reraise=True,
        )  # fmt: skip
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._get_once(target, address)
        except _Retryable as exc:
            raise _Refused(f"gave up after {self.ATTEMPTS} attempts: {exc}") from None
        raise AssertionError("unreachable")

    async def _get_once(self, target: _Target, address: str) -> FetchedImage | str:
        host_header = target.url.netloc.decode("ascii")
        request = self._client.build_request(
            "GET", target.url.copy_with(host=address), headers={"Host": host_header},
            extensions={"sni_hostname": target.host} if target.url.scheme == "https" else {},
        )  # fmt: skip
        try:
            response = await self._client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from None
        except httpx.HTTPError as exc:
            raise _Refused(f"{type(exc).__name__}: {exc}") from None
        async with aclosing(response):
            if response.status_code in _REDIRECTS and "location" in response.headers:
                return response.headers["location"]
            if response.status_code >= 500:
                raise _Retryable(f"HTTP {response.status_code}")
            if response.status_code != 200:
                raise _Refused(f"HTTP {response.status_code}")
            return FetchedImage(await self._read_limited(response), response.headers.get("content-type", ""))

    async def _read_limited(self, response: httpx.Response) -> bytes:
        limit = self._limits.max_image_bytes
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ImageTooLargeError(f"Image is larger than the limit of {limit} bytes")
        chunks, total = [], 0
        try:
            async for chunk in response.aiter_bytes():
                total += len(chunk)
                if total > limit:
                    raise ImageTooLargeError(f"Image is larger than the limit of {limit} bytes")
                chunks.append(chunk)
        except (httpx.ReadError, httpx.RemoteProtocolError) as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from None
        return b"".join(chunks)


def _redact(url: str) -> str:
    """URLs may carry tokens in their query; log scheme, host and path only."""
    try:
        parts = urlsplit(url)
    except ValueError:  # the URL was refused for being malformed: log that much of it
        return url.split("?", 1)[0][:80]
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}{parts.path[:80]}"
