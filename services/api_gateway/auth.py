"""API keys: with keys configured, every `/v1` request must carry `Authorization: Bearer <key>` (or, as Anthropic's
clients send it, `x-api-key: <key>`). A refusal under /v1/messages is in Anthropic's error shape (errors.py).

An ASGI middleware rather than a FastAPI dependency, because:
- it guards a path prefix, so a `/v1` route added later is covered without anyone remembering a
  `Depends` (and unknown `/v1` paths answer 401, not a 404 that tells a stranger which routes exist);
- it answers before the app runs: no body is read or parsed, no engine is called and no stream is
  started for a caller without a key (a dependency runs after FastAPI has read and validated the body);
- the 401 is sent as one plain ASGI response, so a streamed route can never have sent a byte first.

Keys are compared in constant time: the presented key and every configured key are hashed with SHA-256
(equal lengths, so `hmac.compare_digest` leaks nothing about a key's length) and compared against *every*
configured key, with no early exit (the time does not say which key matched, or how many were tried).
Only the digests are kept in memory. Nothing here logs or echoes a key.

`gateway.api_keys_file` is re-read when it changes (checked at most once a second, on requests): a
Kubernetes Secret mounted as a directory is updated in place, so keys rotate without a restart. A re-read
that fails keeps the keys in force; a file that becomes empty locks `/v1` (authentication never turns
itself off).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from fastapi import FastAPI

from services.common.config import ConfigError, GatewaySettings, api_key_problem
from services.common.errors import ProxyVisionError

from .errors import app_path, error_body

log = logging.getLogger(__name__)

PROTECTED_PREFIX = "/v1"
OPERATIONS_PATHS = frozenset({"/health", "/ready", "/metrics"})
RECHECK_SECS = 1.0


class AuthenticationError(ProxyVisionError):
    """The request has no API key, or not one of ours (HTTP 401, which the OpenAI SDKs raise as
    `openai.AuthenticationError`). Type and codes as OpenAI's API answers them."""

    grpc_status = grpc.StatusCode.UNAUTHENTICATED
    http_status = 401
    error_type = "invalid_request_error"
    default_code = "invalid_api_key"


class MissingKeyError(AuthenticationError):
    """No Authorization header at all: OpenAI's code is null then (and "invalid_api_key" for a wrong key)."""

    default_code = None


# OpenAI echoes part of a wrong key; we never do.
MISSING_KEY = MissingKeyError(
    "You didn't provide an API key. This server needs one in an Authorization header "
    "using Bearer auth (Authorization: Bearer YOUR_KEY), or in an x-api-key header."
)
MALFORMED_HEADER = AuthenticationError("The Authorization header must be 'Bearer YOUR_KEY'.")
INCORRECT_KEY = AuthenticationError("Incorrect API key provided. Ask the operator of this server for a valid key.")


def digest(key: str) -> bytes:
    """The SHA-256 of a key: what is stored and compared."""
    return hashlib.sha256(key.encode("utf-8")).digest()


def key_matches(presented: str, digests: Sequence[bytes]) -> bool:
    """Whether `presented` is one of the keys with these digests, in time that depends only on how many
    keys there are: every digest is compared, whatever matched before."""
    candidate = digest(presented)
    found = False
    for known in digests:
        found |= hmac.compare_digest(candidate, known)
    return found


def parse_key_file(text: str, source: str) -> list[str]:
    """One key per line; blank lines and lines starting with '#' are skipped, spaces around a key too.
    ConfigError naming the line (never the key) for a line that cannot be a key."""
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        problem = api_key_problem(key)
        if problem:
            raise ConfigError(f"{source}: line {number}: {problem}")
        keys.append(key)
    return keys


def _signature(path: Path) -> tuple[int, int, int]:
    # A Secret update swaps the file behind a symlink (new inode); an edit changes size or mtime.
    stat = os.stat(path)
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


