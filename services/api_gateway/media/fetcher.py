"""Fetch an image URL without letting a request reach what it should not (SSRF-safe).

For every hop (the URL and each redirect, at most `max_redirects`): only http/https, no userinfo or
backslashes (parser-confusion tricks), the domain allowlist if configured, ONE DNS resolution whose
every answer must be permitted by the AddressPolicy, and a connection to the address that was checked
(the request goes to the IP, with the original Host header and TLS SNI), so DNS rebinding has no second
lookup to exploit. Proxy environment variables are ignored. Retries (tenacity) only for connection
errors and 5xx answers; one deadline covers the whole fetch; the byte limit is enforced while streaming.
A refusal tells the client why, naming the host it sent ("Image URL not accessible: localhost resolves to a
loopback address (127.0.0.0/8)"), and only what the client could find out from outside: the address class,
never the address a name resolved to; the status a server answered, never a network error's text (that goes to
the log). The ImageUrlNotAccessibleError docstring says why that is safe.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from services.common.config import ImageLimits
from services.common.errors import ImageDownloadTimeoutError, ImageTooLargeError, ImageUrlNotAccessibleError

from .addresses import AddressPolicy, ip_of

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], Awaitable[list[str]]]
NOT_ACCESSIBLE = "Image URL not accessible"  # the brief's words; the reason follows after a colon
_SCHEMES = "use an http(s) URL or a data:image/...;base64 URL"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")  # RFC 3986's scheme, as urlsplit reads it
_REDIRECTS = {301, 302, 303, 307, 308}


async def system_resolver(host: str, port: int) -> list[str]:
    """All addresses the system resolver gives for host (numeric forms like 127.1 included)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


@dataclass(frozen=True)
class FetchedImage:
    """Downloaded bytes, the server's content type, and the host that sent them (the last hop's)."""

    data: bytes
    content_type: str
    host: str


