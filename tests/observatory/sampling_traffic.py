"""Traces for the tail-sampling tests: OTLP requests built span by span, sent over OTLP/HTTP, read back."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from boutique.observatory.otlp.values import to_key_values

PROTOBUF = {"Content-Type": "application/x-protobuf"}


@dataclass
class SpanSpec:
    """One span to send: its service, name, timing (µs), status and attributes."""

    trace_id: bytes
    span_id: bytes
    service: str
    name: str = "op"
    start_us: int = 0
    duration_us: int = 1000
    error: bool = False
    attributes: dict[str, Any] = field(default_factory=dict)
    event_attributes: dict[str, Any] | None = None
    parent_id: bytes = b""

    def otlp(self) -> Span:
        """The OTLP span."""
        span = Span(
            trace_id=self.trace_id,
            span_id=self.span_id,
            parent_span_id=self.parent_id,
            name=self.name,
            kind=Span.SPAN_KIND_SERVER,
            start_time_unix_nano=self.start_us * 1000,
            end_time_unix_nano=(self.start_us + self.duration_us) * 1000,
            attributes=to_key_values(self.attributes),
        )
        if self.error:
            span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message="failed"))
        if self.event_attributes is not None:
            span.events.add(
                time_unix_nano=self.start_us * 1000,
                name="note",
                attributes=to_key_values(self.event_attributes),
            )
        return span


class Ids:
    """Trace and span ids from a seeded generator (the same in every run)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def trace(self) -> bytes:
        """A fresh 16-byte trace id."""
        return self.rng.getrandbits(128).to_bytes(16, "big")

    def span(self) -> bytes:
        """A fresh 8-byte span id (never zero)."""
        return (self.rng.getrandbits(63) + 1).to_bytes(8, "big")


def now_us() -> int:
    """Now, in µs since the epoch."""
    return time.time_ns() // 1000


def request(spans: Sequence[SpanSpec]) -> bytes:
    """One serialized export request: a resource per service (service.name, service.instance.id)."""
    message = ExportTraceServiceRequest()
    by_service: dict[str, list[Span]] = {}
    for spec in spans:
        by_service.setdefault(spec.service, []).append(spec.otlp())
    for service, otlp_spans in by_service.items():
        resource = Resource(
            attributes=to_key_values({"service.name": service, "service.instance.id": f"{service}-1"})
        )
        added = message.resource_spans.add(resource=resource)
        added.scope_spans.add().spans.extend(otlp_spans)
    return message.SerializeToString()


def send(client: httpx.Client, http_port: int, spans: Sequence[SpanSpec]) -> None:
    """Export the spans over OTLP/HTTP and insist on success (the observatory has them durably then)."""
    answer = client.post(f"http://127.0.0.1:{http_port}/v1/traces", content=request(spans), headers=PROTOBUF)
    assert answer.status_code == 200, answer.text


def sampling(client: httpx.Client, query_url: str) -> dict[str, Any]:
    """What /api/sampling answers."""
    answer = client.get(f"{query_url}/api/sampling")
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


def wait_decided(client: httpx.Client, query_url: str, traces: int, timeout: float = 90.0) -> dict[str, Any]:
    """Poll /api/sampling until at least `traces` traces are decided and nothing waits; its answer then."""
    deadline = time.monotonic() + timeout
    while True:
        figures = sampling(client, query_url)
        decided = figures["traces"]["kept"] + figures["traces"]["dropped"]
        settled = figures["traces"]["held"] == 0 and figures["journal"]["batches_waiting"] == 0
        if decided >= traces and settled:
            return figures
        assert time.monotonic() < deadline, f"not decided in {timeout} s: {figures}"
        time.sleep(0.1)


def stored_spans(client: httpx.Client, query_url: str, trace_id: bytes) -> list[dict[str, Any]]:
    """The spans of a trace the store holds ([] when it holds none), Jaeger-shaped."""
    answer = client.get(f"{query_url}/api/traces/{trace_id.hex()}")
    if answer.status_code == 404:
        return []
    assert answer.status_code == 200, answer.text
    spans: list[dict[str, Any]] = answer.json()["data"][0]["spans"]
    return spans


def search(
    client: httpx.Client, query_url: str, service: str, start_us: int, end_us: int
) -> list[dict[str, Any]]:
    """Every stored trace with a span of `service` that started in the window (up to 1500)."""
    params = {"service": service, "start": start_us, "end": end_us, "limit": 1500}
    answer = client.get(f"{query_url}/api/traces", params=params)
    assert answer.status_code == 200, answer.text
    traces: list[dict[str, Any]] = answer.json()["data"]
    return traces
