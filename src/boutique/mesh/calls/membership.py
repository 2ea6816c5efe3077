"""The live instances of one dependency, as discovery reports them, and an open connection to each."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

from boutique.mesh import metrics
from boutique.mesh.balancing import Balancer
from boutique.mesh.discovery import Resolver
from boutique.mesh.instance import Instance

log = logging.getLogger(__name__)

Conn = TypeVar("Conn")

RETIRE_WAIT = 30.0  # how long a departed instance's connection stays open for its calls in flight
RETIRE_POLL = 0.1


class Connector(Protocol[Conn]):
    """Opens and closes the per-instance connection object of a transport."""

    port_name: str  # which of an instance's named ports it connects to ("grpc", "http")

    def open(self, instance: Instance) -> Conn:
        """A connection to the instance."""
        ...

    async def close(self, conn: Conn) -> None:
        """Release the connection."""
        ...


class Membership(Generic[Conn]):
    """Watches discovery for one name, keeps the balancer's endpoints and a connection per instance.

    Newcomers get a connection at once; a departed instance's connection closes once its calls in
    flight have finished (or RETIRE_WAIT passed), so a membership change never cuts a call.
    """

    def __init__(self, name: str, resolver: Resolver, connector: Connector[Conn], balancer: Balancer) -> None:
        self.name = name
        self.resolver = resolver
        self.connector = connector
        self.balancer = balancer
        self.conns: dict[str, tuple[Instance, Conn]] = {}  # by instance id
        self.ready = False  # whether discovery answered once (`resolved.is_set()`, read on every call)
        self.resolved = asyncio.Event()
        self._watch_task: asyncio.Task[None] | None = None
        self._closers: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Begin watching discovery (idempotent)."""
        if self._watch_task is None:
            # A context of its own: started by some call, it must not log or trace as part of that call.
            self._watch_task = asyncio.create_task(
                self._watch(), name=f"mesh-watch-{self.name}", context=contextvars.Context()
            )

    async def _watch(self) -> None:
        """Apply every instance set discovery yields until it ends."""
        try:
            async for instances in self.resolver.watch(self.name):
                self.update(instances)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("discovery watch ended", extra={"dependency": self.name})

    async def first_instances(self, budget: float) -> None:
        """Start watching and wait up to `budget` seconds for discovery's first answer."""
        if not self.resolved.is_set():
            self.start()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.resolved.wait(), budget)

    def update(self, instances: Sequence[Instance]) -> None:
        """Apply a new instance set: open connections to newcomers, retire the departed after their calls end."""
        current = {i.id: i for i in instances}
        for instance_id in list(self.conns):
            old, conn = self.conns[instance_id]
            if instance_id not in current or current[instance_id].endpoint() != old.endpoint():
                del self.conns[instance_id]
                self._retire(old, conn)
        for instance in instances:
            if instance.id not in self.conns:
                self.conns[instance.id] = (instance, self.connector.open(instance))
        self.balancer.update(list(instances))
        metrics.INSTANCES.labels(self.name).set(len(instances))
        metrics.DISCOVERY_UPDATES.labels(self.name).inc()
        self.resolved.set()
        self.ready = True
        log.info("instances", extra={"dependency": self.name, "instances": sorted(current)})

    def _retire(self, instance: Instance, conn: Conn) -> None:
        """Close a departed instance's connection once no call is in flight on it."""
        endpoint = next((e for e in self.balancer.endpoints if e.instance.id == instance.id), None)

        async def close_when_idle() -> None:
            try:
                for _ in range(round(RETIRE_WAIT / RETIRE_POLL)):
                    if endpoint is None or endpoint.outstanding <= 0:
                        break
                    await asyncio.sleep(RETIRE_POLL)
            finally:  # also when close() cuts the wait short: the connection is released either way
                await self.connector.close(conn)

        task = asyncio.create_task(close_when_idle(), context=contextvars.Context())
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    def connections(self) -> list[Conn]:
        """The open per-instance connections."""
        return [conn for _, conn in self.conns.values()]

    @property
    def instances(self) -> list[Instance]:
        """The instances calls may go to now."""
        return [instance for instance, _ in self.conns.values()]

    async def close(self) -> None:
        """Stop watching, close every connection (those being retired too) and the resolver."""
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch_task
        retiring = list(self._closers)
        for task in retiring:
            task.cancel()
        await asyncio.gather(*retiring, return_exceptions=True)
        for _, conn in self.conns.values():
            await self.connector.close(conn)
        self.conns.clear()
        with contextlib.suppress(Exception):
            await self.resolver.close()
