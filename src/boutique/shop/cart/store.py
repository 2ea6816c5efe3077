"""Where carts live: a `CartStore` interface with an in-memory and a Redis implementation."""

from __future__ import annotations

import os
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from boutique.shop.errors import FailedPrecondition

REDIS_TIMEOUT_SECONDS = 1.0
KEY_PREFIX = "cart:"

# Add to a line only when the new total stays within the cap; returns the new total, or -1 when over.
_ADD_CAPPED = """
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if current + tonumber(ARGV[2]) > tonumber(ARGV[3]) then
  return -1
end
return redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
"""


class LineLimitExceeded(Exception):
    """Adding would push a line past the store's per-line cap."""


class CartStore(Protocol):
    """Carts as user id -> {product id: quantity}; adds are atomic per line."""

    async def add(self, user_id: str, product_id: str, quantity: int, limit: int) -> int:
        """Add to a line and return its new quantity; LineLimitExceeded when it would pass `limit`."""
        ...

    async def get(self, user_id: str) -> dict[str, int]:
        """The user's lines (product id -> quantity); empty for an unknown user."""
        ...

    async def empty(self, user_id: str) -> None:
        """Drop every line of the user's cart."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class MemoryCartStore:
    """Carts in a dict of this process; lost on restart."""

    def __init__(self) -> None:
        self._carts: dict[str, dict[str, int]] = {}

    async def add(self, user_id: str, product_id: str, quantity: int, limit: int) -> int:
        """Add to a line; no await in between, so the check and the update are atomic."""
        lines = self._carts.setdefault(user_id, {})
        new_total = lines.get(product_id, 0) + quantity
        if new_total > limit:
            raise LineLimitExceeded(product_id)
        lines[product_id] = new_total
        return new_total

    async def get(self, user_id: str) -> dict[str, int]:
        """A copy of the user's lines."""
        return dict(self._carts.get(user_id, {}))

    async def empty(self, user_id: str) -> None:
        """Forget the user's cart."""
        self._carts.pop(user_id, None)

    async def close(self) -> None:
        """Nothing to release."""


class RedisCartStore:
    """One Redis hash per user (`cart:<user id>`, product id -> quantity); survives cart restarts.

    Every Redis failure becomes FailedPrecondition so the caller gets a clear status, and the
    client retries once without delay, which reconnects after Redis itself restarted.
    """

    def __init__(self, host: str, port: int, timeout: float = REDIS_TIMEOUT_SECONDS) -> None:
        self.address = f"{host}:{port}"
        self._redis = Redis(
            host=host,
            port=port,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
            decode_responses=True,
        )
        self._add_capped = self._redis.register_script(_ADD_CAPPED)

    def _unavailable(self, exc: RedisError) -> FailedPrecondition:
        return FailedPrecondition(f"cart store unavailable: Redis at {self.address}: {exc}")

    async def add(self, user_id: str, product_id: str, quantity: int, limit: int) -> int:
        """HINCRBY the line inside a script that refuses to pass the cap."""
        try:
            new_total = int(
                await self._add_capped(keys=[KEY_PREFIX + user_id], args=[product_id, quantity, limit])
            )
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        if new_total < 0:
            raise LineLimitExceeded(product_id)
        return new_total

    async def get(self, user_id: str) -> dict[str, int]:
        """HGETALL of the user's hash."""
        try:
            lines = await self._redis.hgetall(KEY_PREFIX + user_id)
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        return {str(product_id): int(quantity) for product_id, quantity in lines.items()}

    async def empty(self, user_id: str) -> None:
        """DEL the user's hash."""
        try:
            await self._redis.delete(KEY_PREFIX + user_id)
        except RedisError as exc:
            raise self._unavailable(exc) from exc

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()


def parse_redis_address(text: str) -> tuple[str, int]:
    """Split 'host:port'; ValueError naming the bad value."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"REDIS_ADDR must be host:port, not {text!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def store_from_env() -> CartStore:
    """Redis when REDIS_ADDR is set (host:port), else memory."""
    address = os.environ.get("REDIS_ADDR", "").strip()
    if not address:
        return MemoryCartStore()
    host, port = parse_redis_address(address)
    return RedisCartStore(host, port)
