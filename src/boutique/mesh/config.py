"""Process identity: service name, instance id, listening and advertised address, from the process's settings."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field

from boutique.mesh.advertise import advertised_host
from boutique.mesh.settings import MeshSettings, ProcessSettings


def fresh_instance_id(service: str) -> str:
    """An id no other process has: service, host name, pid and a random suffix."""
    return f"{service}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


@dataclass(frozen=True)
class ProcessInfo:
    """Who this process is: service name, unique instance id, where it listens (`host`) and the address
    others reach it at (`advertise_host`: registered in discovery and reported, never a wildcard)."""

    service: str
    instance_id: str
    host: str = "127.0.0.1"
    port: int = 0
    version: str = "0.1.0"
    extra: dict[str, str] = field(default_factory=dict)
    advertise_host: str = ""  # empty: derived from `host` (see boutique.mesh.advertise)

    def __post_init__(self) -> None:
        if not self.advertise_host:
            object.__setattr__(self, "advertise_host", advertised_host(self.host))

    @classmethod
    def from_settings(cls, service: str, settings: ProcessSettings, default_port: int = 0) -> ProcessInfo:
        """BIND_HOST, the advertised address (BOUTIQUE_ADVERTISE_HOST, POD_IP, else derived from BIND_HOST),
        PORT (else `default_port`) and BOUTIQUE_INSTANCE_ID (a fresh id when unset)."""
        instance = settings.instance_id or fresh_instance_id(service)
        port = default_port if settings.port is None else settings.port
        return cls(
            service=service,
            instance_id=instance,
            host=settings.host,
            port=port,
            advertise_host=advertised_host(settings.host, settings.advertise_host),
        )

    @classmethod
    def from_env(cls, service: str, default_port: int = 0) -> ProcessInfo:
        """As `from_settings`, from the process's settings (`MeshSettings.current()`)."""
        return cls.from_settings(service, MeshSettings.current().process, default_port)
