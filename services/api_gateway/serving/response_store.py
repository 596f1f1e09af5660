"""Stored responses of the Responses API: kept for `GET /v1/responses/{id}` and continued by `previous_response_id`.

A record is the response object as it was answered, and the conversation items that led to it (every earlier
turn's input and output, in Responses item form), so a follow-up is translated by the same code as any request.
`MemoryResponseStore` keeps them in the gateway (the oldest dropped past `max_entries`, each expiring after
`ttl_secs`); `RedisResponseStore` keeps them in the shared Redis (`vision_proxy.shared_cache`), so a follow-up can
land on any gateway replica. A record over `max_bytes` is not stored (logged): a conversation that large is better
sent whole.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from typing import Protocol

from services.common.config import ModelsConfig, ResponseStoreSettings
from services.common.errors import EngineUnavailableError

log = logging.getLogger(__name__)


class ResponseStore(Protocol):
    """Where stored responses live."""

    async def put(self, response_id: str, record: dict) -> bool: ...

    async def get(self, response_id: str) -> dict | None: ...

    async def delete(self, response_id: str) -> bool: ...

    async def aclose(self) -> None: ...


def _encoded(record: dict, settings: ResponseStoreSettings, response_id: str) -> bytes | None:
    data = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()
    if len(data) > settings.max_bytes:
        log.warning(
            "Response %s not stored: %d bytes is over gateway.responses.max_bytes (%d)",
            response_id,
            len(data),
            settings.max_bytes,
        )
        return None
    return data


class MemoryResponseStore:
    """Stored responses in this gateway's memory, bounded by count and age."""

    def __init__(self, settings: ResponseStoreSettings, clock=time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._records: OrderedDict[str, tuple[float, bytes]] = OrderedDict()  # id -> (expiry, JSON), oldest first

    async def put(self, response_id: str, record: dict) -> bool:
        """Keep `record`; False when it is too large to keep."""
        data = _encoded(record, self._settings, response_id)
        if data is None:
            return False
        self._records[response_id] = (self._clock() + self._settings.ttl_secs, data)
        self._records.move_to_end(response_id)
        while len(self._records) > self._settings.max_entries:
            self._records.popitem(last=False)
        return True

    async def get(self, response_id: str) -> dict | None:
        """The record, or None when unknown or expired."""
        entry = self._records.get(response_id)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._records[response_id]
            return None
        return json.loads(entry[1])

    async def delete(self, response_id: str) -> bool:
        """Forget it; False when it was not there."""
        return (await self.get(response_id)) is not None and self._records.pop(response_id, None) is not None

    async def aclose(self) -> None:
        self._records.clear()


class RedisResponseStore:
    """Stored responses in the shared Redis, so every gateway replica sees them. Unlike the caption cache, a
    Redis that fails is an error the client sees (a 503): a response it asked to store must not vanish."""

    def __init__(self, url: str, settings: ResponseStoreSettings) -> None:
        from redis.asyncio import Redis  # only a gateway configured with a shared Redis needs the client

        self._redis = Redis.from_url(url)
        self._settings = settings

    def _key(self, response_id: str) -> str:
        return f"{self._settings.key_prefix}{response_id}"

    async def put(self, response_id: str, record: dict) -> bool:
        data = _encoded(record, self._settings, response_id)
        if data is None:
            return False
        await self._call(self._redis.set(self._key(response_id), data, ex=self._settings.ttl_secs))
        return True

    async def get(self, response_id: str) -> dict | None:
        data = await self._call(self._redis.get(self._key(response_id)))
        return None if data is None else json.loads(data)

    async def delete(self, response_id: str) -> bool:
        return bool(await self._call(self._redis.delete(self._key(response_id))))

    async def _call(self, awaitable):
        from redis.exceptions import RedisError

        try:
            return await awaitable
        except (RedisError, OSError) as error:
            raise EngineUnavailableError(f"The response store (Redis) is unavailable: {error}") from None

    async def aclose(self) -> None:
        await self._redis.aclose()


def open_response_store(config: ModelsConfig) -> ResponseStore:
    """Redis when the shared cache is configured (`vision_proxy.shared_cache`), else this gateway's memory."""
    settings = config.gateway.responses
    vision = config.vision_model
    shared = vision.vision_proxy.shared_cache if vision is not None else None
    if shared is not None:
        log.info("Stored responses: in the shared Redis (key prefix %s)", settings.key_prefix)
        return RedisResponseStore(shared.url, settings)
    return MemoryResponseStore(settings)
