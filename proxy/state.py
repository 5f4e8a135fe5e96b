"""Where a proxy keeps state other requests reuse: in this process, or in Redis for replicas.

`KeyValueStore` is a small async key/value interface with a TTL per entry and a size
cap, namespaced so several users share one backend: the compression cache today, the
originals that reversible compression keeps tomorrow. Values are bytes (callers store
JSON or raw bytes; nothing is pickled).

- `MemoryStore` (the default): an LRU in this process, capped by entries and bytes.
- `RedisStore` (``[state] redis = "redis://host:6379/0"``): every replica behind a load
  balancer sees what any of them stored. Entries expire by TTL; one over
  `max_value_bytes` is not stored; the total is Redis's own `maxmemory` (set an LRU
  eviction policy such as ``allkeys-lru`` there). A Redis that cannot be reached
  degrades to a miss (get) or a skipped write (set), logged once per outage, so the
  proxy keeps serving.
"""

from __future__ import annotations

import logging
import os
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("ctxzip.proxy")

REDIS_SCHEMES = ("redis", "rediss", "unix")


@dataclass
class StateConfig:
    """``[state]``: shared state for proxy replicas (empty `redis`: this process only).

    `redis` may be ``env:NAME`` so a password in the URL stays out of the file.
    """

    redis: str = ""
    prefix: str = "ctxzip"  # key prefix: replicas that share state use the same one
    ttl_s: float = 24 * 3600.0  # entries expire after this long (0: never)
    max_value_bytes: int = 4 * 1024 * 1024  # larger values are not stored
    timeout_s: float = 0.5  # one Redis call; past it the call counts as a miss

    def url(self) -> str:
        """The Redis URL, with an ``env:NAME`` reference resolved."""
        value = self.redis
        if value.startswith("env:"):
            value = os.environ.get(value[4:], "")
        return value

    def check(self) -> None:
        """Raise ValueError on an unusable setting."""
        if self.redis and not self.redis.startswith("env:"):
            scheme = urlsplit(self.redis).scheme
            if scheme not in REDIS_SCHEMES:
                raise ValueError(f"state.redis must be a {'/'.join(REDIS_SCHEMES)}:// URL")
        if self.ttl_s < 0:
            raise ValueError("state.ttl_s must be >= 0")
        if self.max_value_bytes < 1:
            raise ValueError("state.max_value_bytes must be >= 1")
        if self.timeout_s <= 0:
            raise ValueError("state.timeout_s must be > 0")


class KeyValueStore(ABC):
    """Bytes by key, in a namespace, with a TTL per entry; misses are None."""

    @abstractmethod
    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of `keys` (None where missing or expired), in order."""

    @abstractmethod
    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> bool:
        """Store `value` (default TTL when None); False when it was not stored."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Forget `key` (no error when it is not there)."""

    async def get(self, key: str) -> bytes | None:
        """The value of `key`, or None."""
        return (await self.get_many([key]))[0]

    async def close(self) -> None:  # noqa: B027 - optional
        """Release connections."""


class MemoryStore(KeyValueStore):
    """An LRU in this process, capped by entries and by total bytes of values."""

    def __init__(
        self,
        max_items: int = 4096,
        max_bytes: int = 256 * 1024 * 1024,
        ttl_s: float = 0.0,
        max_value_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.max_value_bytes = max_value_bytes
        self._data: OrderedDict[str, tuple[bytes, float]] = OrderedDict()  # value, expiry
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        """Forget everything."""
        self._data.clear()
        self._bytes = 0

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        now = time.monotonic()
        out: list[bytes | None] = []
        for key in keys:
            entry = self._data.get(key)
            if entry is not None and entry[1] and entry[1] <= now:
                self._drop(key)
                entry = None
            if entry is not None:
                self._data.move_to_end(key)
            out.append(None if entry is None else entry[0])
        return out

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> bool:
        if self.max_items <= 0 or len(value) > min(self.max_value_bytes, self.max_bytes):
            return False
        ttl = self.ttl_s if ttl_s is None else ttl_s
        self._drop(key)
        self._data[key] = (value, time.monotonic() + ttl if ttl else 0.0)
        self._bytes += len(value)
        while len(self._data) > self.max_items or self._bytes > self.max_bytes:
            self._drop(next(iter(self._data)))
        return True

    async def delete(self, key: str) -> None:
        self._drop(key)

    def _drop(self, key: str) -> None:
        entry = self._data.pop(key, None)
        if entry is not None:
            self._bytes -= len(entry[0])


class RedisStore(KeyValueStore):
    """Redis (``redis.asyncio``) under ``<prefix>:<namespace>:``; TTL by ``SET PX``."""

    def __init__(self, url: str, namespace: str, config: StateConfig | None = None) -> None:
        import redis.asyncio as aioredis

        self.config = config or StateConfig(redis=url)
        self.prefix = f"{self.config.prefix}:{namespace}:"
        timeout = self.config.timeout_s
        self.client: Any = aioredis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._down = False

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _failed(self, exc: Exception) -> None:
        if not self._down:
            log.warning("shared state unavailable (%s); serving without it", type(exc).__name__)
        self._down = True

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        try:
            values = await self.client.mget([self._key(k) for k in keys])
        except Exception as exc:  # an outage is a miss, never a failed request
            self._failed(exc)
            return [None] * len(keys)
        self._down = False
        return [v if isinstance(v, bytes) else None for v in values]

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> bool:
        if len(value) > self.config.max_value_bytes:
            return False
        ttl = self.config.ttl_s if ttl_s is None else ttl_s
        try:
            await self.client.set(self._key(key), value, px=int(ttl * 1000) if ttl else None)
        except Exception as exc:
            self._failed(exc)
            return False
        self._down = False
        return True

    async def delete(self, key: str) -> None:
        try:
            await self.client.delete(self._key(key))
        except Exception as exc:
            self._failed(exc)

    async def close(self) -> None:
        await self.client.aclose()


def open_state(
    config: StateConfig, namespace: str, *, max_items: int = 4096, max_bytes: int = 256 << 20
) -> KeyValueStore:
    """Redis when `config.redis` is set, else an in-process LRU of `max_items` entries."""
    url = config.url()
    if url:
        return RedisStore(url, namespace, config)
    if config.redis:
        raise ValueError(f"state.redis names {config.redis[4:]!r}, which is not set")
    return MemoryStore(
        max_items=max_items,
        max_bytes=max_bytes,
        ttl_s=config.ttl_s,
        max_value_bytes=config.max_value_bytes,
    )
