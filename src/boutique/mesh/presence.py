"""How a serving process shows itself: status endpoints on its metrics port and its entry in discovery."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime

from boutique.mesh.config import ProcessInfo
from boutique.mesh.discovery import Registrar, registrar_for
from boutique.mesh.instance import Instance
from boutique.mesh.runtime import Mesh
from boutique.mesh.settings import MeshSettings
from boutique.mesh.status import StatusServer

log = logging.getLogger(__name__)


class Presence:
    """Status server plus registration for one process, shared by gRPC and HTTP servers.

    Order of life: `start_status()` → serve → `announce(ports)` → … → `withdraw()` (deregister, so
    callers move away before the drain) → stop serving → `close()`. The status endpoints and the
    registration follow `settings` (default: the mesh's, else the process's).
    """

    def __init__(
        self,
        info: ProcessInfo,
        mesh: Mesh | None = None,
        register: bool = True,
        settings: MeshSettings | None = None,
    ) -> None:
        self.info = info
        self.mesh = mesh
        self.register = register
        self.settings = settings or (mesh.settings if mesh is not None else MeshSettings.current())
        self.serving = False
        self.metrics_port = 0
        self.status: StatusServer | None = None
        self.registrar: Registrar | None = None

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
            health=lambda: self.serving,
        )
        self.metrics_port = await self.status.start()
        log.info("status endpoints", extra={"address": f"{self.status.host}:{self.metrics_port}"})
        return self.metrics_port

    def instance(self, ports: dict[str, int]) -> Instance:
        """How this process appears in discovery."""
        if self.metrics_port:
            ports = {**ports, "metrics": self.metrics_port}
        return Instance(
            service=self.info.service,
            id=self.info.instance_id,
            host=self.info.host,
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
        await self.registrar.register(self.instance(ports), self.settings.discovery.ttl)

    async def withdraw(self) -> None:
        """Mark not serving and deregister; discovery trouble never blocks a shutdown."""
        self.serving = False
        if self.registrar is None:
            return
        try:
            await self.registrar.deregister()
        except Exception as exc:
            log.warning("deregistration failed", extra={"error": str(exc)})
        self.registrar = None

    async def close(self) -> None:
        """Close the mesh's dependencies and the status server."""
        if self.mesh is not None:
            await self.mesh.close()
        if self.status is not None:
            await self.status.stop()
            self.status = None
