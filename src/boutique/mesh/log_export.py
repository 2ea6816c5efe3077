"""Log records over OTLP beside the JSON lines: the OpenTelemetry logs SDK behind the root logger.

`opentelemetry-instrumentation-logging`'s `LoggingHandler` sits on the root logger next to the JSON handler
(`boutique.mesh.logs`, whose lines stay as they are); each record it turns into an OTLP log record
carries the trace and span ids of the span active where it was logged, its `extra=` fields as
attributes, the logger's name as instrumentation scope and the process's resource (the spans' own:
`service.name`, `service.instance.id`, ...). A `BatchLogRecordProcessor` (OTEL_BLRP_* variables) batches
them to an exporter that encodes each batch, scrubs card numbers, CVVs and email addresses out of it
(`boutique.mesh.log_scrub`) and hands it to a sending queue of its own (`boutique.mesh.export_queue`): the
same bounds, retries and spool as spans, so a backend that is away blocks nothing and loses nothing
until the queue is full, when the oldest records go and are counted.

No loop: what the export itself logs (the queues, the transports, the OpenTelemetry SDK, and anything
logged on an export thread) stays in the JSON lines and is never exported. Turned on by
`boutique.mesh.tracing.setup_tracing` wherever spans go by OTLP; OTEL_LOGS_EXPORTER=none turns it off.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import Resource

from boutique.mesh.export_queue import QueueSettings, SendingQueue
from boutique.mesh.log_scrub import scrub_logs_request
from boutique.mesh.otlp_send import LOGS, OtlpTarget

# Loggers of the export machinery: never exported (a failing export would otherwise feed itself).
EXPORT_LOGGERS = (
    "opentelemetry",
    "boutique.mesh.export_queue",
    "boutique.mesh.otlp_send",
    "boutique.mesh.log_export",
    "boutique.mesh.metric_export",
)
# Threads that export (the sending queues, the metrics bridge, the SDK's batch processor).
EXPORT_THREADS = ("otlp-", "OtelBatch")
_DOTTED = tuple(f"{name}." for name in EXPORT_LOGGERS)
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_SCALARS = (str, bool, int, float, bytes)


class ExportLoopFilter(logging.Filter):
    """Keep the export's own records (its loggers, its threads) out of the export."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a record the export made itself."""
        if record.name in EXPORT_LOGGERS or record.name.startswith(_DOTTED):
            return False
        return not (record.threadName or "").startswith(EXPORT_THREADS)


def _plain(value: Any) -> bool:
    """Whether a value is one an OTLP attribute holds as it is (scalars, and lists and maps of them)."""
    if isinstance(value, _SCALARS):
        return True
    if isinstance(value, list | tuple):
        return all(_plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _plain(item) for key, item in value.items())
    return False


class OtlpLogHandler(LoggingHandler):
    """The instrumentation's handler, marked as the OTLP one and fed only records it can send as they are.

    An `extra=` value an attribute cannot hold (a path, a date, None) is sent as its text, as the JSON
    line shows it, rather than leaving the SDK to warn about it on every record.
    """

    otlp_export = True  # `configure_logging` keeps this handler when it replaces the JSON one

    def __init__(self, provider: LoggerProvider, level: int = logging.NOTSET) -> None:
        super().__init__(level=level, logger_provider=provider)
        self.addFilter(ExportLoopFilter())

    def emit(self, record: logging.LogRecord) -> None:
        """Send the record (a copy with its odd extras as text, when it has any)."""
        odd = [
            key
            for key, value in vars(record).items()
            if key not in _STANDARD and (key.startswith("_") or not _plain(value))
        ]
        if odd:
            record = copy.copy(record)
            for key in odd:
                if key.startswith("_"):
                    delattr(record, key)
                else:
                    value = getattr(record, key)
                    setattr(record, key, "null" if value is None else str(value))
        super().emit(record)


class QueueLogExporter(LogRecordExporter):
    """Encode each batch as an ExportLogsServiceRequest, scrub it, and queue it for sending."""

    def __init__(self, queue: SendingQueue) -> None:
        self.queue = queue

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        """Queue the batch (never waits for the backend: the queue delivers it)."""
        request = encode_logs(batch)
        scrub_logs_request(request)
        self.queue.submit(request.SerializeToString(), len(batch))
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing: the queue is stopped by its owner, beside the other signals' queues."""

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Deliver what is queued."""
        return self.queue.force_flush(timeout_millis)


@dataclass
class LogExport:
    """What `start_log_export` installed: the provider, the root logger's handler and the sending queue."""

    provider: LoggerProvider
    handler: OtlpLogHandler
    queue: SendingQueue
    stopped: bool = False

    def flush_to_queue(self) -> None:
        """Stop taking records and pass what is batched to the queue (the first half of a stop)."""
        if self.stopped:
            return
        self.stopped = True
        logging.getLogger().removeHandler(self.handler)
        self.provider.shutdown()  # the batch processor hands its last records to the exporter


def start_log_export(
    resource: Resource,
    target: OtlpTarget,
    queue_settings: QueueSettings | None = None,
    spool_dir: Path | None = None,
) -> LogExport:
    """Send every record the root logger passes on to `target` over OTLP, as well as wherever it goes now."""
    queue = SendingQueue(target.transport, queue_settings, spool_dir, signal=LOGS)
    provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_log_record_processor(BatchLogRecordProcessor(QueueLogExporter(queue)))
    handler = OtlpLogHandler(provider)
    logging.getLogger().addHandler(handler)
    return LogExport(provider, handler, queue)
