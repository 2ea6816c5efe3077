"""What the Mesh page reads over the wire: the registry's listing, the status JSON and the SSE stream.

Every value from another process is checked and bounded here, so the feed works on plain, trusted
shapes: `Process`, breaker and instance views, and the parsed `/mesh/status` document.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

ROLLING_WINDOW_SECONDS = 10.0  # the rolling statistics window of the Hystrix-style events the mesh streams
MAX_PROCESSES = 500
MAX_DEPENDENCIES = 100
MAX_INSTANCES = 200
MAX_EVENT_BYTES = 256 * 1024
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_SUBSCRIBERS = 64
MAX_TEXT = 200
BREAKER_STATES = ("CLOSED", "OPEN", "HALF_OPEN", "FORCED_OPEN", "DISABLED")


@dataclass(frozen=True)
class FeedSettings:
    """How often the feed looks, how long it waits, and how long it lingers once nobody watches."""

    registry_interval: float = 2.0
    status_interval: float = 2.0
    publish_interval: float = 1.0
    request_timeout: float = 2.0
    stream_read_timeout: float = 5.0  # the mesh sends an event every second: this much silence is a fault
    backoff_first: float = 0.5
    backoff_max: float = 10.0
    stale_after: float = 6.0
    forget_breaker_after: float = 30.0
    linger: float = 5.0


@dataclass(frozen=True)
class MeshSnapshot:
    """One merged view of the mesh: as data, and as the JSON text sent to every subscriber."""

    data: dict[str, Any]
    text: str


class FeedError(Exception):
    """A process or the registry answered, but not usefully."""


class TooManySubscribers(Exception):
    """The feed already serves its maximum number of subscribers."""


# ---- small parsers ----------------------------------------------------------------------------------


def clean_text(value: Any, default: str = "") -> str:
    """A short display string (bounded length) from whatever the peer sent."""
    if value is None:
        return default
    return str(value)[:MAX_TEXT]


def _number(value: Any) -> float:
    """A finite number from a JSON value; anything else counts as 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value) if math.isfinite(value) else 0.0


def _dict(value: Any) -> dict[str, Any]:
    """The value when it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    """The value when it is a JSON array, else an empty one."""
    return value if isinstance(value, list) else []


def describe(exc: BaseException) -> str:
    """A one-line reason for a failed request, for the page."""
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "no answer in time"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({exc})" if str(exc) else "cannot connect"
    text = str(exc) or type(exc).__name__
    return text[:MAX_TEXT]


def http_problem(status: int) -> FeedError:
    """The error for a non-200 answer, with a hint when a token is missing."""
    if status in (401, 403):
        return FeedError(f"HTTP {status}: a bearer token is required (BOUTIQUE_STATUS_TOKEN)")
    return FeedError(f"HTTP {status}")


def _join(host: str, port: int) -> str:
    """http://host:port, bracketing IPv6 addresses."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def sse_events(
    chunks: AsyncIterator[bytes], limit: int = MAX_EVENT_BYTES
) -> AsyncIterator[tuple[str, str]]:
    """(event type, data) for each Server-Sent Event in a byte stream; FeedError past `limit` bytes."""
    buffer = b""
    kind, size = "message", 0
    data: list[str] = []
    async for chunk in chunks:
        buffer += chunk
        while (end := buffer.find(b"\n")) >= 0:
            line, buffer = buffer[:end].rstrip(b"\r").decode("utf-8", "replace"), buffer[end + 1 :]
            if not line:
                if data:
                    yield kind, "\n".join(data)
                kind, data, size = "message", [], 0
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                kind = value or "message"
            elif name == "data":
                size += len(value)
                if size > limit:
                    raise FeedError(f"an event larger than {limit} bytes")
                data.append(value)
        if len(buffer) > limit:
            raise FeedError(f"a line longer than {limit} bytes")


async def fetch_json(client: httpx.AsyncClient, url: str, headers: Mapping[str, str], timeout: float) -> Any:
    """GET a JSON document, bounded in time and size."""
    async with asyncio.timeout(timeout), client.stream("GET", url, headers=headers) as response:
        if response.status_code != 200:
            raise http_problem(response.status_code)
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise FeedError(f"answer larger than {MAX_BODY_BYTES} bytes")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise FeedError(f"not JSON: {exc}") from None


# ---- what the registry says --------------------------------------------------------------------------


@dataclass(frozen=True)
class Process:
    """One registered instance, as the registry lists it."""

    service: str
    id: str
    address: str
    ports: Mapping[str, int]
    metadata: Mapping[str, str]
    status: str

    @property
    def key(self) -> str:
        """Unique name of the process on the page."""
        return f"{self.service}/{self.id}"

    @property
    def status_url(self) -> str | None:
        """Base URL of its status endpoints, when it registered a metrics port."""
        port = self.ports.get("metrics")
        return _join(self.address, port) if port else None

    def to_json(self) -> dict[str, Any]:
        """The registry facts the page shows."""
        return {
            "key": self.key,
            "service": self.service,
            "id": self.id,
            "address": self.address,
            "ports": dict(self.ports),
            "pid": self.metadata.get("pid"),
            "version": self.metadata.get("version"),
            "started_at": self.metadata.get("started_at"),
            "status": self.status,
        }


