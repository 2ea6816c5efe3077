"""A large synthetic multi-service trace, as the trace page's browser test and the UI benchmark send it."""

from __future__ import annotations

import random
from collections import deque

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from boutique.observatory.otlp.values import to_key_values

SYNTHETIC_SERVICES = tuple(
    f"bulk-{name}"
    for name in (
        "web",
        "gateway",
        "orders",
        "stock",
        "pricing",
        "search",
        "users",
        "billing",
        "notify",
        "files",
    )
)  # named apart from the shop's services: the browser test sends this trace to the shop's observatory


def synthetic_trace(trace_id: str, count: int, start_us: int, seed: int = 7) -> ExportTraceServiceRequest:
    """An export request with one trace of `count` spans: a tree 2 to 5 wide per span across ten services.

    Children lie inside their parent's time; every 97th span fails, every 50th has an event.
    """
    rng = random.Random(seed)
    trace = bytes.fromhex(trace_id)
    by_service: dict[str, list[OtlpSpan]] = {}

    def add(index: int, parent: int, service: str, depth: int, start: int, duration: int) -> None:
        """Make span number `index` and file it under its service."""
        name = "GET /bulk" if index == 0 else f"{service}/Op{index % 7}"
        span = OtlpSpan(
            trace_id=trace,
            span_id=(index + 1).to_bytes(8, "big"),
            parent_span_id=(parent + 1).to_bytes(8, "big") if parent >= 0 else b"",
            name=name,
            kind=2 if index % 2 == 0 else 3,  # type: ignore[arg-type]
            start_time_unix_nano=start * 1000,
            end_time_unix_nano=(start + duration) * 1000,
            attributes=to_key_values({"rpc.method": name, "app.index": index, "app.depth": depth}),
        )
        if index % 97 == 96:
            span.status.CopyFrom(Status(code=2, message="synthetic failure"))  # type: ignore[arg-type]
        if index % 50 == 49:
            span.events.add(time_unix_nano=(start + duration // 2) * 1000, name="cache.miss")
        by_service.setdefault(service, []).append(span)

    root = SYNTHETIC_SERVICES[0]
    add(0, -1, root, 0, start_us, 2_000_000)
    queue: deque[tuple[int, str, int, int, int]] = deque([(0, root, 0, start_us, 2_000_000)])
    made = 1
    while queue and made < count:
        parent, service, depth, start, duration = queue.popleft()
        for _ in range(rng.randint(2, 5)):
            if made >= count:
                break
            offset = rng.randint(0, max(0, duration * 6 // 10))
            length = max(1, int((duration - offset) * rng.uniform(0.2, 0.9)))
            child_service = service if rng.random() < 0.3 else rng.choice(SYNTHETIC_SERVICES)
            add(made, parent, child_service, depth + 1, start + offset, length)
            queue.append((made, child_service, depth + 1, start + offset, length))
            made += 1
    request = ExportTraceServiceRequest()
    for service, spans in by_service.items():
        resource = {"service.name": service, "service.instance.id": f"{service}-1"}
        resource_spans = request.resource_spans.add(resource=Resource(attributes=to_key_values(resource)))
        resource_spans.scope_spans.add().spans.extend(spans)
    return request
