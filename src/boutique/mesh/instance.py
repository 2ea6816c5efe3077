"""What discovery knows about one running instance of a service."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PASSING = "passing"
CRITICAL = "critical"


@dataclass(frozen=True)
class Instance:
    """One instance: service name, unique id, host, named ports, metadata and health status.

    `ports` names each listening port ("grpc", "http", "metrics"); `metadata` carries at least
    pid, started_at and version, plus optional zone and weight, as strings.
    """

    service: str
    id: str
    host: str
    ports: Mapping[str, int] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)
    status: str = PASSING

    def endpoint(self, port: str = "grpc") -> str:
        """host:port of the named port (the first port when that name is absent); IPv6 in brackets."""
        number = self.ports.get(port)
        if number is None:
            if not self.ports:
                raise ValueError(f"instance {self.id} has no ports")
            number = next(iter(self.ports.values()))
        bare_ipv6 = ":" in self.host and not self.host.startswith("[")
        return f"[{self.host}]:{number}" if bare_ipv6 else f"{self.host}:{number}"

    @property
    def weight(self) -> float:
        """Balancing weight from metadata (default 1; nonsense or non-positive values count as 1)."""
        try:
            value = float(self.metadata.get("weight", "1"))
        except ValueError:
            return 1.0
        return value if value > 0 else 1.0

    def to_json(self) -> dict[str, Any]:
        """The registry's JSON shape of an instance."""
        return {
            "service": self.service,
            "id": self.id,
            "address": self.host,
            "ports": dict(self.ports),
            "metadata": dict(self.metadata),
            "status": self.status,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Instance:
        """Parse the registry's JSON shape; raises ValueError/KeyError/TypeError on malformed data."""
        ports = {str(k): int(v) for k, v in dict(data.get("ports") or {}).items()}
        return cls(
            service=str(data["service"]),
            id=str(data["id"]),
            host=str(data["address"]),
            ports=ports,
            metadata={str(k): str(v) for k, v in dict(data.get("metadata") or {}).items()},
            status=str(data.get("status", PASSING)),
        )