class _Refused(Exception):
    """This URL may not or cannot be fetched: the message says why (for the client), `detail` adds what only the
    log may show (an exception's text)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.detail = detail


class _Retryable(_Refused):
    """A connection error or a 5xx answer: worth another attempt."""


@dataclass(frozen=True)
class _Target:
    url: httpx.URL
    host: str
    port: int


class ImageFetcher:
    """One per gateway; owns its httpx client."""

    ATTEMPTS = 3

    def __init__(
        self,
        limits: ImageLimits,
        *,
        resolver: Resolver = system_resolver,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._limits = limits
        self._policy = AddressPolicy(limits.allow_private_networks)
        self._resolver = resolver
        self._client = httpx.AsyncClient(
            trust_env=False,
            follow_redirects=False,
            transport=transport,
            timeout=httpx.Timeout(limits.fetch_timeout_secs),
            headers={"User-Agent": "ProxyVision-image-fetcher/1"},
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def fetch(self, url: str, *, param: str | None = None) -> FetchedImage:
        """Download one image or raise our 400 errors (timeout, not accessible, too large), each saying why."""
        hosts: list[str] = []  # every hop's host, for the timeout's message
        try:
            async with asyncio.timeout(self._limits.fetch_timeout_secs):
                return await self._follow(url, hosts)
        except TimeoutError:
            where = _shown(hosts[-1]) if hosts else "the image server"
            raise ImageDownloadTimeoutError(
                f"Image download timeout: {where} did not answer within {self._limits.fetch_timeout_secs:g} s",
                param=param,
            ) from None
        except _Refused as why:
            log.info("Image fetch refused (%s%s): %s", why, f"; {why.detail}" if why.detail else "", _redact(url))
            raise ImageUrlNotAccessibleError(f"{NOT_ACCESSIBLE}: {why}", param=param) from None
        except ImageTooLargeError as error:
            error.param = param
            raise

    async def _follow(self, url: str, hosts: list[str]) -> FetchedImage:
        redirected_by: str | None = None
        for _ in range(self._limits.max_redirects + 1):
            try:
                target = self._check_url(url)
                hosts.append(target.host)
                address = await self._resolve(target)
                result = await self._get_with_retries(target, address)
            except _Refused as why:
                if redirected_by is None:
                    raise
                raise _Refused(f"after a redirect from {_shown(redirected_by)}, {why}", why.detail) from None
            if isinstance(result, FetchedImage):
                return result
            redirected_by = target.host
            try:
                url = urljoin(url, result)  # a redirect: the next hop is checked like the first
            except ValueError:  # a Location that is not a URL ("http://[::1")
                raise _Refused(f"{_shown(target.host)} redirected to a Location that is not a URL") from None
        raise _Refused(f"more than {self._limits.max_redirects} redirects, starting at {_shown(hosts[0])}")

    def _check_url(self, url: str) -> _Target:
        if "\\" in url or any(ord(ch) < 0x21 for ch in url):
            raise _Refused("the URL contains a backslash, a space or a control character")
        try:
            parts = urlsplit(url)
        except ValueError as exc:  # an unclosed IPv6 bracket; the schema refuses it first, a redirect may not
            raise _Refused(f"the URL is malformed ({exc})") from None
        if (refusal := scheme_refusal(url)) is not None:
            raise _Refused(refusal)
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            raise _Refused("the URL carries a user name or password (user@host), which is not allowed")
        try:
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            raise _Refused(f"the URL's host or port is invalid ({exc})") from None
        if not host:
            raise _Refused("the URL has no host")
        allowed = self._limits.allowed_domains
        if allowed and not any(host == d or host.endswith("." + d) for d in (a.lower().strip(".") for a in allowed)):
            raise _Refused(f"{_shown(host)} is not among the image domains this gateway allows")
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise _Refused(f"the URL is invalid ({exc})") from None
        return _Target(parsed, host, port or (443 if parts.scheme.lower() == "https" else 80))

    async def _resolve(self, target: _Target) -> str:
        host = _shown(target.host)
        try:
            addresses = await self._resolver(target.host, target.port)
        except UnicodeError:  # a host IDNA cannot encode ("a..b", a 64-character label)
            raise _Refused(f"{host} is not a valid host name") from None
        except OSError:
            raise _Refused(f"the host name {host} does not resolve") from None
        if not addresses:
            raise _Refused(f"the host name {host} does not resolve")
        # The first refused answer's class, never the address: a name's address may be an internal DNS answer.
        refusal = next((r for r in map(self._policy.refusal, addresses) if r is not None), None)
        if refusal is not None:
            raise _Refused(
                f"{host} is {refusal}" if ip_of(target.host) is not None else f"{host} resolves to {refusal}"
            )
        return addresses[0]

    async def _get_with_retries(self, target: _Target, address: str) -> FetchedImage | str:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.ATTEMPTS),
            wait=wait_exponential(multiplier=0.2, max=2),
            retry=retry_if_exception_type(_Retryable),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._get_once(target, address)
        except _Retryable as exc:
            raise _Refused(f"{exc} ({self.ATTEMPTS} attempts)", exc.detail) from None
        raise AssertionError("unreachable")

    async def _get_once(self, target: _Target, address: str) -> FetchedImage | str:
        host_header = target.url.netloc.decode("ascii")
        request = self._client.build_request(
            "GET",
            target.url.copy_with(host=address),
            headers={"Host": host_header},
            extensions={"sni_hostname": target.host} if target.url.scheme == "https" else {},
        )
        host = _shown(target.host)
        try:
            response = await self._client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise _Retryable(f"could not connect to {host}", _text(exc)) from None
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise _Retryable(f"{host} broke off the connection", _text(exc)) from None
        except httpx.TimeoutException:  # httpx's own per-read timeout: the same answer as the overall deadline
            raise TimeoutError from None
        except httpx.HTTPError as exc:
            raise _Refused(f"the request to {host} failed", _text(exc)) from None
        async with aclosing(response):
            status = response.status_code
            if status in _REDIRECTS and "location" in response.headers:
                return response.headers["location"]
            if status >= 500:
                raise _Retryable(f"the server at {host} answered {status}")
            if status != 200:
                missing = " with no Location to follow" if status in _REDIRECTS else ""
                raise _Refused(f"the server at {host} answered {status}{missing}")
            content_type = response.headers.get("content-type", "")
            return FetchedImage(await self._read_limited(response, host), content_type, target.host)

    async def _read_limited(self, response: httpx.Response, host: str) -> bytes:
        limit = self._limits.max_image_bytes
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ImageTooLargeError(f"Image is larger than the limit of {limit} bytes: {host} declared {declared}")
        chunks, total = [], 0
        try:
            async for chunk in response.aiter_bytes():
                total += len(chunk)
                if total > limit:
                    raise ImageTooLargeError(f"Image is larger than the limit of {limit} bytes: {host} sent more")
                chunks.append(chunk)
        except (httpx.ReadError, httpx.RemoteProtocolError) as exc:
            raise _Retryable(f"{host} broke off the connection", _text(exc)) from None
        except httpx.TimeoutException:
            raise TimeoutError from None
        except httpx.HTTPError as exc:  # a body its Content-Encoding does not decode
            raise _Refused(f"{host} sent a body that cannot be read", _text(exc)) from None
        return b"".join(chunks)


def scheme_refusal(url: str) -> str | None:
    """Why a URL is not fetched for its scheme, or None for http and https (every hop is asked; so is the image
    loader, before it calls the fetcher)."""
    scheme = url.partition(":")[0] if _SCHEME.match(url) else ""
    if scheme.lower() in ("http", "https"):
        return None
    what = f"the scheme {scheme[:20]!r} is not supported" if scheme else "the URL has no scheme"
    return f"{what} ({_SCHEMES})"


def _shown(host: str) -> str:
    """A host as the client sent it, cut short: a message must stay readable whatever was sent."""
    return host if len(host) <= 100 else host[:100] + "…"


def _text(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def _redact(url: str) -> str:
    """URLs may carry tokens in their query; log scheme, host and path only."""
    try:
        parts = urlsplit(url)
    except ValueError:  # the URL was refused for being malformed: log that much of it
        return url.split("?", 1)[0][:80]
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}{parts.path[:80]}"
