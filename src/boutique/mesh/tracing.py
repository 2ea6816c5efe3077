"""One OpenTelemetry set-up per process: provider, resource, sampler, exporter and propagators from OTEL_*.

Standard variables decide everything, so the same process reports to the local observatory under
`boutique up` and to a Collector, Jaeger or Tempo elsewhere: `OTEL_SDK_DISABLED`, `OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_EXPORTER` (otlp, console, none), `OTEL_EXPORTER_OTLP_ENDPOINT`
and `..._PROTOCOL` (grpc, http/protobuf), `OTEL_TRACES_SAMPLER` (parent-based, always on by default),
`OTEL_TRACES_SAMPLER_ARG`, `OTEL_PROPAGATORS` and the `OTEL_BSP_*` batching limits (read into
`TracingSettings` by `boutique.mesh.settings`; the SDK reads the sampler and resource variables itself).
OTLP export goes through a bounded sending queue that outlasts backend outages (`boutique.mesh.export_queue`).

Wherever spans go by OTLP, the process's log records (`boutique.mesh.log_export`) and its metrics, the
values `/metrics` serves (`boutique.mesh.metric_export`), go too, each through a sending queue of its own,
to the same backend under the same resource: `OTEL_LOGS_EXPORTER=none` / `OTEL_METRICS_EXPORTER=none`
switch either off, `BOUTIQUE_METRICS_EXPORT_INTERVAL` (seconds; default 10) sets how often metrics are
pushed, and `OTEL_EXPORTER_OTLP_LOGS_*` / `..._METRICS_*` point either elsewhere (`SignalSettings`).

The process also profiles itself there (`boutique.mesh.profiler`: every thread's stack 100 times a second,
on the wall clock and on the CPU, and where every asyncio task waits, each sample linked to the span its
thread or task was in) and sends OTLP profiles every 10 s (`boutique.mesh.profile_export`):
`BOUTIQUE_PROFILING=off` switches it off, `BOUTIQUE_PROFILING_HZ` (1-1000) sets the rate,
`BOUTIQUE_PROFILING_EXPORT_INTERVAL` how often profiles go, `OTEL_EXPORTER_OTLP_PROFILES_*` where, and
`BOUTIQUE_PROFILING_CPU` (`signal`, the default, or `thread`) who samples the main thread's CPU: a
SIGPROF handler on the process's CPU timer, set up here since this runs in the main thread (each forked
service sets up its own), or the sampling thread. Under gevent (the load generator) there is no profiling: its
threads are greenlets the sampler cannot see.
"""

from __future__ import annotations

import atexit
import logging
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from boutique.mesh.export_queue import SendingQueue
from boutique.mesh.propagation import install_propagators
from boutique.mesh.settings import MeshSettings, SignalSettings, TracingSettings

if TYPE_CHECKING:
    from boutique.mesh.log_export import LogExport
    from boutique.mesh.metric_export import MetricsBridge
    from boutique.mesh.profile_export import Profiling

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
    """What `setup_tracing` installed: the provider (None when tracing is off), where spans go, and the
    export of log records, metrics and profiles beside them (None when off)."""

    provider: TracerProvider | None
    exporter: str  # "otlp grpc http://127.0.0.1:4317", "console", "none" or "disabled"
    queue: SendingQueue | None = None  # the OTLP sending queue, when spans go by OTLP
    logs: LogExport | None = None
    metrics: MetricsBridge | None = None
    profiling: Profiling | None = None

    def queues(self) -> list[SendingQueue]:
        """The sending queues of every signal exported by OTLP."""
        found = [self.queue] if self.queue is not None else []
        if self.logs is not None:
            found.append(self.logs.queue)
        if self.metrics is not None:
            found.append(self.metrics.queue)
        if self.profiling is not None:
            found.append(self.profiling.queue)
        return found

    def shutdown(self, within: float | None = None) -> None:
        """Deliver what is still queued and stop exporting (at process exit): the metrics as they are now,
        the batched log records and the last profile window join their queues, then every queue gets the
        same time side by side, at most `within` when given (what is left of the stop: a backend that is
        gone is not waited for)."""
        if self.profiling is not None:
            self.profiling.stop()
        if self.metrics is not None:
            self.metrics.stop()
        if self.logs is not None:
            self.logs.flush_to_queue()
        stopping = [(queue, queue.stop(within)) for queue in self.queues()]
        started = time.monotonic()
        for queue, limit in stopping:
            if limit is not None:
                queue.join(limit - (time.monotonic() - started))
        if self.provider is not None:
            self.provider.shutdown()  # its queue's own shutdown returns at once: stopped above


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


