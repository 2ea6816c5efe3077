"""`boutique up` is ready only once callers can find every service in the registry."""

from __future__ import annotations

import asyncio

from boutique.mesh import Instance
from boutique.mesh.registry.client import RegistryClient
from boutique.mesh.registry.server import RegistryServer
from boutique.run.up import wait_registered


async def test_ready_waits_for_every_instance_to_register() -> None:
    registry = RegistryServer(port=0)
    await registry.start()
    try:
        wanted = {"cart-0", "frontend-0"}
        assert not await wait_registered(registry.url, wanted, timeout=0.3)  # nobody registered yet
        async with RegistryClient(registry.url) as client:
            await client.register(Instance("cart", "cart-0", "127.0.0.1", {"grpc": 50051}), ttl=30)
            waiting = asyncio.create_task(wait_registered(registry.url, wanted, timeout=10))
            await asyncio.sleep(0.2)
            assert not waiting.done()  # one of two is not enough
            await client.register(Instance("frontend", "frontend-0", "127.0.0.1", {"http": 8080}), ttl=30)
            assert await waiting
    finally:
        await registry.stop()


async def test_an_unreachable_registry_is_not_ready() -> None:
    assert not await wait_registered("http://127.0.0.1:9", {"cart-0"}, timeout=0.3)