class ApiKeys:
    """The accepted keys: the configured list plus a file re-read when it changes. Holds digests only."""

    def __init__(
        self,
        keys: Sequence[str],
        file: Path | None = None,
        *,
        recheck_secs: float = RECHECK_SECS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inline = tuple(digest(k) for k in keys)
        self._file = file
        self._recheck_secs = recheck_secs
        self._clock = clock
        self._file_digests: tuple[bytes, ...] = ()
        self._file_signature: tuple[int, int, int] | None = None
        self._checked_at = clock()
        if file is not None:
            try:
                self._load_file()
            except OSError as exc:
                raise ConfigError(f"gateway.api_keys_file: cannot read {file}: {exc.strerror or exc}") from None
        if not self.count:
            where = (
                f"gateway.api_keys_file: {file} has no keys (one per line; '#' starts a comment)"
                if file
                else "no API keys"
            )
            raise ConfigError(where)

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> ApiKeys | None:
        """The keys of a config, or None when it sets none (the gateway is then open, as without this module)."""
        if not settings.api_keys and not settings.api_keys_file:
            return None
        return cls(settings.api_keys, Path(settings.api_keys_file) if settings.api_keys_file else None)

    @property
    def count(self) -> int:
        """How many keys are accepted now."""
        return len(self._inline) + len(self._file_digests)

    def matches(self, presented: str) -> bool:
        """Whether `presented` is an accepted key (constant time over all keys, see `key_matches`)."""
        self._refresh()
        return key_matches(presented, self._inline + self._file_digests)

    def _load_file(self) -> None:
        assert self._file is not None
        signature = _signature(self._file)
        keys = parse_key_file(self._file.read_text(encoding="utf-8"), str(self._file))
        self._file_digests = tuple(digest(k) for k in keys)
        self._file_signature = signature

    def _refresh(self) -> None:
        """Re-read the file if it changed; at most once per `recheck_secs` (a stat, on the event loop: cheap)."""
        if self._file is None or self._clock() - self._checked_at < self._recheck_secs:
            return
        self._checked_at = self._clock()
        try:
            if _signature(self._file) == self._file_signature:
                return
            self._load_file()
        except (OSError, UnicodeDecodeError, ConfigError) as exc:
            log.warning(
                "API key file %s could not be re-read (%s); the keys read before stay in force",
                self._file,
                exc.strerror if isinstance(exc, OSError) else exc,
            )
            return
        if self._file_digests:
            log.info(
                "API key file %s re-read: %d key(s) from it, %d in all", self._file, len(self._file_digests), self.count
            )
        else:
            log.warning(
                "API key file %s re-read: it has no keys now; only gateway.api_keys are accepted (%d)",
                self._file,
                self.count,
            )


@dataclass(frozen=True)
class KeyPolicy:
    """Which paths need a key: `/v1` and everything under it; `/health`, `/ready` and `/metrics` too when
    `protect_operations` (gateway.api_keys_protect_health). The web page and its assets stay open: the
    page asks for the key itself."""

    protect_operations: bool = False

    def guards(self, path: str) -> bool:
        if path == PROTECTED_PREFIX or path.startswith(PROTECTED_PREFIX + "/"):
            return True
        return self.protect_operations and path in OPERATIONS_PATHS


def bearer_token(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; "" for another scheme or an empty token,
    None when there is no Authorization header."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


def presented_key(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """The key a request presents: its Bearer token, else its `x-api-key` header (Anthropic's SDKs and Claude
    Code send that one); otherwise what `bearer_token` says ("" for another scheme, None without the header)."""
    token = bearer_token(headers)
    if token:
        return token
    for name, value in headers:
        if name.lower() == b"x-api-key" and (key := value.decode("latin-1").strip()):
            return key
    return token


class ApiKeyMiddleware:
    """Answers 401 (OpenAI's shape; Anthropic's under /v1/messages) to a guarded request without an accepted key;
    passes everything else."""

    def __init__(self, app, keys: ApiKeys, policy: KeyPolicy) -> None:
        self.app = app
        self._keys = keys
        self._policy = policy

    async def __call__(self, scope, receive, send) -> None:
        # A lifespan scope has no path: it passes before the path is read.
        path = app_path(scope) if scope["type"] in ("http", "websocket") else ""
        if scope["type"] not in ("http", "websocket") or not self._policy.guards(path):
            await self.app(scope, receive, send)
            return
        token = presented_key(scope["headers"])
        if token is None:
            refusal = MISSING_KEY
        elif not token:
            refusal = MALFORMED_HEADER
        elif not self._keys.matches(token):
            refusal = INCORRECT_KEY
        else:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # policy violation; we serve no websockets anyway
            return
        status, payload = error_body(refusal, path)
        body = json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="proxyvision"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def install_api_keys(app: FastAPI, settings: GatewaySettings) -> KeyPolicy | None:
    """Guard `app` with the keys of `settings`; returns the policy (for the OpenAPI document), or None when no
    keys are configured. ConfigError for a key file that cannot be read or has no keys."""
    keys = ApiKeys.from_settings(settings)
    if keys is None:
        return None
    policy = KeyPolicy(protect_operations=settings.api_keys_protect_health)
    app.add_middleware(ApiKeyMiddleware, keys=keys, policy=policy)
    where = "/v1, /health, /ready and /metrics" if policy.protect_operations else "/v1"
    source = f" (and {settings.api_keys_file}, re-read when it changes)" if settings.api_keys_file else ""
    log.info("API keys required on %s: %d key(s)%s", where, keys.count, source)
    return policy
