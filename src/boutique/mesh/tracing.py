"""One OpenTelemetry set-up per process: provider, resource, sampler, exporter and propagators from OTEL_*.

Standard variables decide everything, so the same process reports to the local observatory under
`boutique up` and to a Collector, Jaeger or Tempo elsewhere: `OTEL_SDK_DISABLED`, `OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_EXPORTER` (otlp, console, none), `OTEL_EXPORTER_OTLP_ENDPOINT`
and `..._PROTOCOL` (grpc, http/protobuf), `OTEL_TRACES_SAMPLER` (parent-based, always on by default),
`OTEL_TRACES_SAMPLER_ARG`, `OTEL_PROPAGATORS` and the `OTEL_BSP_*` batching limits. OTLP export goes
through a bounded sending queue that outlasts backend outages (`boutique.mesh.export_queue`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from boutique.mesh.export_queue import QueueSettings, SendingQueue
from boutique.mesh.otlp_send import OtlpTarget
from boutique.mesh.propagation import install_propagators

log = logging.getLogger(__name__)

_NO_SDK = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)


def sdk_installed() -> bool:
    """Whether an OpenTelemetry SDK provider is installed now (asked afresh)."""
    return not isinstance(trace.get_tracer_provider(), _NO_SDK)


class TracingSwitch:
    """Whether this process records spans, looked up once every 1024 asks.

    A provider, once set, is never replaced (the API refuses), so a positive answer is kept for good;
    while there is none the answer is refreshed now and then, cheaper than asking on every call. Hot
    paths (every RPC, client and server) ask this before building a span or reading trace headers.
    """

    def __init__(self) -> None:
        self.installed = False
        self.countdown = 0

    def __call__(self) -> bool:
        """Whether an SDK is installed (as of at most 1023 asks ago)."""
        if self.installed:
            return True
        self.countdown -= 1
        if self.countdown < 0:
            self.countdown = 1023
            self.installed = sdk_installed()
        return self.installed


tracing_on = TracingSwitch()


@dataclass(frozen=True)
class TracingSetup:
    """What `setup_tracing` installed: the provider (None when tracing is off) and where spans go."""

    provider: TracerProvider | None
    exporter: str  # "otlp grpc http://127.0.0.1:4317", "console", "none" or "disabled"

    def shutdown(self) -> None:
        """Flush spans still batched and stop exporting (at process exit)."""
        if self.provider is not None:
            self.provider.shutdown()


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _processor(instance: str) -> tuple[SpanProcessor | None, str]:
    """The span processor OTEL_TRACES_EXPORTER and the OTLP protocol variables ask for.

    OTLP goes through the sending queue, which keeps spans while the backend is away; its transport
    (gRPC or HTTP imports) is built in the queue's thread when the first spans are due, off start-up.
    """
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if kind == "none":
        return None, "none"
    if kind == "console":
        return BatchSpanProcessor(ConsoleSpanExporter()), "console"
    if kind != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER={kind!r}: use otlp, console or none")
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "grpc"
    ).strip()
    if protocol not in ("grpc", "http/protobuf"):
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: use grpc or http/protobuf")
    target = OtlpTarget.from_env(protocol)
    spool = os.environ.get("BOUTIQUE_EXPORT_SPOOL_DIR", "").strip()
    queue = SendingQueue(
        target.transport, QueueSettings.from_env(), Path(spool) / instance if spool else None
    )
    return queue, f"otlp {protocol} {target.endpoint}"


def setup_tracing(service: str, instance: str, version: str = "") -> TracingSetup:
    """Install this process's tracer provider and propagators; a no-op set-up when OTEL_SDK_DISABLED.

    `service` names the process unless OTEL_SERVICE_NAME does; the instance id and version become
    `service.instance.id` and `service.version`, and `deployment.environment` defaults to "local".
    """
    install_propagators()
    if _flag("OTEL_SDK_DISABLED"):
        return TracingSetup(None, "disabled")
    attributes: dict[str, str] = {
        "service.instance.id": instance,
        "deployment.environment": os.environ.get("BOUTIQUE_ENVIRONMENT", "local"),
    }
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = service
    if version:
        attributes["service.version"] = version
    processor, where = _processor(instance)
    # The sampler comes from OTEL_TRACES_SAMPLER / _ARG (parent-based always-on when unset).
    provider = TracerProvider(resource=Resource.create(attributes))
    if processor is not None:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    log.info("tracing", extra={"exporter": where, "sampler": type(provider.sampler).__name__})
    return TracingSetup(provider, where)
