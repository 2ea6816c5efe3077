"""Settings of one observatory process: addresses, data directory, limits and retention."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from boutique.asgi_server import is_loopback

if TYPE_CHECKING:
    from boutique.observatory.sampling.config import SamplingConfig

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_AGE_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_size(text: str) -> int:
    """Bytes of '512MB', '1GiB', '2g' or a plain number (binary multiples)."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (try 512MB or 1GB)")
    unit = (match.group(2) or "").lower().rstrip("b").rstrip("i")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def parse_age(text: str) -> float:
    """Seconds of '24h', '30m', '7d', '90s' or a plain number of seconds."""
    match = _AGE.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (try 24h or 7d)")
    return float(match.group(1)) * _AGE_UNITS[match.group(2)]


@dataclass(frozen=True)
class Ports:
    """The four listening ports (0 picks a free one)."""

    otlp_grpc: int = 4317
    otlp_http: int = 4318
    zipkin: int = 9411
    query: int = 16686


@dataclass(frozen=True)
class ObservatoryConfig:
    """Everything `boutique observatory` can be told."""

    host: str = "127.0.0.1"
    ports: Ports = field(default_factory=Ports)
    data_dir: Path = Path(".boutique")
    token: str | None = None
    max_body_bytes: int = 16 << 20
    queue_spans: int = 100_000
    retention_seconds: float = 24 * 3600.0
    retention_bytes: int = 1 << 30
    retention_check_seconds: float = 30.0
    memory_limit: str = "128MB"
    registry_url: str | None = None  # where the Mesh page finds the running processes (a service registry)
    flags_file: Path | None = None  # the flag file the Flags page switches (None: the flags are elsewhere)
    chaos_log: Path | None = None  # `boutique chaos`'s log, whose process faults the service charts mark
    tail_sampling: SamplingConfig | None = None  # off when None (see boutique.observatory.sampling)

    @property
    def database(self) -> Path:
        """The DuckDB file."""
        return self.data_dir / "observatory.duckdb"

    def check(self) -> None:
        """Refuse unsafe or impossible settings with one clear reason."""
        if not is_loopback(self.host) and not self.token:
            raise ValueError(
                f"binding to {self.host} exposes ingest and queries: set a bearer token with --token "
                "or BOUTIQUE_OBSERVATORY_TOKEN"
            )
        if self.max_body_bytes < 1024 or self.queue_spans < 1:
            raise ValueError("the body limit must be at least 1 KiB and the queue at least one span")

    @staticmethod
    def env_token() -> str | None:
        """The token from BOUTIQUE_OBSERVATORY_TOKEN, if set."""
        return os.environ.get("BOUTIQUE_OBSERVATORY_TOKEN") or None

    @staticmethod
    def env_flags_file() -> Path | None:
        """The flag file from FLAGD_OFFLINE_FLAG_SOURCE_PATH (what `boutique up` hands every process), if set."""
        path = os.environ.get("FLAGD_OFFLINE_FLAG_SOURCE_PATH")
        return Path(path) if path else None
