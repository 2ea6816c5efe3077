"""Where carts live: a `CartStore` interface with an in-memory and a Redis implementation.

redis-py (with its link, ~0.3 s of imports) is imported only when a Redis store is made.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from boutique.shop.cart.redis_link import RedisLink

KEY_PREFIX = "cart:"
ADD_PREFIX = "cart-add:"
ADDS_REMEMBERED_SECONDS = 600  # how long Redis remembers an add id (retries come within seconds)
ADDS_REMEMBERED_IN_MEMORY = 10_000

_LINE_LIMIT = -1
_ADD_ID_REUSED = -2

# Apply one add (KEYS[2] names it) at most once: a repeat returns the total the add produced. A new add
# raises the line only while it stays within the cap (-1 when over); an add id already used for another
# product or quantity is -2. The cart line and the add's record change together or not at all.
_ADD_ONCE = """
local seen = redis.call('HMGET', KEYS[2], 'product', 'quantity', 'total')
if seen[1] then
  if seen[1] ~= ARGV[1] or seen[2] ~= ARGV[2] then
    return -2
  end
  return tonumber(seen[3])
end
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if current + tonumber(ARGV[2]) > tonumber(ARGV[3]) then
  return -1
end
local total = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], 'product', ARGV[1], 'quantity', ARGV[2], 'total', total)
redis.call('EXPIRE', KEYS[2], ARGV[4])
return total
"""


class LineLimitExceeded(Exception):
    """Adding would push a line past the store's per-line cap."""


class AddIdReused(Exception):
    """An add id already named an add of another product or quantity for this user."""


class CartStore(Protocol):
    """Carts as user id -> {product id: quantity}; adds are atomic per line and applied once per add id."""

    async def add(self, user_id: str, product_id: str, quantity: int, limit: int, add_id: str) -> int:
        """Add to a line and return its new quantity; the same `add_id` again returns the same total
        without adding. LineLimitExceeded when it would pass `limit`; AddIdReused for another add's id."""
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
    """Carts in a dict of this process; lost on restart. Remembers the most recent adds by id."""

    def __init__(self) -> None:
        self._carts: dict[str, dict[str, int]] = {}
        self._adds: OrderedDict[tuple[str, str], tuple[str, int, int]] = OrderedDict()

    async def add(self, user_id: str, product_id: str, quantity: int, limit: int, add_id: str) -> int:
        """Add to a line; no await in between, so the check and the update are atomic."""
        seen = self._adds.get((user_id, add_id))
        if seen is not None:
            if seen[:2] != (product_id, quantity):
                raise AddIdReused(add_id)
            return seen[2]
        lines = self._carts.setdefault(user_id, {})
        new_total = lines.get(product_id, 0) + quantity
        if new_total > limit:
            raise LineLimitExceeded(product_id)
        lines[product_id] = new_total
        self._adds[(user_id, add_id)] = (product_id, quantity, new_total)
        if len(self._adds) > ADDS_REMEMBERED_IN_MEMORY:
            self._adds.popitem(last=False)
        return new_total

    async def get(self, user_id: str) -> dict[str, int]:
        """A copy of the user's lines."""
        return dict(self._carts.get(user_id, {}))

    async def empty(self, user_id: str) -> None:
        """Forget the user's cart."""
        self._carts.pop(user_id, None)

    async def close(self) -> None:
        """Nothing to release."""


def add_key(user_id: str, add_id: str) -> str:
    """The Redis key remembering one add; the length prefix keeps every (user, add id) pair distinct."""
    return f"{ADD_PREFIX}{len(user_id)}:{user_id}:{add_id}"


class RedisCartStore:
    """One Redis hash per user (`cart:<user id>`, product id -> quantity); survives cart restarts.

    Every command is safe to repeat (reads, DEL, and adds applied once per add id), so the link may retry
    any of them after a lost connection; see RedisLink for the pool, the retries and the errors.
    """

    def __init__(
        self,
        host: str,
        port: int,
        max_connections: int | None = None,
        socket_timeout: float | None = None,
    ) -> None:
        """A store on Redis at host:port; the pool size and socket timeout default to the link's."""
        from boutique.shop.cart import redis_link

        self.link: RedisLink = redis_link.RedisLink(
            host,
            port,
            redis_link.DEFAULT_MAX_CONNECTIONS if max_connections is None else max_connections,
            redis_link.SOCKET_TIMEOUT_SECONDS if socket_timeout is None else socket_timeout,
        )
        self.address = self.link.address
        self._add_once = self.link.redis.register_script(_ADD_ONCE)

    async def add(self, user_id: str, product_id: str, quantity: int, limit: int, add_id: str) -> int:
        """HINCRBY the line inside a script that refuses to pass the cap and records the add."""
        keys = [KEY_PREFIX + user_id, add_key(user_id, add_id)]
        args: list[str | int] = [product_id, quantity, limit, ADDS_REMEMBERED_SECONDS]
        new_total = int(await self.link.run(lambda: self._add_once(keys=keys, args=args)))
        if new_total == _LINE_LIMIT:
            raise LineLimitExceeded(product_id)
        if new_total == _ADD_ID_REUSED:
            raise AddIdReused(add_id)
        return new_total

    async def get(self, user_id: str) -> dict[str, int]:
        """HGETALL of the user's hash."""
        lines = await self.link.run(lambda: self.link.redis.hgetall(KEY_PREFIX + user_id))
        return {str(product_id): int(quantity) for product_id, quantity in lines.items()}

    async def empty(self, user_id: str) -> None:
        """DEL the user's hash."""
        await self.link.run(lambda: self.link.redis.delete(KEY_PREFIX + user_id))

    async def close(self) -> None:
        """Close the connection pool."""
        await self.link.close()


def parse_redis_address(text: str) -> tuple[str, int]:
    """Split 'host:port'; ValueError naming the bad value."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"REDIS_ADDR must be host:port, not {text!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def store_from_env() -> CartStore:
    """Redis when REDIS_ADDR is set (host:port; pool size from REDIS_MAX_CONNECTIONS), else memory."""
    address = os.environ.get("REDIS_ADDR", "").strip()
    if not address:
        return MemoryCartStore()
    from boutique.shop.cart.redis_link import max_connections_from_env

    host, port = parse_redis_address(address)
    return RedisCartStore(host, port, max_connections_from_env())
