"""How a serving process shows itself: status endpoints on its metrics port and its entry in discovery."""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import UTC, datetime
from typing import Any

from boutique.mesh.config import ProcessInfo
from boutique.mesh.discovery import Registrar, RegistryRegistrar, registrar_for
from boutique.mesh.instance import Instance
from boutique.mesh.runtime import Mesh
from boutique.mesh.settings import MeshSettings
from boutique.mesh.status import StatusServer
from boutique.mesh.stopping import DEREGISTER_AT_MOST

log = logging.getLogger(__name__)


class Presence:
    """Status server plus registration for one process, shared by gRPC and HTTP servers.

    Order of life: `start_status()` → serve → `announce(ports)` → … → `withdraw()` (deregister, so
    callers move away before the drain) → stop serving → `close()`. The status endpoints and the
    registration follow `settings` (default: the mesh's, else the process's). Discovery gets the
    process's advertised address (`ProcessInfo.advertise_host`), never the wildcard it may listen on.

    A server whose readiness can change passes `health_check` (how a registry can check it, e.g. its
    gRPC health) and calls `set_ready`; see there how callers then stop and resume routing here.
    """

    def __init__(
        self,
        info: ProcessInfo,
        mesh: Mesh | None = None,
        register: bool = True,
        settings: MeshSettings | None = None,
        health_check: dict[str, Any] | None = None,
    ) -> None:
        self.info = info
        self.mesh = mesh
        self.register = register
        self.settings = settings or (mesh.settings if mesh is not None else MeshSettings.current())
        self.health_check = health_check
        self.serving = False
        self.ready = True
        self.metrics_port = 0
        self.status: StatusServer | None = None
        self.registrar: Registrar | None = None
        self._announced: Instance | None = None

    async def start_status(self) -> int:
        """Serve /metrics and /mesh/* on METRICS_PORT (0 = a free port; BOUTIQUE_METRICS=off disables)."""
        status = self.settings.status
        if self.mesh is None or not status.enabled:
            return 0
        self.status = StatusServer(
            self.mesh,
            host=status.host or self.info.host,
            port=status.port,
            token=status.token,
            health=lambda: self.serving and self.ready,
        )
        self.metrics_port = await self.status.start()
        log.info(
            "status endpoints",
            extra={
                "address": f"{self.status.host}:{self.metrics_port}",
                "advertised": f"{self.info.advertise_host}:{self.metrics_port}",
                "control_token": bool(status.token),
            },
        )
        return self.metrics_port

    def instance(self, ports: dict[str, int]) -> Instance:
        """How this process appears in discovery."""
        if self.metrics_port:
            ports = {**ports, "metrics": self.metrics_port}
        return Instance(
            service=self.info.service,
            id=self.info.instance_id,
            host=self.info.advertise_host,
            ports=ports,
            metadata={
                "pid": str(os.getpid()),
                "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "version": self.info.version,
            },
        )

    async def announce(self, ports: dict[str, int]) -> None:
        """Mark serving and register (renewed in the background) when registration is on."""
        self.serving = True
        if not self.register:
            return
        self.registrar = registrar_for(self.settings.discovery)
        if self.health_check is not None and isinstance(self.registrar, RegistryRegistrar):
            self.registrar.check = dict(self.health_check)
        self._announced = self.instance(ports)
        if self.ready or self._checked_by_registry():
            await self.registrar.register(self._announced, self.settings.discovery.ttl)

    def _checked_by_registry(self) -> bool:
        """Whether the registry checks this instance's health itself (and so follows its readiness)."""
        return isinstance(self.registrar, RegistryRegistrar) and self.registrar.check is not None

    async def set_ready(self, ready: bool) -> None:
        """Readiness changed: /healthz follows, and so does discovery, the way Kubernetes takes an unready
        pod out of a Service's endpoints and puts it back once ready.

        The embedded registry checks this instance's health itself (`health_check`): it marks it critical,
        which hides it from callers' watches while the registry still lists it (so the Mesh page shows it
        unready); it marks it passing again once the health check answers SERVING. Backends without checks
        (etcd) get a deregistration while unready and the registration again when ready.
        """
        if ready == self.ready:
            return
        self.ready = ready
        if self.registrar is None or self._announced is None or self._checked_by_registry():
            return
        try:
            if ready:
                await self.registrar.register(self._announced, self.settings.discovery.ttl)
            else:
                await self.registrar.deregister()
        except Exception as exc:
            log.warning(
                "discovery did not take the readiness change", extra={"ready": ready, "error": str(exc)}
            )

    async def withdraw(self, within: float = DEREGISTER_AT_MOST) -> None:
        """Mark not serving and deregister, giving discovery at most `within` seconds: a registry or etcd
        that is stopping too (or unreachable) never holds up a shutdown; the lease then expires."""
        self.serving = False
        if self.registrar is None:
            return
        registrar, self.registrar = self.registrar, None
        try:
            async with asyncio.timeout(within):
                await registrar.deregister()
        except TimeoutError:
            log.warning(
                "deregistration unanswered; the registration expires with its lease",
                extra={"waited_seconds": round(within, 3), "ttl_seconds": self.settings.discovery.ttl},
            )
        except Exception as exc:
            log.warning("deregistration failed", extra={"error": str(exc)})

    async def close(self) -> None:
        """Close the mesh's dependencies and the status server."""
        if self.mesh is not None:
            await self.mesh.close()
        if self.status is not None:
            await self.status.stop()
            self.status = None
