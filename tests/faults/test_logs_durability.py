"""kill -9 of the observatory while two SDK exporters (OTLP/HTTP and OTLP/gRPC) send it log records.

An export the observatory answered with success is acknowledged: its records were committed before
the answer. After the kill, the store opened again must hold every acknowledged record, and the
observatory started again on it must serve them.
"""

from __future__ import annotations

import itertools
import logging
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    InMemoryLogRecordExporter,
    LogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.resources import Resource

from boutique.observatory.store.duckdb_store import DuckDBStore
from tests.observatory.process import start_observatory

PER_EXPORT = 50


def made_records(service: str, count: int, numbers: itertools.count[int]) -> Sequence[ReadableLogRecord]:
    """`count` records logged through the LoggingHandler, each body unique ("<service> <n>")."""
    kept = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource.create({"service.name": service}), shutdown_on_exit=False)
    provider.add_log_record_processor(SimpleLogRecordProcessor(kept))
    log = logging.getLogger(f"durability.{service}")
    log.handlers = [LoggingHandler(logger_provider=provider)]
    log.propagate = False
    log.setLevel(logging.INFO)
    for _ in range(count):
        log.info("%s %d", service, next(numbers), extra={"padding": "p" * 200})
    provider.shutdown()
    return kept.get_finished_logs()


class Sender(threading.Thread):
    """Exports batches of records until stopped; the bodies of every export answered SUCCESS."""

    def __init__(self, exporter: LogRecordExporter, service: str) -> None:
        super().__init__(daemon=True)
        self.exporter, self.service = exporter, service
        self.numbers = itertools.count()
        self.acknowledged: list[str] = []
        self.failed = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            records = made_records(self.service, PER_EXPORT, self.numbers)
            if self.exporter.export(records) is LogRecordExportResult.SUCCESS:
                self.acknowledged += [str(r.log_record.body) for r in records]
            else:
                self.failed += 1
                return  # the observatory is gone


@pytest.mark.parametrize("acknowledged_before_kill", [200, 1500])
def test_kill_9_loses_no_acknowledged_log_record(tmp_path: Path, acknowledged_before_kill: int) -> None:
    data = tmp_path / "data"
    first = start_observatory(data)
    senders = [
        Sender(
            HttpLogExporter(endpoint=f"http://127.0.0.1:{first.ports['otlp_http']}/v1/logs", timeout=2),
            "http",
        ),
        Sender(
            GrpcLogExporter(endpoint=f"127.0.0.1:{first.ports['otlp_grpc']}", insecure=True, timeout=2),
            "grpc",
        ),
    ]
    for sender in senders:
        sender.start()
    try:
        deadline = time.monotonic() + 60
        while sum(len(s.acknowledged) for s in senders) < acknowledged_before_kill or not all(
            s.acknowledged for s in senders
        ):
            assert time.monotonic() < deadline, "the exports were not acknowledged in time"
            time.sleep(0.01)
    finally:
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL  # while both senders are mid-export
        for sender in senders:
            sender.stopping.set()
            sender.join(60)
    acknowledged = {body for s in senders for body in s.acknowledged}
    failed = [s.failed for s in senders]
    print(f"{len(acknowledged)} records acknowledged before the kill; failed exports: {failed}")

    store = DuckDBStore(data / "observatory.duckdb")
    try:
        stored = {row[0] for row in store.read(lambda c: c.execute("SELECT body FROM logs").fetchall())}
    finally:
        store.close()
    missing = acknowledged - stored
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:5]}"
    print(f"{len(stored)} records stored ({len(stored) - len(acknowledged)} more than acknowledged)")

    second = start_observatory(data)
    try:
        for sender in senders:
            last = sender.acknowledged[-1]
            found = httpx.get(f"{second.query_url}/api/logs", params={"q": last, "service": sender.service})
            assert last in [r["body"] for r in found.json()["data"]]
    finally:
        second.stop()
