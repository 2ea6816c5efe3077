"""Log records go over OTLP beside the JSON lines: a real OTLP receiver on loopback, real sockets."""

from __future__ import annotations

import datetime
import io
import json
import logging
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import REGISTRY, generate_latest

from boutique.mesh.export_queue import QueueSettings
from boutique.mesh.log_export import LogExport, start_log_export
from boutique.mesh.log_scrub import scrub_text
from boutique.mesh.logs import configure_logging
from boutique.mesh.otlp_send import LOGS, OtlpTarget
from boutique.run.ports import free_port
from tests.mesh.otlp_receiver import OtlpReceiver, Record, wait_for

FAST = QueueSettings(schedule_delay=0.05, retry_initial=0.05, retry_max=0.2, shutdown_timeout=1.0)
RESOURCE = Resource.create({"service.name": "shop-test", "service.instance.id": "shop-test-1"})
CARD, CARD_SPACED = "4432-8015-6152-0454", "5555 5555 5555 4444"
CVV = "9183"
EMAIL = "alex.reader@example.com"

app = logging.getLogger("tests.signals.app")
app.setLevel(logging.DEBUG)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    found = OtlpReceiver().start()
    yield found
    found.stop()


def export_to(receiver: OtlpReceiver, settings: QueueSettings = FAST) -> LogExport:
    target = OtlpTarget("http/protobuf", f"{receiver.endpoint}/v1/logs", timeout=2.0, signal=LOGS)
    return start_log_export(RESOURCE, target, settings)


@pytest.fixture
def export(receiver: OtlpReceiver) -> Iterator[LogExport]:
    found = export_to(receiver)
    yield found
    found.flush_to_queue()
    found.queue.shutdown(1.0)


def delivered(export: LogExport, receiver: OtlpReceiver, count: int) -> list[Record]:
    """The app's records once `count` of them have arrived."""
    export.provider.force_flush()

    def ours() -> list[Record] | None:
        found = [r for r in receiver.log_records() if r.scope == app.name]
        return found if len(found) >= count else None

    return wait_for(ours, f"{count} records of {app.name}")


def test_records_carry_the_active_spans_ids_and_the_spans_resource(
    export: LogExport, receiver: OtlpReceiver
) -> None:
    tracer = TracerProvider().get_tracer("test")
    app.info("before any span")
    with tracer.start_as_current_span("checkout") as span:
        app.warning("inside the span", extra={"order_id": "o-1", "items": 3})
        context = span.get_span_context()
    outside, inside = delivered(export, receiver, 2)
    assert inside.body == "inside the span"
    assert inside.record.trace_id.hex() == format(context.trace_id, "032x")
    assert inside.record.span_id.hex() == format(context.span_id, "016x")
    assert (inside.record.severity_text, inside.record.severity_number) == ("WARN", 13)
    assert inside.attributes["order_id"] == "o-1" and inside.attributes["items"] == 3
    assert inside.resource["service.name"] == "shop-test"
    assert inside.resource["service.instance.id"] == "shop-test-1"
    assert outside.body == "before any span" and outside.record.severity_text == "INFO"
    assert outside.record.trace_id == b"" and outside.record.span_id == b""


def test_card_numbers_cvvs_and_emails_never_leave_in_a_record(
    export: LogExport, receiver: OtlpReceiver
) -> None:
    app.info("paid with %s, cvv %s, for %s", CARD, CVV, EMAIL)
    app.warning(
        "order",
        extra={
            "card": CARD_SPACED,
            "credit_card_cvv": CVV,
            "cvv": int(CVV),
            "customer": {"email": EMAIL, "cards": [CARD]},
        },
    )
    try:
        raise ValueError(f"card {CARD} of {EMAIL} refused")
    except ValueError:
        app.exception("charge failed")
    records = delivered(export, receiver, 3)
    sent = json.dumps([[r.body, r.attributes] for r in records])
    for secret in (CARD, CARD.replace("-", ""), CARD_SPACED, CARD_SPACED.replace(" ", ""), EMAIL, CVV):
        assert secret not in sent, f"{secret!r} was sent"
    assert records[0].body == "paid with ************0454, cvv ***, for a***@example.com"
    order = records[1].attributes
    assert order["card"] == "************4444" and order["credit_card_cvv"] == order["cvv"] == "***"
    assert order["customer"] == {"email": "a***@example.com", "cards": ["************0454"]}
    failed = records[2].attributes
    assert failed["exception.type"] == "ValueError"
    assert "************0454" in failed["exception.stacktrace"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("card 4432 8015 6152 0454 ok", "card ************0454 ok"),
        ("order 1234567890123 not a card", "order 1234567890123 not a card"),  # fails the Luhn check
        ("to j***@example.com", "to j***@example.com"),  # masked already: left as it is
        ("to Alex.Reader+shop@mail.example.co.uk", "to A***@mail.example.co.uk"),
        ('{"credit_card_cvv": "123"}', '{"credit_card_cvv": "***"}'),
        ("CVV must be 0 to 9999", "CVV must be 0 to 9999"),  # the payment service's own message
        ("nothing to hide", "nothing to hide"),
    ],
)
def test_scrubbing_masks_what_it_must_and_nothing_else(text: str, expected: str) -> None:
    assert scrub_text(text) == expected


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_extras_an_attribute_cannot_hold_are_sent_as_their_text_without_warnings(
    export: LogExport, receiver: OtlpReceiver
) -> None:
    sdk_warnings = _Collect()
    logging.getLogger("opentelemetry").addHandler(sdk_warnings)
    try:
        when = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
        app.info("odd extras", extra={"path": Path("/srv/outbox"), "when": when, "nothing": None})
        (record,) = delivered(export, receiver, 1)
    finally:
        logging.getLogger("opentelemetry").removeHandler(sdk_warnings)
    assert record.attributes["path"] == "/srv/outbox"
    assert record.attributes["when"] == str(when)
    assert record.attributes["nothing"] == "null"
    assert [r.getMessage() for r in sdk_warnings.records] == []


