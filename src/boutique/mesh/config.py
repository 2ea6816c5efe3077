"""Process identity and small configuration parsers shared by every mesh process."""

from __future__ import annotations

import os
import re
import socket
import uuid
from dataclasses import dataclass, field

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Parse '250ms', '1.5s', '2m' or a bare number of seconds into seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 200ms, 1.5s, 2m)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]


def env_duration(name: str, default: float = 0.0) -> float:
    """Read a duration from the environment; an unset or empty variable gives the default."""
    value = os.environ.get(name, "").strip()
    return parse_duration(value) if value else default


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
    def from_env(cls, service: str, default_port: int = 0) -> ProcessInfo:
        """Build from BIND_HOST, PORT and BOUTIQUE_INSTANCE_ID (a fresh id when unset)."""
        instance = os.environ.get("BOUTIQUE_INSTANCE_ID") or (
            f"{service}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
        )
        return cls(
            service=service,
            instance_id=instance,
            host=os.environ.get("BIND_HOST", "127.0.0.1"),
            port=int(os.environ.get("PORT", default_port)),
        )
