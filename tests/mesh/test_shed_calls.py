"""Calls a server sheds (RESOURCE_EXHAUSTED from its concurrency limiter), as the mesh client sees them.

A shed call did no work and says nothing bad about the instance: the client retries it elsewhere when
the method is idempotent, and neither ejects the instance nor counts it in the breaker, which would
take capacity away exactly when it is short. Real servers on loopback; one holds its single slot with
a call that hangs, so every other call to it is shed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from boutique.mesh import GrpcServer, ProcessInfo, ServiceBinding
from boutique.mesh.resilience import BreakerConfig, BreakerState, LimiterSettings
from tests.mesh.test_dependency import (
    SERVICE_DESCRIPTOR,
    STUB,
    Backend,
    Controllable,
    grpc_dependency,
    request,
    sample,
)
from tests.mesh.test_dependency import dependencies as dependencies  # the fixture, used by name

ONE_SLOT = LimiterSettings(mode="fixed", initial=1, min_limit=1, max_limit=1)


@pytest.fixture
async def busy_and_free() -> AsyncIterator[tuple[Backend, Backend]]:
    """Instance "busy" (limit 1, its slot held by a hanging call) and instance "free" (no limit)."""
    backends = []
    for name, limits in (("busy", ONE_SLOT), ("free", LimiterSettings(mode="off"))):
        servicer = Controllable(name)
        server = GrpcServer(
            ProcessInfo("catalog", name),
            [ServiceBinding(SERVICE_DESCRIPTOR, servicer)],
            grace=0.2,
            limits=limits,
        )
        backends.append(Backend(server, servicer, await server.start()))
    busy, free = backends
    busy.servicer.mode = "hang"
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{busy.port}")
    holder = asyncio.ensure_future(STUB(channel).GetProduct(request(), timeout=30))
    for _ in range(200):
        if busy.servicer.in_flight:
            break
        await asyncio.sleep(0.01)
    assert busy.servicer.in_flight == 1
    try:
        yield busy, free
    finally:
        busy.servicer.release.set()
        await asyncio.gather(holder, return_exceptions=True)
        await channel.close()
        for backend in backends:
            await backend.server.stop()


async def test_a_shed_call_is_retried_elsewhere_and_ejects_nothing(
    busy_and_free: tuple[Backend, Backend], dependencies: list
) -> None:
    busy, free = busy_and_free
    dependency, _ = grpc_dependency(
        dependencies, [busy, free], balancer="round_robin", breaker=BreakerConfig()
    )
    answers = [await dependency.call("GetProduct", request(), idempotent=True) for _ in range(30)]
    assert {a.name for a in answers} == {"free"}  # every call answered, the shed ones by the other instance
    retries = sample("boutique_mesh_client_retries_total", dependency=dependency.name, method="GetProduct")
    print(f"{retries:.0f} of 30 calls were shed by 'busy' and retried on 'free'")
    assert retries > 0
    assert busy.servicer.calls == 1  # only the call holding the slot: the shed ones never ran
    assert dependency.detector.ejections_total == 0
    busy_endpoint = next(e for e in dependency.balancer.endpoints if e.id == "busy")
    assert busy_endpoint.consecutive_failures == 0
    assert dependency.breaker is not None and dependency.breaker.state is BreakerState.CLOSED


async def test_shed_calls_do_not_trip_the_breaker(
    busy_and_free: tuple[Backend, Backend], dependencies: list
) -> None:
    busy, _ = busy_and_free
    dependency, _ = grpc_dependency(
        dependencies, [busy], breaker=BreakerConfig(window_size=20, minimum_calls=5)
    )
    for _ in range(30):  # not idempotent: no retry, the caller sees the refusal
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await dependency.call("GetProduct", request())
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dependency.breaker is not None and dependency.breaker.state is BreakerState.CLOSED
    outcome = {"dependency": dependency.name, "method": "GetProduct", "outcome": "overloaded"}
    assert sample("boutique_mesh_client_calls_total", **outcome) == 30
    assert busy.servicer.calls == 1