def parse_services(body: Any) -> list[Process]:
    """Every well-formed instance in a `GET /v1/services` answer (malformed entries are skipped)."""
    services = body.get("services") if isinstance(body, dict) else None
    if not isinstance(services, dict):
        raise FeedError("the registry's answer has no 'services' object")
    found: list[Process] = []
    for name, instances in services.items():
        for entry in _list(instances):
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                continue
            ports, metadata = _dict(entry.get("ports")), _dict(entry.get("metadata"))
            found.append(
                Process(
                    service=clean_text(entry.get("service") or name),
                    id=clean_text(entry["id"]),
                    address=clean_text(entry.get("address"), "127.0.0.1"),
                    ports={
                        clean_text(k): v
                        for k, v in ports.items()
                        if isinstance(v, int) and not isinstance(v, bool) and 0 < v < 65536
                    },
                    metadata={clean_text(k): clean_text(v) for k, v in list(metadata.items())[:20]},
                    status=clean_text(entry.get("status"), "unknown"),
                )
            )
    found.sort(key=lambda p: (p.service, p.id))
    return found[:MAX_PROCESSES]


# ---- what a process says ------------------------------------------------------------------------------


def breaker_view(event: Mapping[str, Any], window: float = ROLLING_WINDOW_SECONDS) -> dict[str, Any]:
    """The fields of one Hystrix-style breaker event the page shows (latencies in ms, rate per second)."""
    latency = _dict(event.get("latencyTotal"))
    state = clean_text(event.get("state")).upper()
    if state not in BREAKER_STATES:
        if event.get("propertyValue_circuitBreakerForceOpen") is True:
            state = "FORCED_OPEN"
        elif event.get("propertyValue_circuitBreakerForceClosed") is True:
            state = "DISABLED"
        else:
            state = "OPEN" if event.get("isCircuitBreakerOpen") is True else "CLOSED"
    requests = _number(event.get("requestCount"))
    return {
        "name": clean_text(event.get("name")),
        "state": state,
        "open": event.get("isCircuitBreakerOpen") is True,
        "error_percentage": _number(event.get("errorPercentage")),
        "request_count": requests,
        "request_rate": round(requests / window, 2),
        "error_count": _number(event.get("errorCount")),
        "success": _number(event.get("rollingCountSuccess")),
        "failure": _number(event.get("rollingCountFailure")),
        "timeout": _number(event.get("rollingCountTimeout")),
        "short_circuited": _number(event.get("rollingCountShortCircuited")),
        "fallback_success": _number(event.get("rollingCountFallbackSuccess")),
        "fallback_failure": _number(event.get("rollingCountFallbackFailure")),
        "in_flight": _number(event.get("currentConcurrentExecutionCount")),
        "latency_mean": _number(event.get("latencyTotal_mean")),
        "latency_p50": _number(latency.get("50")),
        "latency_p99": _number(latency.get("99")),
        "error_threshold": _number(event.get("propertyValue_circuitBreakerErrorThresholdPercentage")),
        "sleep_window_ms": _number(event.get("propertyValue_circuitBreakerSleepWindowInMilliseconds")),
    }


def instance_view(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A balancer endpoint from /mesh/status: every scalar field it has, the usual ones normalised."""
    view: dict[str, Any] = {}
    for key, value in list(entry.items())[:20]:
        if isinstance(value, bool) or value is None:
            view[clean_text(key)] = value
        elif isinstance(value, int | float):
            view[clean_text(key)] = _number(value)
        elif isinstance(value, str):
            view[clean_text(key)] = clean_text(value)
    view["id"] = clean_text(entry.get("id"))
    view["endpoint"] = clean_text(entry.get("endpoint"))
    view["outstanding"] = _number(entry.get("outstanding"))
    view["ejected"] = entry.get("ejected") is True
    return view


def parse_memory(body: Any) -> int | None:
    """The process's resident memory in bytes from /mesh/status (None when it does not say)."""
    facts = _dict(_dict(body).get("process"))
    rss = facts.get("rss_bytes")
    if isinstance(rss, bool) or not isinstance(rss, int) or rss < 0:
        return None
    return rss


def parse_status(body: Any) -> tuple[str, dict[str, dict[str, Any]]]:
    """The caller name and each dependency (balancer, instances, raw breaker event) from /mesh/status."""
    if not isinstance(body, dict) or not isinstance(body.get("dependencies"), list):
        raise FeedError("the status answer has no 'dependencies' list")
    dependencies: dict[str, dict[str, Any]] = {}
    for entry in body["dependencies"]:
        if not isinstance(entry, dict) or len(dependencies) >= MAX_DEPENDENCIES:
            continue
        name = clean_text(entry.get("dependency") or entry.get("name"))
        instances = _list(entry.get("instances"))
        breaker = entry.get("breaker")
        dependencies[name] = {
            "balancer": clean_text(entry.get("balancer")) or None,
            "instances": [instance_view(i) for i in instances[:MAX_INSTANCES] if isinstance(i, dict)],
            "breaker": breaker if isinstance(breaker, dict) else None,
        }
    return clean_text(body.get("caller")), dependencies
