"""While a dependency's breaker is open, health-check its instances so a recovered dependency is used at once."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from boutique.mesh.resilience import CircuitBreaker

log = logging.getLogger(__name__)

Conn = TypeVar("Conn")

# While a breaker is open, how often its dependency's instances are health-checked (and how long a
# check may take): a dependency that returns is used again within about this long.
RECOVERY_PROBE_EVERY = 0.25


class RecoveryProbe(Generic[Conn]):
    """Probes the connections with the transport's health check while the breaker stays OPEN.

    The first instance found serving lets the breaker into half-open early (`probe_succeeded`), instead
    of waiting out the whole open period.
    """

    def __init__(
        self,
        name: str,
        breaker: CircuitBreaker,
        connections: Callable[[], list[Conn]],
        probe: Callable[[Conn, float], Awaitable[bool]],
    ) -> None:
        self.name = name
        self.breaker = breaker
        self.connections = connections
        self.probe = probe
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start probing unless already probing; without an event loop (a breaker tripped from another
        thread) the open period runs out instead."""
        if self._task is not None and not self._task.done():
            return
        try:
            self._task = asyncio.get_running_loop().create_task(self._run(), context=contextvars.Context())
        except RuntimeError:
            self._task = None

    async def _run(self) -> None:
        """Every RECOVERY_PROBE_EVERY seconds, until the breaker leaves OPEN or a probe finds one serving."""
        breaker = self.breaker
        while breaker.state.name == "OPEN":
            await asyncio.sleep(RECOVERY_PROBE_EVERY)
            answers = await asyncio.gather(
                *(self.probe(conn, RECOVERY_PROBE_EVERY) for conn in self.connections()),
                return_exceptions=True,
            )
            if any(answer is True for answer in answers):
                if breaker.probe_succeeded():
                    log.info("dependency answers health checks again", extra={"dependency": self.name})
                return

    async def stop(self) -> None:
        """Stop probing."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
