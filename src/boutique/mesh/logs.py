"""JSON logs, one object per line, tagged with service, instance and the active trace.

On stderr on one machine; on stdout in a container (`/run/.containerenv` or `/.dockerenv` exists, or
KUBERNETES_SERVICE_HOST is set), where the platform collects stdout. BOUTIQUE_LOG_STREAM=stdout|stderr
chooses either way. The same records also go over OTLP where spans do (`boutique.mesh.log_export`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from opentelemetry import trace

from boutique.mesh.log_scrub import scrub_field, scrub_text

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON line: timestamp, level, service, instance, event, trace ids and extras."""

    def __init__(self, service: str, instance: str) -> None:
        super().__init__()
        self.service = service
        self.instance = instance

    def format(self, record: logging.LogRecord) -> str:
        """Render the record; fields passed with `extra=` become top-level keys; secrets masked (`log_scrub`)."""
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "instance": self.instance,
            "logger": record.name,
            "event": scrub_text(record.getMessage()),
        }
        context = trace.get_current_span().get_span_context()
        if context.is_valid:  # the line leads to its trace, and the trace back to its lines
            entry["trace_id"] = format(context.trace_id, "032x")
            entry["span_id"] = format(context.span_id, "016x")
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = scrub_field(key, value)
        if record.exc_info:
            entry["exception"] = scrub_text(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


STREAMS = ("stdout", "stderr")
CONTAINER_MARKS = ("/run/.containerenv", "/.dockerenv")  # podman's and Docker's


def in_container(
    environ: Mapping[str, str] | None = None, exists: Callable[[str], bool] = os.path.exists
) -> bool:
    """Whether this process runs in a container or a Kubernetes pod."""
    environ = os.environ if environ is None else environ
    return bool(environ.get("KUBERNETES_SERVICE_HOST", "").strip()) or any(map(exists, CONTAINER_MARKS))


def log_stream(
    environ: Mapping[str, str] | None = None, exists: Callable[[str], bool] = os.path.exists
) -> str:
    """Where logs go: BOUTIQUE_LOG_STREAM when set, else stdout in a container and stderr elsewhere."""
    environ = os.environ if environ is None else environ
    chosen = environ.get("BOUTIQUE_LOG_STREAM", "").strip().lower()
    if chosen and chosen not in STREAMS:
        from boutique.mesh.settings import SettingsError  # the settings' imports, only on this error path

        raise SettingsError(f"BOUTIQUE_LOG_STREAM must be stdout or stderr, got {chosen!r}")
    return chosen or ("stdout" if in_container(environ, exists) else "stderr")


def configure_logging(service: str, instance: str, level: str = "INFO", stream: TextIO | None = None) -> None:
    """Route every logger of this process to `stream` (default: `log_stream()`'s) as JSON lines.

    The JSON handler replaces the root logger's others, except the OTLP one of `boutique.mesh.log_export`
    (records go to both, whichever was set up first).
    """
    if stream is None:
        stream = sys.stdout if log_stream() == "stdout" else sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(service, instance))
    root = logging.getLogger()
    root.handlers[:] = [handler, *(h for h in root.handlers if getattr(h, "otlp_export", False))]
    root.setLevel(level)
    for noisy in ("uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
