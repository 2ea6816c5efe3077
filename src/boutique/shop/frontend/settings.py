"""The frontend's configuration: who it is, where the observatory is, and its request limits."""

from __future__ import annotations

import os
from dataclasses import dataclass

from boutique.mesh import ProcessInfo

SERVICE = "frontend"
DEFAULT_PORT = 8080
MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class FrontendSettings:
    """Settings of one frontend instance; `observatory_url` empty means no trace links."""

    instance_id: str
    observatory_url: str = ""
    max_body_bytes: int = MAX_BODY_BYTES
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT

    @classmethod
    def from_env(cls) -> FrontendSettings:
        """Read BOUTIQUE_INSTANCE_ID, OBSERVATORY_URL, BIND_HOST and PORT (default 8080)."""
        info = ProcessInfo.from_env(SERVICE, default_port=DEFAULT_PORT)
        return cls(
            instance_id=info.instance_id,
            observatory_url=os.environ.get("OBSERVATORY_URL", "").strip().rstrip("/"),
            host=info.host,
            port=info.port,
        )

    def trace_url(self, trace_id: str) -> str:
        """Where the observatory shows a trace, or '' when no observatory is configured."""
        return f"{self.observatory_url}/trace/{trace_id}" if self.observatory_url else ""
