"""The cart's line to Redis: a bounded pool that waits for a free connection, and redis-py's reconnects
and retries, all kept within the deadline of the call being served."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from boutique.mesh.deadline import remaining
from boutique.shop.errors import FailedPrecondition, ShopError, Unavailable

DEPENDENCY = "redis"  # how the cart names its store when a failure is the store's
MAX_CONNECTIONS_VARIABLE = "REDIS_MAX_CONNECTIONS"
DEFAULT_MAX_CONNECTIONS = 64
SOCKET_TIMEOUT_SECONDS = 1.0  # one connect, one write or one reply
BUDGET_SECONDS = 3.0  # a call that arrived without a deadline gets this long
REPLY_MARGIN_SECONDS = 0.05  # kept back from the deadline to send the answer
HEALTH_CHECK_SECONDS = 30  # PING a connection idle longer than this before using it again
RETRIES = 10  # per redis-py retry loop; the deadline is what really ends a call
BACKOFF_BASE_SECONDS = 0.025  # waits of 0.05, 0.1, 0.2 s, then 0.25 s between tries
BACKOFF_CAP_SECONDS = 0.25

log = logging.getLogger(__name__)
T = TypeVar("T")

# The last Redis failure redis-py retried during the current call (one value per task).
_LAST_FAILURE: ContextVar[BaseException | None] = ContextVar("boutique_cart_redis_failure", default=None)


class _NotingRetry(Retry):
    """redis-py's Retry, noting each failure it retries so a call cut short by its deadline can say why."""

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        async def noting(error: Exception, *count: int) -> Any:
            _LAST_FAILURE.set(error)
            return await fail(error, *count)

        return await super().call_with_retry(do, noting, is_retryable, with_failure_count)


E = TypeVar("E", bound=ShopError)


def _blaming_redis(error: E) -> E:
    """Mark the error as Redis's: the server passes that on (a failed-dependency trailer), so callers do
    not retry elsewhere (every replica shares this Redis) nor count the failure against this cart."""
    error.dependency_path = (DEPENDENCY,)
    return error


def max_connections_from_env() -> int:
    """REDIS_MAX_CONNECTIONS (default 64); ValueError naming the variable when it is not a positive int."""
    text = os.environ.get(MAX_CONNECTIONS_VARIABLE, "").strip()
    if not text:
        return DEFAULT_MAX_CONNECTIONS
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{MAX_CONNECTIONS_VARIABLE} must be a whole number of at least 1, not {text!r}")
    return int(text)


def call_budget() -> float:
    """How long a Redis call may take: what the incoming deadline leaves (less the reply margin)."""
    left = remaining()
    return BUDGET_SECONDS if left is None else max(0.0, left - REPLY_MARGIN_SECONDS)


class RedisLink:
    """A Redis client whose every call ends within the caller's deadline, with errors that name Redis.

    Inside that bound redis-py reconnects and retries connection errors and timeouts with exponential
    backoff, so a Redis restart shorter than the deadline costs a caller a delay, not an error (the
    commands sent through `run` must therefore be safe to run twice). The pool opens at most
    `max_connections` and a call waits for a free one rather than failing. A call that still fails
    raises Unavailable (Redis did not answer in time) or FailedPrecondition (Redis refused the command).
    """

    def __init__(
        self,
        host: str,
        port: int,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        socket_timeout: float = SOCKET_TIMEOUT_SECONDS,
    ) -> None:
        self.address = f"{host}:{port}"
        self.max_connections = max_connections
        pool = BlockingConnectionPool(
            host=host,
            port=port,
            max_connections=max_connections,
            timeout=BUDGET_SECONDS,  # the call's own budget (below) cuts the wait shorter
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry=_NotingRetry(
                ExponentialBackoff(cap=BACKOFF_CAP_SECONDS, base=BACKOFF_BASE_SECONDS), RETRIES
            ),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            health_check_interval=HEALTH_CHECK_SECONDS,
            decode_responses=True,
        )
        self.redis = Redis.from_pool(pool)
        self._down_since: float | None = None
        self._cause = ""  # the last Redis error of the current outage, for calls that saw none themselves

    async def run(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Await `operation` (Redis commands on `self.redis`) within the call's budget."""
        budget = call_budget()
        started = time.monotonic()
        token = _LAST_FAILURE.set(None)
        try:
            async with asyncio.timeout(budget) as scope:
                result = await operation()
        except TimeoutError as exc:
            if not scope.expired():
                raise
            failure = _LAST_FAILURE.get()
            cause = str(failure) if failure is not None else self._cause
            detail = f"no answer within {budget:.2f} s" + (f" (last error: {cause})" if cause else "")
            raise self._unavailable(detail, cause) from exc
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise self._unavailable(str(exc), str(exc)) from exc
        except RedisError as exc:
            refused = FailedPrecondition(f"cart store (redis {self.address}) refused the command: {exc}")
            raise _blaming_redis(refused) from exc
        finally:
            retried = _LAST_FAILURE.get()
            _LAST_FAILURE.reset(token)
        self._answered(retried, time.monotonic() - started)
        return result

    def _unavailable(self, detail: str, cause: str) -> Unavailable:
        """The error a caller gets, logged once when Redis goes from answering to not answering."""
        message = f"cart store (redis {self.address}) unavailable: {detail}"
        self._cause = cause or self._cause
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("cart store unreachable", extra={"redis_address": self.address, "error": message})
        return _blaming_redis(Unavailable(message))

    def _answered(self, retried: BaseException | None, seconds: float) -> None:
        """Log a call that needed retries, and the end of an outage callers saw."""
        if retried is not None:
            log.info(
                "cart store answered after retrying",
                extra={"redis_address": self.address, "error": str(retried), "seconds": round(seconds, 3)},
            )
        if self._down_since is not None:
            down = time.monotonic() - self._down_since
            self._down_since, self._cause = None, ""
            log.info(
                "cart store reachable again",
                extra={"redis_address": self.address, "down_seconds": round(down, 3)},
            )

    async def close(self) -> None:
        """Close the client and its pool."""
        await self.redis.aclose()
