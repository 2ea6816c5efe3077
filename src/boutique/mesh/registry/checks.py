"""Active health checks: one background task per checked instance marks it passing or critical.

A check probes a named port of the instance every interval — a gRPC health Check (grpc.aio,
grpc_health.v1) or an HTTP GET that must answer 2xx — each with a short timeout. The task stops when
the instance goes away or its check changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

from boutique.mesh.durations import parse_duration
from boutique.mesh.instance import CRITICAL, PASSING, Instance
from boutique.mesh.registry.state import CheckSpec, Record, RegistryState, validate_check

if TYPE_CHECKING:
    import grpc

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 1.0
_CHECK_FIELDS = {"type", "port", "path", "interval"}


def parse_check(data: Any, ports: Mapping[str, int]) -> CheckSpec:
    """Parse and validate the API's check object; raises ValueError with the reason."""
    if not isinstance(data, dict):
        raise ValueError("check must be an object like {'type': 'grpc', 'port': 'grpc', 'interval': '2s'}")
    unknown = sorted(set(data) - _CHECK_FIELDS)
    if unknown:
        raise ValueError(f"unknown check field(s): {', '.join(unknown)}")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ValueError("check type must be 'grpc' or 'http'")
    port = data.get("port", kind)
    path = data.get("path", "/healthz")
    interval = data.get("interval", 10.0)
    if not isinstance(port, str):
        raise ValueError("check port must be the name of one of the instance's ports")
    if not isinstance(path, str):
        raise ValueError("check path must be a string such as '/healthz'")
    spec = CheckSpec(kind, port, path, _seconds("check interval", interval))
    validate_check(spec, ports)
    return spec


def _seconds(what: str, value: Any) -> float:
    """A duration given as '2s' / '500ms' or as a number of seconds."""
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"{what} must be a duration like '2s' or a number of seconds")


def _host_port(host: str, port: int) -> str:
    """host:port with IPv6 literals bracketed."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Prober:
    """Probes one instance, keeping its gRPC channel between probes and dropping it after a failure."""

    def __init__(self, spec: CheckSpec, http: httpx.AsyncClient, timeout: float) -> None:
        self.spec = spec
        self.http = http
        self.timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._target = ""

    async def healthy(self, instance: Instance) -> bool:
        """True when the instance answers its check."""
        target = _host_port(instance.host, instance.ports[self.spec.port])
        if self.spec.kind == "http":
            return await self._http(target)
        ok = await self._grpc(target)
        if not ok:
            await self.close()  # reconnect from scratch next time rather than wait out channel backoff
        return ok

    async def _http(self, target: str) -> bool:
        """GET the check path; healthy on a 2xx answer."""
        try:
            response = await self.http.get(f"http://{target}{self.spec.path}", timeout=self.timeout)
        except httpx.HTTPError:
            return False
        return 200 <= response.status_code < 300

    async def _grpc(self, target: str) -> bool:
        """Call grpc.health.v1.Health/Check on the server as a whole; healthy when SERVING."""
        # gRPC is imported by the first gRPC check, not before the registry serves (~50 ms of its start)
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        if self._channel is None or self._target != target:
            await self.close()
            self._channel = grpc.aio.insecure_channel(target)
            self._target = target
        stub = health_pb2_grpc.HealthStub(self._channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=self.timeout)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def close(self) -> None:
        """Close the gRPC channel, if any."""
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close()


class HealthChecks:
    """The running checks of one registry, keyed by (service, instance id)."""

    def __init__(self, state: RegistryState, timeout: float = PROBE_TIMEOUT) -> None:
        self.state = state
        self.timeout = timeout
        self._tasks: dict[tuple[str, str], tuple[int, asyncio.Task[None]]] = {}
        self._http: httpx.AsyncClient | None = None

    def tracked(self) -> dict[tuple[str, str], asyncio.Task[None]]:
        """The check task of every checked instance."""
        return {key: task for key, (_, task) in self._tasks.items()}

    def track(self, record: Record) -> None:
        """Start, restart or stop the check of an instance to match its record (call inside the loop)."""
        key = (record.instance.service, record.instance.id)
        current = self._tasks.get(key)
        if current is not None and record.check is not None and current[0] == record.check_generation:
            return
        self._cancel(key)
        if record.check is None:
            return
        if self._http is None:
            # checks GET plain http:// URLs and follow no redirect: no TLS, so no CA bundle to load
            self._http = httpx.AsyncClient(follow_redirects=False, trust_env=False, verify=False)
        prober = _Prober(record.check, self._http, self.timeout)
        task = asyncio.create_task(
            self._run(key, record.check_generation, record.check.interval, prober), name=f"check {key}"
        )
        self._tasks[key] = (record.check_generation, task)

    def untrack(self, record: Record) -> None:
        """Stop the check of an instance that went away."""
        self._cancel((record.instance.service, record.instance.id))

    def _cancel(self, key: tuple[str, str]) -> None:
        """Cancel and forget the check task of one instance, if it has one."""
        current = self._tasks.pop(key, None)
        if current is not None:
            current[1].cancel()

    async def close(self) -> None:
        """Stop every check and close the HTTP client."""
        tasks = [task for _, task in self._tasks.values()]
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _run(self, key: tuple[str, str], generation: int, interval: float, prober: _Prober) -> None:
        """Probe until the instance or its check goes away; a failing probe never ends the loop."""
        service, instance_id = key
        try:
            while True:
                record = self.state.get(service, instance_id)
                if record is None or record.check_generation != generation:
                    return
                try:
                    ok = await prober.healthy(record.instance)
                except Exception:
                    log.exception("health check failed unexpectedly", extra={"instance_id": instance_id})
                    ok = False
                status = PASSING if ok else CRITICAL
                if self.state.set_status(service, instance_id, status, generation):
                    log.info(
                        "instance health changed",
                        extra={"service_name": service, "instance_id": instance_id, "status": status},
                    )
                await asyncio.sleep(interval)
        finally:
            with contextlib.suppress(Exception):
                await prober.close()
            current = self._tasks.get(key)
            if current is not None and current[1] is asyncio.current_task():
                del self._tasks[key]
