"""Process identity: service name, instance id and listening address, from the process's settings."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field

from boutique.mesh.settings import MeshSettings, ProcessSettings


def fresh_instance_id(service: str) -> str:
    """An id no other process has: service, host name, pid and a random suffix."""
    return f"{service}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


@dataclass(frozen=True)
class ProcessInfo:
    """Who this process is: service name, unique instance id and where it listens."""

    service: str
    instance_id: str
    host: str = "127.0.0.1"
    port: int = 0
    version: str = "0.1.0"
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, service: str, settings: ProcessSettings, default_port: int = 0) -> ProcessInfo:
        """BIND_HOST, PORT (else `default_port`) and BOUTIQUE_INSTANCE_ID (a fresh id when unset)."""
        instance = settings.instance_id or fresh_instance_id(service)
        port = default_port if settings.port is None else settings.port
        return cls(service=service, instance_id=instance, host=settings.host, port=port)

    @classmethod
    def from_env(cls, service: str, default_port: int = 0) -> ProcessInfo:
        """As `from_settings`, from the process's settings (`MeshSettings.current()`)."""
        return cls.from_settings(service, MeshSettings.current().process, default_port)
