"""Test helpers: real gRPC servers on loopback sockets, started in-process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from boutique.mesh import GrpcServer, ProcessInfo, ServiceBinding, StaticEndpoints


@asynccontextmanager
async def serving(name: str, bindings: list[ServiceBinding]) -> AsyncIterator[StaticEndpoints]:
    """Serve the bindings on 127.0.0.1 at a free port; yields the endpoints to build a client with."""
    server = GrpcServer(ProcessInfo(service=name, instance_id=f"{name}-test", port=0), bindings, grace=0.5)
    port = await server.start()
    try:
        yield StaticEndpoints((f"127.0.0.1:{port}",))
    finally:
        await server.stop()


async def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll a condition on real time with a generous bound (the loop keeps running meanwhile)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition never held")
        await asyncio.sleep(0.02)


class ManualClock:
    """A logical clock the test moves by hand (for breakers, budgets, balancers, registry leases)."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds
