"""The discovery interfaces (Resolver, Registrar) and what every backend shares; `backends` chooses one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from boutique.backoff import EQUAL_JITTER, backoff_delay
from boutique.mesh.instance import Instance

ETCD_PREFIX = "/boutique/services/"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter between attempts to reach a failing discovery backend."""

    base: float = 0.2
    cap: float = 5.0

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number `attempt` (0-based): half fixed, half random, capped."""
        return backoff_delay(attempt, self.base, self.cap, EQUAL_JITTER, rand)


Publish = Callable[[list[Instance]], None]


class Trouble:
    """The log of a backend that keeps failing: a warning once per problem (a new error), the retries
    after it at debug level, and one line when it answers again, however long it was away (a service
    started before the names it needs resolve would otherwise log every retry)."""

    def __init__(self, log: logging.Logger, event: str, **fields: Any) -> None:
        self.log = log
        self.event = event
        self.fields = fields
        self.failures = 0
        self._last = ""

    def failed(self, error: str, **more: Any) -> None:
        """Another failed attempt; logged as a warning when its error differs from the last one's."""
        self.failures += 1
        extra = {**self.fields, **more, "error": error, "attempt": self.failures}
        self.log.log(logging.WARNING if error != self._last else logging.DEBUG, self.event, extra=extra)
        self._last = error

    def recovered(self, event: str) -> None:
        """An attempt succeeded: say so once when attempts had failed before."""
        if self.failures:
            self.log.info(event, extra={**self.fields, "failures": self.failures})
        self.failures, self._last = 0, ""


def sorted_set(instances: Iterable[Instance]) -> list[Instance]:
    """Instances in a stable order (by id), so two equal sets compare equal as lists."""
    return sorted(instances, key=lambda instance: instance.id)


class Resolver(ABC):
    """Watches the live instance set of a service.

    `watch(service)` yields the full current set first, then the full set again after every change
    (a slow consumer gets the newest set, not every intermediate one). Backend errors never show up
    as an empty set: the last known set stays, the backend is retried with backoff and the error is
    logged. The iterator ends when the resolver is closed (or, for a set that can never change,
    right after the first set).
    """

    def __init__(self) -> None:
        self._closed = asyncio.Event()
        self._producers: set[asyncio.Task[None]] = set()

    @abstractmethod
    def watch(self, service: str) -> AsyncIterator[list[Instance]]:
        """Yield the instance set of `service` now and after every change."""

    @property
    def closed(self) -> bool:
        """Whether close() was called."""
        return self._closed.is_set()

    async def close(self) -> None:
        """End every watch of this resolver and release its connections."""
        self._closed.set()
        producers = list(self._producers)
        for producer in producers:
            producer.cancel()
        await asyncio.gather(*producers, return_exceptions=True)

    async def _follow(
        self, produce: Callable[[Publish], Coroutine[Any, Any, None]]
    ) -> AsyncIterator[list[Instance]]:
        """Run `produce` (the backend loop, which publishes full sets) in a task and yield each new set.

        Keeping every backend call inside one task of its own lets close() and an abandoned watch
        cancel it cleanly, whatever the backend is waiting on.
        """
        latest: list[Instance] | None = None
        changed = asyncio.Event()

        def publish(instances: list[Instance]) -> None:
            """Offer a full set; only a different one wakes the watch."""
            nonlocal latest
            current = sorted_set(instances)
            if current != latest:
                latest = current
                changed.set()

        if self.closed:
            return
        producer: asyncio.Task[None] = asyncio.create_task(produce(publish))
        self._producers.add(producer)
        producer.add_done_callback(self._producers.discard)
        closing = asyncio.create_task(self._closed.wait())
        sent: list[Instance] | None = None
        try:
            while True:
                waiting = asyncio.create_task(changed.wait())
                try:
                    await asyncio.wait({waiting, producer, closing}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiting.cancel()
                if self.closed:
                    return
                changed.clear()
                if latest is not None and latest != sent:
                    sent = latest
                    yield latest
                if producer.done():
                    if not producer.cancelled():
                        producer.result()
                    return
        finally:
            closing.cancel()
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer


class Registrar(ABC):
    """The server side of discovery: announce this instance and keep it announced until deregistered."""

    @abstractmethod
    async def register(self, instance: Instance, ttl: float) -> None:
        """Announce `instance` with a lease of `ttl` seconds and keep renewing it in the background."""

    @abstractmethod
    async def deregister(self) -> None:
        """Stop renewing and withdraw the registration (best effort when the backend is down)."""
