"""Whether a process of `boutique up` serves: gRPC health for backends, HTTP for the rest, PING for Redis.

Kept apart from the supervisor because it imports gRPC and HTTPX: `up` loads it only once its first
processes are started, so their start does not wait for these imports.
"""

from __future__ import annotations

import asyncio

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from boutique.run.plan import ProcessPlan

# A probe channel must notice a process that has just started listening, not sit out gRPC's default
# reconnect backoff (1 s growing to 2 min) after the first refused connection.
FAST_RECONNECT = (
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 250),
)
UNREACHABLE = (grpc.aio.AioRpcError, httpx.HTTPError, OSError, TimeoutError)


class Prober:
    """Asks one process at a time what state it is in; keeps one channel per gRPC address."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._http = httpx.AsyncClient(timeout=1.0, verify=False)  # plain http on loopback: no CA bundle

    async def state(self, plan: ProcessPlan) -> str:
        """SERVING, or what the process says instead; raises one of UNREACHABLE when it does not answer."""
        if plan.kind == "redis":
            return await _ping_redis(plan.address)
        if plan.kind == "grpc":
            channel = self._channels.get(plan.address)
            if channel is None:
                channel = self._channels[plan.address] = grpc.aio.insecure_channel(
                    plan.address, options=FAST_RECONNECT
                )
            stub = health_pb2_grpc.HealthStub(channel)
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
            return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
        if plan.kind == "observatory":
            return await self._observatory_state(plan.address)
        path = "/v1/health" if plan.kind == "registry" else "/_healthz"
        response = await self._http.get(f"http://{plan.address}{path}")
        return "SERVING" if response.status_code == 200 else f"HTTP {response.status_code}"

    async def _observatory_state(self, address: str) -> str:
        """SERVING, or `DEGRADED (read-only: disk full)` while its store takes no spans (from /_readyz)."""
        response = await self._http.get(f"http://{address}/_readyz")
        if response.status_code == 200:
            return "SERVING"
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("status") == "DEGRADED":
            return f"DEGRADED ({body.get('store', 'store not writable')})"
        if isinstance(body, dict) and body.get("status") == "STOPPING":
            return "stopping"
        return f"HTTP {response.status_code}"

    async def close(self) -> None:
        """Close every channel and the HTTP client."""
        for channel in self._channels.values():
            await channel.close()
        await self._http.aclose()


async def _ping_redis(address: str) -> str:
    """SERVING when Redis answers PING."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 1.0)
    try:
        writer.write(b"PING\r\n")
        await writer.drain()
        reply = await asyncio.wait_for(reader.readline(), 1.0)
    finally:
        writer.close()
    return "SERVING" if reply.startswith(b"+PONG") else "starting"
