"""A real OTLP/HTTP receiver on a loopback port that keeps every request, for the signal export tests.

Profiles (`/v1development/profiles`) are kept apart from the other signals' bodies, and decoded back into
plain samples by `profile_samples`, independently of the encoder that made them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.profiles.v1development.profiles_service_pb2 import (
    ExportProfilesServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from boutique.run.ports import free_port

PATHS = {"/v1/traces": "traces", "/v1/logs": "logs", "/v1/metrics": "metrics"}
PROFILES_PATH = "/v1development/profiles"


def plain(value: AnyValue) -> Any:
    """An AnyValue as a Python value."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [plain(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: plain(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which)


@dataclass(frozen=True)
class ProfileSample:
    """One decoded OTLP profile sample, its tables resolved."""

    type: str  # the profile's sample type, e.g. "cpu" or "wall"
    unit: str
    period: int
    resource: dict[str, Any]
    frames: tuple[tuple[str, str, int], ...]  # (function name, file, line), leaf first
    value: int
    timestamps: tuple[int, ...]
    thread: str
    trace_id: bytes  # b"" outside any span
    span_id: bytes

    def has(self, function: str) -> bool:
        """Whether a frame of the stack is `function` (its qualified name)."""
        return any(name == function for name, _, _ in self.frames)


def profile_samples(request: ExportProfilesServiceRequest) -> list[ProfileSample]:
    """Every sample of one request, with its stack, thread and link looked up in the request's dictionary."""
    tables = request.dictionary
    strings = list(tables.string_table)

    def frames(stack_index: int) -> tuple[tuple[str, str, int], ...]:
        found: list[tuple[str, str, int]] = []
        for location_index in tables.stack_table[stack_index].location_indices:
            for line in tables.location_table[location_index].lines:
                function = tables.function_table[line.function_index]
                found.append(
                    (strings[function.name_strindex], strings[function.filename_strindex], line.line)
                )
        return tuple(found)

    samples = []
    for resource_profiles in request.resource_profiles:
        resource = {kv.key: plain(kv.value) for kv in resource_profiles.resource.attributes}
        for scope_profiles in resource_profiles.scope_profiles:
            for profile in scope_profiles.profiles:
                kind = strings[profile.sample_type.type_strindex]
                unit = strings[profile.sample_type.unit_strindex]
                for sample in profile.samples:
                    attributes = {
                        strings[entry.key_strindex]: plain(entry.value)
                        for entry in (tables.attribute_table[i] for i in sample.attribute_indices)
                    }
                    link = tables.link_table[sample.link_index]
                    samples.append(
                        ProfileSample(
                            kind,
                            unit,
                            profile.period,
                            resource,
                            frames(sample.stack_index),
                            sum(sample.values),
                            tuple(sample.timestamps_unix_nano),
                            str(attributes.get("thread.name", "")),
                            bytes(link.trace_id),
                            bytes(link.span_id),
                        )
                    )
    return samples


@dataclass
class Record:
    """One received log record with its resource and scope."""

    resource: dict[str, Any]
    scope: str
    record: LogRecord

    @property
    def body(self) -> str:
        return str(plain(self.record.body))

    @property
    def attributes(self) -> dict[str, Any]:
        return {kv.key: plain(kv.value) for kv in self.record.attributes}


class OtlpReceiver:
    """Keeps the body of every POST to /v1/traces, /v1/logs and /v1/metrics (in `bodies`) and
    /v1development/profiles (in `profile_bodies`); can stop and start again on its port (an outage), and
    answer with another status."""

    def __init__(self, port: int = 0) -> None:
        self.port = port or free_port()
        self.bodies: dict[str, list[bytes]] = {name: [] for name in PATHS.values()}
        self.profile_bodies: list[bytes] = []
        self.status = 200
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OtlpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                signal = PATHS.get(self.path)
                profiles = self.path == PROFILES_PATH
                status = receiver.status if signal or profiles else 404
                if status == 200 and signal:
                    with receiver.lock:
                        receiver.bodies[signal].append(body)
                elif status == 200 and profiles:
                    with receiver.lock:
                        receiver.profile_bodies.append(body)
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def log_records(self) -> list[Record]:
        """Every log record received so far, in arrival order."""
        with self.lock:
            bodies = list(self.bodies["logs"])
        found: list[Record] = []
        for body in bodies:
            for resource_logs in ExportLogsServiceRequest.FromString(body).resource_logs:
                resource = {kv.key: plain(kv.value) for kv in resource_logs.resource.attributes}
                for scope_logs in resource_logs.scope_logs:
                    found.extend(Record(resource, scope_logs.scope.name, r) for r in scope_logs.log_records)
        return found

    def metrics(self) -> list[ExportMetricsServiceRequest]:
        """Every metrics export request received so far."""
        with self.lock:
            return [ExportMetricsServiceRequest.FromString(body) for body in self.bodies["metrics"]]

    def profiles(self) -> list[ExportProfilesServiceRequest]:
        """Every profiles export request received so far."""
        with self.lock:
            return [ExportProfilesServiceRequest.FromString(body) for body in self.profile_bodies]

    def profile_samples(self) -> list[ProfileSample]:
        """Every profile sample received so far, decoded."""
        return [sample for request in self.profiles() for sample in profile_samples(request)]

    def spans(self) -> list[Any]:
        """Every span received so far."""
        with self.lock:
            bodies = list(self.bodies["traces"])
        return [
            span
            for body in bodies
            for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll until `predicate` is truthy and return its value; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return found