def test_the_exports_own_records_are_never_exported_even_through_an_outage() -> None:
    receiver = OtlpReceiver()  # not listening yet: the export fails and says so in its own log
    export = export_to(receiver)
    try:
        for number in range(5):
            app.info(f"shopper record {number}")
        logging.getLogger("boutique.mesh.export_queue").warning("queue noise")
        logging.getLogger("opentelemetry.sdk._logs").warning("sdk noise")
        thread = threading.Thread(target=lambda: app.warning("exporter thread noise"), name="otlp-helper")
        thread.start()
        thread.join()
        export.provider.force_flush()
        wait_for(lambda: export.queue.counts.retries >= 3, "retries while the receiver is away")
        receiver.start()
        wait_for(lambda: export.queue.queued_items == 0, "the queue drained")
        app.info("after the outage")
        export.provider.force_flush()
        wait_for(lambda: any(r.body == "after the outage" for r in receiver.log_records()), "a later record")
        bodies = [r.body for r in receiver.log_records()]
        assert bodies == [*(f"shopper record {n}" for n in range(5)), "after the outage"]
        assert export.queue.counts.exported == 6
    finally:
        export.flush_to_queue()
        export.queue.shutdown(1.0)
        receiver.stop()


def test_records_made_while_the_receiver_is_down_arrive_after_and_the_queue_stays_bounded() -> None:
    receiver = OtlpReceiver()
    bounded = QueueSettings(
        max_spans=1200, max_bytes=4 * 1024 * 1024, retry_initial=0.05, retry_max=0.2, shutdown_timeout=1.0
    )
    export = export_to(receiver, bounded)
    try:
        most = 0
        for number in range(3000):
            app.info(f"record {number:04d}")
            if number % 250 == 249:  # the batch processor's own queue (2048 records) never overflows
                export.provider.force_flush()
                most = max(most, export.queue.queued_items)
        wait_for(lambda: export.queue.counts.retries >= 2, "the receiver found away")
        most = max(most, export.queue.queued_items)
        print(f"\nat most {most} records queued, {export.queue.queued_bytes} bytes")
        assert most <= 1200 and export.queue.queued_bytes <= 4 * 1024 * 1024
        assert export.queue.counts.dropped_full >= 1800
        receiver.start()
        wait_for(lambda: export.queue.queued_items == 0, "the queue drained")
        bodies = [r.body for r in receiver.log_records()]
        assert 0 < len(bodies) <= 1200
        assert len(bodies) + export.queue.counts.dropped_full == 3000
        assert bodies == [f"record {n:04d}" for n in range(3000 - len(bodies), 3000)]  # the newest, in order
        metrics = generate_latest(REGISTRY).decode()
        assert 'boutique_telemetry_log_records_dropped_total{reason="queue_full"}' in metrics
        assert 'boutique_telemetry_export_retries_total{signal="logs"}' in metrics
    finally:
        export.flush_to_queue()
        export.queue.shutdown(1.0)
        receiver.stop()


def test_over_grpc_records_go_to_the_logs_service_and_partial_success_is_counted() -> None:
    received: list[ExportLogsServiceRequest] = []

    def export_logs(raw: bytes, context: grpc.ServicerContext) -> bytes:
        received.append(ExportLogsServiceRequest.FromString(raw))
        answer = ExportLogsServiceResponse()
        answer.partial_success.rejected_log_records = 1
        return answer.SerializeToString()

    port = free_port()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    handler = grpc.unary_unary_rpc_method_handler(export_logs)
    service, method = LOGS.grpc_method.strip("/").split("/")
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service, {method: handler})])
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    export = start_log_export(RESOURCE, OtlpTarget("grpc", f"127.0.0.1:{port}", signal=LOGS), FAST)
    try:
        app.info("one")
        app.info("two")
        export.provider.force_flush()
        wait_for(
            lambda: export.queue.counts.exported + export.queue.counts.dropped_rejected >= 2, "the answer"
        )
        assert service == "opentelemetry.proto.collector.logs.v1.LogsService" and method == "Export"
        bodies = [
            r.body.string_value
            for request in received
            for resource_logs in request.resource_logs
            for scope_logs in resource_logs.scope_logs
            for r in scope_logs.log_records
        ]
        assert bodies == ["one", "two"]
        counts = export.queue.counts  # each answer refuses one of its records
        assert counts.exported + counts.dropped_rejected == 2 and counts.dropped_rejected == len(received)
    finally:
        export.flush_to_queue()
        export.queue.shutdown(1.0)
        server.stop(0)


def test_the_json_handler_set_up_afterwards_keeps_the_otlp_one(
    export: LogExport, receiver: OtlpReceiver
) -> None:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    stream = io.StringIO()
    try:
        configure_logging("shop-test", "shop-test-1", stream=stream)
        assert export.handler in root.handlers
        app.info("to both", extra={"order_id": "o-2"})
    finally:
        root.handlers[:] = saved
        root.setLevel(level)
    (record,) = delivered(export, receiver, 1)
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert line["event"] == record.body == "to both"
    assert line["order_id"] == record.attributes["order_id"] == "o-2"