def _start_signals(
    provider: TracerProvider, settings: TracingSettings, signals: SignalSettings, instance: str
) -> tuple[LogExport | None, MetricsBridge | None]:
    """Start exporting log records and metrics as `signals` ask, under the spans' resource."""
    logs = metrics = None
    spool = settings.spool_dir / instance if settings.spool_dir is not None else None
    if signals.logs:
        from boutique.mesh.log_export import start_log_export

        logs = start_log_export(
            provider.resource, signals.logs_target, settings.queue, spool / "logs" if spool else None
        )
    if signals.metrics:
        from boutique.mesh.metric_export import MetricsBridge
        from boutique.mesh.otlp_send import METRICS

        queue = SendingQueue(
            signals.metrics_target.transport,
            settings.queue,
            spool / "metrics" if spool else None,
            signal=METRICS,
        )
        metrics = MetricsBridge(queue, provider.resource, signals.metrics_interval)
    return logs, metrics


def _under_gevent() -> bool:
    """Whether gevent patched `threading` here (threads are greenlets: nothing for a sampler to see)."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


def _start_profiling(
    provider: TracerProvider, settings: TracingSettings, signals: SignalSettings, instance: str
) -> tuple[Profiling | None, str]:
    """Start profiling as `signals` ask; what it does, for the "tracing" log line."""
    if not signals.profiling:
        return None, "off"
    if _under_gevent():
        return None, "off (gevent)"
    from boutique.mesh.profile_export import start_profiling

    spool = settings.spool_dir / instance / "profiles" if settings.spool_dir is not None else None
    target = signals.profiles_target
    profiling = start_profiling(
        provider,
        target,
        signals.profiling_hz,
        signals.profiling_interval,
        settings.queue,
        spool,
        signals.profiling_cpu,
    )
    where = f"otlp {target.protocol} {target.endpoint}"
    profiler = profiling.profiler
    cpu = f"cpu: {profiler.cpu_source}" + (f", {profiler.cpu_fallback}" if profiler.cpu_fallback else "")
    return profiling, f"{where} at {signals.profiling_hz} Hz every {signals.profiling_interval:g} s ({cpu})"


def setup_tracing(
    service: str,
    instance: str,
    version: str = "",
    settings: TracingSettings | None = None,
    signals: SignalSettings | None = None,
) -> TracingSetup:
    """Install this process's tracer provider and propagators, and the export of its log records, metrics
    and profiles; a no-op set-up when OTEL_SDK_DISABLED.

    `service` names the process unless OTEL_SERVICE_NAME does; the instance id and version become
    `service.instance.id` and `service.version`, and `deployment.environment` defaults to "local".
    `settings` and `signals` default to the process's (`MeshSettings.current().tracing` and `.signals`).
    """
    settings = settings or MeshSettings.current().tracing
    signals = signals or MeshSettings.current().signals
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
    logs, metrics = _start_signals(provider, settings, signals, instance)
    profiling, profiled = _start_profiling(provider, settings, signals, instance)
    log.info(
        "tracing",
        extra={
            "exporter": where,
            "sampler": type(provider.sampler).__name__,
            "logs": f"otlp {signals.logs_target.protocol} {signals.logs_target.endpoint}" if logs else "none",
            "metrics": (
                f"otlp {signals.metrics_target.protocol} {signals.metrics_target.endpoint} "
                f"every {signals.metrics_interval:g} s"
                if metrics
                else "none"
            ),
            "profiling": profiled,
        },
    )
    queue = processor if isinstance(processor, SendingQueue) else None
    setup = TracingSetup(provider, where, queue, logs, metrics, profiling)
    if logs is not None or metrics is not None or profiling is not None:
        atexit.register(setup.shutdown)  # a process that never stops it (Locust's) still flushes at its exit
    return setup
