"""One OpenTelemetry set-up per process: provider, resource, sampler, exporter and propagators from OTEL_*.

Standard variables decide everything, so the same process reports to the local observatory under
`boutique up` and to a Collector, Jaeger or Tempo elsewhere: `OTEL_SDK_DISABLED`, `OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_EXPORTER` (otlp, console, none), `OTEL_EXPORTER_OTLP_ENDPOINT`
and `..._PROTOCOL` (grpc, http/protobuf), `OTEL_TRACES_SAMPLER` (parent-based, always on by default),
`OTEL_TRACES_SAMPLER_ARG`, `OTEL_PROPAGATORS` and the `OTEL_BSP_*` batching limits (read into
`TracingSettings` by `boutique.mesh.settings`; the SDK reads the sampler and resource variables itself).
OTLP export goes through a bounded sending queue that outlasts backend outages (`boutique.mesh.export_queue`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from boutique.mesh.export_queue import SendingQueue
from boutique.mesh.propagation import install_propagators
from boutique.mesh.settings import MeshSettings, TracingSettings

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
    queue: SendingQueue | None = None  # the OTLP sending queue, when spans go by OTLP

    def shutdown(self, within: float | None = None) -> None:
        """Deliver spans still queued and stop exporting (at process exit); with `within`, the OTLP queue
        gets at most that long (what is left of the stop: a backend that is gone is not waited for)."""
        if self.queue is not None and within is not None:
            self.queue.shutdown(within)  # the provider's own shutdown of it below then returns at once
        if self.provider is not None:
            self.provider.shutdown()


def _processor(settings: TracingSettings, instance: str) -> tuple[SpanProcessor | None, str]:
    """The span processor OTEL_TRACES_EXPORTER and the OTLP protocol variables ask for.

    OTLP goes through the sending queue, which keeps spans while the backend is away; its transport
    (gRPC or HTTP imports) is built in the queue's thread when the first spans are due, off start-up.
    """
    if settings.exporter == "none":
        return None, "none"
    if settings.exporter == "console":
        return BatchSpanProcessor(ConsoleSpanExporter()), "console"
    target = settings.target
    spool = settings.spool_dir / instance if settings.spool_dir is not None else None
    queue = SendingQueue(target.transport, settings.queue, spool)
    return queue, f"otlp {target.protocol} {target.endpoint}"


def setup_tracing(
    service: str, instance: str, version: str = "", settings: TracingSettings | None = None
) -> TracingSetup:
    """Install this process's tracer provider and propagators; a no-op set-up when OTEL_SDK_DISABLED.

    `service` names the process unless OTEL_SERVICE_NAME does; the instance id and version become
    `service.instance.id` and `service.version`, and `deployment.environment` defaults to "local".
    `settings` default to the process's (`MeshSettings.current().tracing`).
    """
    settings = settings or MeshSettings.current().tracing
    install_propagators(settings.propagators)
    if settings.disabled:
        return TracingSetup(None, "disabled")
    attributes: dict[str, str] = {
        "service.instance.id": instance,
        "deployment.environment": settings.environment,
    }
    if not settings.service_name:
        attributes["service.name"] = service
    if version:
        attributes["service.version"] = version
    processor, where = _processor(settings, instance)
    # The sampler comes from OTEL_TRACES_SAMPLER / _ARG (parent-based always-on when unset).
    provider = TracerProvider(resource=Resource.create(attributes))
    if processor is not None:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    log.info("tracing", extra={"exporter": where, "sampler": type(provider.sampler).__name__})
    return TracingSetup(provider, where, processor if isinstance(processor, SendingQueue) else None)
