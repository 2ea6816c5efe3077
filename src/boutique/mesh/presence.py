"""How a serving process shows itself: status endpoints on its metrics port and its entry in discovery."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime

from boutique.mesh.config import ProcessInfo, env_duration
from boutique.mesh.discovery import Registrar, registrar_from_env
from boutique.mesh.instance import Instance
from boutique.mesh.runtime import Mesh
from boutique.mesh.status import StatusServer

log = logging.getLogger(__name__)


class Presence:
    """Status server plus registration for one process, shared by gRPC and HTTP servers.

    Order of life: `start_status()` → serve → `announce(ports)` → … → `withdraw()` (deregister, so
    callers move away before the drain) → stop serving → `close()`.
    """

    def __init__(self, info: ProcessInfo, mesh: Mesh | None = None, register: bool = True) -> None:
        self.info = info
        self.mesh = mesh
        self.register = register
        self.serving = False
        self.metrics_port = 0
        self.status: StatusServer | None = None
        self.registrar: Registrar | None = None

    async def start_status(self) -> int:
        """Serve /metrics and /mesh/* on METRICS_PORT (0 = a free port; BOUTIQUE_METRICS=off disables)."""
        if self.mesh is None or os.environ.get("BOUTIQUE_METRICS", "").lower() == "off":
            return 0
        self.status = StatusServer(
            self.mesh,
            host=os.environ.get("METRICS_HOST", self.info.host),
            port=int(os.environ.get("METRICS_PORT", "0") or 0),
            token=os.environ.get("BOUTIQUE_STATUS_TOKEN") or None,
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
        self.registrar = registrar_from_env()
        await self.registrar.register(self.instance(ports), env_duration("BOUTIQUE_REGISTRY_TTL", 10.0))

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
