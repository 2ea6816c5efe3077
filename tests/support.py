"""Test helpers: real gRPC servers on loopback sockets, started in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator
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
