"""The shared caption cache: a Redis (or Valkey) server behind every vision replica's in-process LRU, so replicas
share captions and a restarted one starts warm (`vision_proxy.shared_cache` in models.yaml).

It is an optimisation, never a dependency: a Redis that is down, slow, refusing or asking for another password
answers "miss" within `timeout_ms`, and after a failure it is not called at all for `retry_secs` (a circuit
breaker), then tried again by one call. The outage is logged once (WARNING) and its end once (INFO).
Lookups are one MGET per request; writes are fire-and-forget tasks that never delay an answer.
Single flight stays in-process (flights.py): replicas may both caption an image nobody has shared yet.

Event-loop only, like the in-process cache. A Redis Cluster is not supported (MGET spans key slots).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from services.common.config import ConfigError, SharedCaptionCache
from services.common.metrics import VisionMetrics

from .cache import CachedCaption, CacheKey

log = logging.getLogger(__name__)

# Version of the stored value's layout: a value written by another layout is a miss, not a wrong caption.
FORMAT_VERSION = 1
# Writes queued while Redis is slow; past this many, new captions are simply not shared (they are cached here).
MAX_PENDING_WRITES = 256


def redis_key(prefix: str, key: CacheKey) -> str:
    """`prefix` + a digest of every CacheKey field by name: a change of any field (or a new field) is a new key,
    and the digest is the same in every process and Python version (no `hash()`)."""
    canonical = json.dumps({f.name: getattr(key, f.name) for f in fields(key)}, sort_keys=True)
    return prefix + hashlib.sha256(canonical.encode()).hexdigest()


def encode_caption(value: CachedCaption) -> bytes:
    """JSON of the caption's fields and FORMAT_VERSION."""
    return json.dumps({"v": FORMAT_VERSION, **asdict(value)}, ensure_ascii=False).encode()


_FIELD_TYPES = {f.name: f.type for f in fields(CachedCaption)}


def decode_caption(raw: bytes | None) -> CachedCaption | None:
    """The caption `encode_caption` wrote; None for anything else (absent, another version, not JSON, a field
    missing or of the wrong type): a value we cannot trust is a miss."""
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("v") != FORMAT_VERSION:
        return None
    values = {}
    for name, kind in _FIELD_TYPES.items():
        value = data.get(name)
        wanted = int if kind in ("int", int) else str
        if type(value) is not wanted:  # bool is not an int token count
            return None
        values[name] = value
    return CachedCaption(**values)


def display_url(url: str) -> str:
    """`url` with its password masked, for logs and GetModelInfo."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit(parts._replace(netloc=netloc))


class CircuitBreaker:
    """Closed while calls succeed. A failure opens it for `retry_secs`: `allow()` says no, so a dead Redis costs
    one timeout per period, not one per request. When the period is over the next call is let through (and the
    period restarts, so concurrent calls do not all probe); its success closes the breaker."""

    def __init__(self, retry_secs: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._retry_secs = retry_secs
        self._clock = clock
        self._open = False
        self._retry_at = 0.0

    @property
    def is_open(self) -> bool:
        return self._open

    def allow(self) -> bool:
        """May a call go to Redis now?"""
        if not self._open:
            return True
        now = self._clock()
        if now < self._retry_at:
            return False
        self._retry_at = now + self._retry_secs  # this call is the probe
        return True

    def succeeded(self) -> bool:
        """Record a success; True when this closes an open breaker (Redis is back)."""
        was_open, self._open = self._open, False
        return was_open

    def failed(self) -> bool:
        """Record a failure; True when this opens a closed breaker (Redis just went away)."""
        was_open, self._open = self._open, True
        self._retry_at = self._clock() + self._retry_secs
        return not was_open


class SharedCaptionStore:
    """The Redis side of the caption cache for one vision model: `get_many` at a request's in-process misses,
    `put` when a caption lands, `check` at startup, `close` at shutdown. Nothing here raises on Redis trouble."""

    def __init__(
        self,
        settings: SharedCaptionCache,
        *,
        model: str,
        metrics: VisionMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.url = display_url(settings.url)
        self._model = model
        self._metrics = metrics
        self._timeout = settings.timeout_ms / 1000
        self._breaker = CircuitBreaker(settings.retry_secs, clock)
        self._writes: set[asyncio.Task] = set()
        try:
            # No retries inside redis-py: one attempt within our deadline, then the breaker decides.
            self._client = Redis.from_url(
                settings.url,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=0,
            )
        except ValueError as exc:
            raise ConfigError(f"vision_proxy.shared_cache.url {self.url!r}: {exc}") from None

    @property
    def up(self) -> bool:
        """False while the breaker is open (the last call failed)."""
        return not self._breaker.is_open

    def describe(self) -> str:
        """One line for GetModelInfo and the logs: the URL (password masked), whether it answers, the TTL."""
        state = "up" if self.up else f"down, retrying every {self.settings.retry_secs:g}s"
        return f"{self.url} ({state}; ttl {self.settings.ttl_secs}s)"

    async def check(self) -> bool:
        """PING once (at startup), so the log and the up gauge say at once whether the cache is reachable."""
        ok = await self._call(lambda: self._client.ping()) is not _FAILED
        if ok:
            log.info(
                "Shared caption cache %s: reachable (ttl %ds, timeout %dms)",
                self.url,
                self.settings.ttl_secs,
                self.settings.timeout_ms,
            )
        return ok

    async def get_many(self, keys: Sequence[CacheKey]) -> list[CachedCaption | None]:
        """The shared caption of each key (None: not there, unreadable, or Redis did not answer), in one MGET."""
        if not keys:
            return []
        names = [redis_key(self.settings.key_prefix, key) for key in keys]
        raw = await self._call(lambda: self._client.mget(names))
        requests = self._metrics.shared_cache_requests
        if raw is _FAILED:
            requests.labels(self._model, "error").inc(len(keys))
            return [None] * len(keys)
        found = [decode_caption(value) for value in raw]
        hits = sum(value is not None for value in found)
        requests.labels(self._model, "hit").inc(hits)
        requests.labels(self._model, "miss").inc(len(keys) - hits)
        return found

    def put(self, key: CacheKey, value: CachedCaption) -> None:
        """Share a finished caption: SET ... EX ttl_secs in a task of its own (the caller's answer never waits)."""
        if len(self._writes) >= MAX_PENDING_WRITES:
            log.debug("Shared caption cache: %d writes pending, not sharing this caption", len(self._writes))
            return
        name = redis_key(self.settings.key_prefix, key)
        task = asyncio.get_running_loop().create_task(
            self._call(lambda: self._client.set(name, encode_caption(value), ex=self.settings.ttl_secs))
        )
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def flush(self) -> None:
        """Wait for the writes in progress (each is bounded by the timeout)."""
        if self._writes:
            await asyncio.wait(list(self._writes), timeout=self._timeout * 2)

    async def close(self) -> None:
        """Let pending writes finish, then close the connections."""
        await self.flush()
        for task in list(self._writes):
            task.cancel()
        await self._client.aclose()

    async def _call(self, command: Callable[[], object]):
        """Run one Redis command within the deadline, through the breaker; its reply, or _FAILED."""
        if not self._breaker.allow():
            return _FAILED
        try:
            async with asyncio.timeout(self._timeout):
                reply = await command()
        except Exception as exc:  # noqa: BLE001 - whatever Redis or redis-py raises, the caption must not fail
            self._failed(exc)
            return _FAILED
        self._metrics.shared_cache_up.labels(self._model).set(1)
        if self._breaker.succeeded():
            log.info("Shared caption cache %s is back: sharing captions again", self.url)
        return reply

    def _failed(self, exc: Exception) -> None:
        self._metrics.shared_cache_up.labels(self._model).set(0)
        if self._breaker.failed():
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            log.warning(
                "Shared caption cache %s unavailable (%s): captions are cached in this replica only; "
                "retrying every %gs",
                self.url,
                reason,
                self.settings.retry_secs,
            )


_FAILED = object()  # _call's "no reply" (None is a reply: MGET of nothing, SET's nil)
