"""Logs through a real `boutique observatory` process: the OpenTelemetry logs SDK in, `/api/logs` out.

Records are sent the way the shop sends them (Python `logging` → the `LoggingHandler` of
opentelemetry-instrumentation-logging → the SDK's OTLP exporters, HTTP and gRPC), and read back with
every filter of the query API and the live tail; bad payloads get their clear refusals and leave
nothing stored; card numbers never reach the store; records outlive a restart.
"""

from __future__ import annotations

import gzip
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.rpc.status_pb2 import Status as RpcStatus
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import LogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from tests.observatory.process import ObservatoryProcess, start_observatory

EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
VISA = "4111 1111 1111 1111"
TRACER = TracerProvider().get_tracer("tests.observatory.logs")


@pytest.fixture
def observatory(tmp_path: Path) -> Iterator[ObservatoryProcess]:
    running = start_observatory(tmp_path / "data", "--max-body", "1MB")
    yield running
    running.stop()


class ShopLogger:
    """A process's logging as the shop sets it up: a `logging.Logger` whose records go out over OTLP."""

    def __init__(self, exporter: LogRecordExporter, service: str, instance: str, name: str) -> None:
        resource = Resource.create({"service.name": service, "service.instance.id": instance})
        self.provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        self.provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
        self.handler = LoggingHandler(logger_provider=self.provider)
        self.log = logging.getLogger(name)
        self.log.handlers = [self.handler]
        self.log.setLevel(logging.DEBUG)
        self.log.propagate = False

    def close(self) -> None:
        self.log.removeHandler(self.handler)
        self.provider.shutdown()


def http_logger(observatory: ObservatoryProcess, service: str, instance: str = "") -> ShopLogger:
    endpoint = f"http://127.0.0.1:{observatory.ports['otlp_http']}/v1/logs"
    return ShopLogger(
        HttpLogExporter(endpoint=endpoint), service, instance or f"{service}-1", f"shop.{service}"
    )


def grpc_logger(observatory: ObservatoryProcess, service: str, instance: str = "") -> ShopLogger:
    exporter = GrpcLogExporter(endpoint=f"127.0.0.1:{observatory.ports['otlp_grpc']}", insecure=True)
    return ShopLogger(exporter, service, instance or f"{service}-1", f"shop.{service}")


def logs(observatory: ObservatoryProcess, **params: Any) -> list[dict[str, Any]]:
    response = httpx.get(f"{observatory.query_url}/api/logs", params=params, timeout=10)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"data"}
    found: list[dict[str, Any]] = response.json()["data"]
    return found


def bodies(found: list[dict[str, Any]]) -> list[str]:
    return [r["body"] for r in found]


def test_sdk_logs_over_http_and_grpc_answer_every_filter(observatory: ObservatoryProcess) -> None:
    cart, payment = http_logger(observatory, "cart"), grpc_logger(observatory, "payment")
    try:
        started = time.time_ns() // 1000
        cart.log.debug("loading cart", extra={"user_id": "ann"})
        with TRACER.start_as_current_span("PlaceOrder") as span:
            cart.log.info("added %d items", 2, extra={"user_id": "ann", "items": 2})
            payment.log.warning("card declined, retrying", extra={"attempt": 1})
            context = span.get_span_context()
        time.sleep(0.002)
        middle = time.time_ns() // 1000
        payment.log.error("payment provider down", extra={"attempt": 2, "retry": True})
        cart.log.critical("Cart store lost")
    finally:
        cart.close()
        payment.close()
    trace_id, span_id = f"{context.trace_id:032x}", f"{context.span_id:016x}"

    everything = logs(observatory)
    assert bodies(everything) == [
        "Cart store lost",
        "payment provider down",
        "card declined, retrying",
        "added 2 items",
        "loading cart",
    ]
    added = everything[3]
    assert set(added) == {
        "time",
        "observedTime",
        "service",
        "instance",
        "severity",
        "severityNumber",
        "body",
        "attributes",
        "resource",
        "scope",
        "traceID",
        "spanID",
    }
    assert added["service"] == "cart" and added["instance"] == "cart-1" and added["scope"] == "shop.cart"
    assert (added["severity"], added["severityNumber"]) == ("INFO", 9)
    assert added["attributes"]["user_id"] == "ann" and added["attributes"]["items"] == 2
    assert added["resource"]["service.name"] == "cart"
    assert (added["traceID"], added["spanID"]) == (trace_id, span_id)
    assert everything[4]["traceID"] == everything[4]["spanID"] == ""
    assert started <= added["time"] <= added["observedTime"]
    assert [r["severity"] for r in everything] == ["FATAL", "ERROR", "WARN", "INFO", "DEBUG"]

    assert bodies(logs(observatory, service="payment")) == [
        "payment provider down",
        "card declined, retrying",
    ]
    assert bodies(logs(observatory, minSeverity="warn")) == bodies(everything[:3])
    assert bodies(logs(observatory, minSeverity="WARNING")) == bodies(everything[:3])
    assert bodies(logs(observatory, minSeverity="17")) == bodies(everything[:2])
    assert bodies(logs(observatory, q="CART")) == ["Cart store lost", "loading cart"]
    assert bodies(logs(observatory, tags=json.dumps({"user_id": "ann", "items": 2}))) == ["added 2 items"]
    assert bodies(logs(observatory, tags=json.dumps({"retry": True}))) == ["payment provider down"]
    assert bodies(logs(observatory, tags=json.dumps({"service.instance.id": "payment-1"}))) == bodies(
        everything[1:3]
    )
    assert bodies(logs(observatory, traceID=trace_id)) == ["card declined, retrying", "added 2 items"]
    assert bodies(logs(observatory, traceID=trace_id, service="cart")) == ["added 2 items"]
    assert bodies(logs(observatory, spanID=span_id, minSeverity="WARN")) == ["card declined, retrying"]
    assert bodies(logs(observatory, start=middle)) == bodies(everything[:2])
    assert bodies(logs(observatory, end=middle - 1)) == bodies(everything[2:])
    assert bodies(logs(observatory, start=started, end=middle, service="cart")) == [
        "added 2 items",
        "loading cart",
    ]
    assert bodies(logs(observatory, limit=2)) == bodies(everything[:2])
    services = httpx.get(f"{observatory.query_url}/api/logs/services", timeout=10).json()
    assert services == {"data": ["cart", "payment"]}


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"minSeverity": "loud"}, "parameter 'minSeverity': unknown severity 'loud'"),
        ({"minSeverity": "25"}, "parameter 'minSeverity': must be at most 24"),
        ({"tags": "[1]"}, "parameter 'tags': must be a JSON object"),
        ({"tags": "{bad"}, "parameter 'tags': not valid JSON"),
        ({"traceID": "xyz"}, "parameter 'traceID': a trace id is 1 to 32 hexadecimal digits"),
        ({"spanID": "0" * 17}, "parameter 'spanID': a span id is 1 to 16 hexadecimal digits"),
        ({"start": "20", "end": "10"}, "parameter 'start': must not be after 'end'"),
        ({"start": "yesterday"}, "parameter 'start': not an integer"),
        ({"limit": "-1"}, "parameter 'limit': must be at least 0"),
    ],
)
def test_bad_parameters_are_400_with_the_error_envelope(
    observatory: ObservatoryProcess, params: dict[str, str], says: str
) -> None:
    for path in ("/api/logs", "/api/logs/tail"):
        response = httpx.get(f"{observatory.query_url}{path}", params=params, timeout=10)
        assert response.status_code == 400
        [error] = response.json()["errors"]
        assert error["code"] == 400 and error["msg"].startswith(says), error


def request_of(*records: LogRecord, service: str = "loadgen") -> ExportLogsServiceRequest:
    out = ExportLogsServiceRequest()
    resource_logs = out.resource_logs.add()
    resource_logs.resource.attributes.add(key="service.name").value.string_value = service
    resource_logs.scope_logs.add().log_records.extend(records)
    return out


def line(body: str, **fields: Any) -> LogRecord:
    return LogRecord(time_unix_nano=time.time_ns(), body=AnyValue(string_value=body), **fields)


def test_at_most_a_thousand_records_come_back(observatory: ObservatoryProcess) -> None:
    payload = request_of(*(line(f"record {i}") for i in range(1001))).SerializeToString()
    response = httpx.post(
        f"http://127.0.0.1:{observatory.ports['otlp_http']}/v1/logs", content=payload, headers=PROTOBUF
    )
    assert response.status_code == 200, response.text
    assert len(logs(observatory)) == 100
    assert len(logs(observatory, limit=5000)) == 1000


def tail_lines(url: str, received: list[str], connected: threading.Event, wanted: int) -> None:
    """Read the tail's lines into `received` until `wanted` data lines came (or the stream ends)."""
    with httpx.stream("GET", url, timeout=httpx.Timeout(10, read=30)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for text in response.iter_lines():
            received.append(text)
            connected.set()
            if sum(1 for t in received if t.startswith("data: ")) >= wanted:
                return


def test_the_live_tail_streams_records_stored_after_it_connected(observatory: ObservatoryProcess) -> None:
    cart, payment = http_logger(observatory, "cart"), http_logger(observatory, "payment")
    try:
        cart.log.warning("before the tail")
        received: list[str] = []
        connected = threading.Event()
        url = f"{observatory.query_url}/api/logs/tail?service=cart&minSeverity=INFO"
        reader = threading.Thread(target=tail_lines, args=(url, received, connected, 2), daemon=True)
        reader.start()
        assert connected.wait(10), "the tail sent nothing"
        payment.log.error("another service")
        cart.log.debug("below the severity")
        cart.log.info("after the tail %d", 1)
        time.sleep(0.7)  # a later poll
        cart.log.error("after the tail %d", 2)
        reader.join(30)
    finally:
        cart.close()
        payment.close()
    print(received)
    assert received[0] == ": tail started"
    events = [json.loads(t.removeprefix("data: ")) for t in received if t.startswith("data: ")]
    assert [e["body"] for e in events] == ["after the tail 1", "after the tail 2"]
    assert all(e["service"] == "cart" for e in events)
    assert any(t.startswith("id: ") for t in received)  # where a reconnecting EventSource goes on


def test_a_tail_reconnecting_with_its_last_event_id_misses_nothing(observatory: ObservatoryProcess) -> None:
    cart = http_logger(observatory, "cart")
    url = f"{observatory.query_url}/api/logs/tail?service=cart"
    try:
        received: list[str] = []
        connected = threading.Event()
        reader = threading.Thread(target=tail_lines, args=(url, received, connected, 1), daemon=True)
        reader.start()
        assert connected.wait(10), "the tail sent nothing"
        cart.log.info("seen by the first connection")
        reader.join(30)
        last_id = [t.removeprefix("id: ") for t in received if t.startswith("id: ")][-1]
        cart.log.info("sent while disconnected")
        resumed: list[str] = []
        headers = {"Last-Event-ID": last_id}
        with httpx.stream("GET", url, headers=headers, timeout=httpx.Timeout(10, read=30)) as response:
            for text in response.iter_lines():
                resumed.append(text)
                if text.startswith("data: "):
                    break
    finally:
        cart.close()
    assert json.loads(resumed[-1].removeprefix("data: "))["body"] == "sent while disconnected"


def test_bad_payloads_get_clear_refusals_and_leave_nothing_stored(observatory: ObservatoryProcess) -> None:
    url = f"http://127.0.0.1:{observatory.ports['otlp_http']}/v1/logs"
    good = request_of(line("good one"))

    malformed = httpx.post(url, content=b"\x0a\xff\xff\xff\xff\x0f", headers=PROTOBUF)
    assert malformed.status_code == 400
    status = RpcStatus.FromString(malformed.content)
    assert status.code == 3 and "not an OTLP ExportLogsServiceRequest" in status.message

    for body, says in [
        (b"{nope", "not valid JSON"),
        (
            b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": "x"}]}]}]}',
            "body must be a JSON object",
        ),
        (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": true}]}]}]}', "timeUnixNano"),
        (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "zz"}]}]}]}', "traceId is not hex"),
    ]:
        refused = httpx.post(url, content=body, headers=JSON)
        assert refused.status_code == 400, body
        assert refused.json()["code"] == 3 and says in refused.json()["message"], refused.json()

    huge = request_of(line("x" * (1 << 20))).SerializeToString()
    assert httpx.post(url, content=huge, headers=PROTOBUF).status_code == 413
    bomb = gzip.compress(request_of(*(line("y" * 1000) for _ in range(2000))).SerializeToString())
    assert len(bomb) < 1 << 20
    refused = httpx.post(url, content=bomb, headers={**PROTOBUF, "Content-Encoding": "gzip"})
    assert (
        refused.status_code == 413
        and "inflated body is larger" in RpcStatus.FromString(refused.content).message
    )
    assert (
        httpx.post(url, content=good.SerializeToString(), headers={"Content-Type": "text/plain"}).status_code
        == 415
    )

    with grpc.insecure_channel(f"127.0.0.1:{observatory.ports['otlp_grpc']}") as channel:
        export = channel.unary_unary(EXPORT)
        with pytest.raises(grpc.RpcError) as failure:
            export(b"\x0a\xff\xff\xff\xff\x0f", timeout=10)
        assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "not an OTLP ExportLogsServiceRequest" in (failure.value.details() or "")
        bad_ids = request_of(line("via grpc", trace_id=b"\x01" * 15), line("kept via grpc"))
        answer = ExportLogsServiceResponse.FromString(export(bad_ids.SerializeToString(), timeout=10))
        assert answer.partial_success.rejected_log_records == 1
        assert "trace_id must be 16 bytes" in answer.partial_success.error_message

    bad_ids = request_of(line("bad span id", span_id=b"\x01\x02"), line("good one"))
    accepted = httpx.post(url, content=bad_ids.SerializeToString(), headers=PROTOBUF)
    assert accepted.status_code == 200
    partial = ExportLogsServiceResponse.FromString(accepted.content).partial_success
    assert partial.rejected_log_records == 1 and "span_id" in partial.error_message
    as_json = httpx.post(url, content=json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"body": {"stringValue": "json bad id"}, "spanId": "0102"}]}]}]}), headers=JSON)  # fmt: skip
    assert as_json.status_code == 200
    assert as_json.json() == {
        "partialSuccess": {"rejectedLogRecords": "1", "errorMessage": partial.error_message}
    }

    assert bodies(logs(observatory)) == ["good one", "kept via grpc"]


def test_card_numbers_never_reach_the_store(observatory: ObservatoryProcess, tmp_path: Path) -> None:
    payment = http_logger(observatory, "payment")
    try:
        payment.log.info(
            f"charging card {VISA}", extra={"card.number": VISA.replace(" ", "-"), "amount": 12.5}
        )
    finally:
        payment.close()
    [stored] = logs(observatory)
    assert stored["body"] == "charging card ************1111"
    assert stored["attributes"]["card.number"] == "************1111"
    observatory.stop()
    from boutique.observatory.store.duckdb_store import DuckDBStore

    store = DuckDBStore(tmp_path / "data" / "observatory.duckdb")
    try:
        count = store.read(
            lambda c: c.execute(
                "SELECT count(*) FROM logs WHERE regexp_matches(body || attributes, '4111[ -]?1111[ -]?1111')"
            ).fetchall()
        )
        assert count == [(0,)]
    finally:
        store.close()


def test_records_survive_a_restart(tmp_path: Path) -> None:
    first = start_observatory(tmp_path / "data")
    try:
        cart = http_logger(first, "cart")
        try:
            cart.log.info("before the restart")
        finally:
            cart.close()
    finally:
        assert first.stop() == 0
    second = start_observatory(tmp_path / "data")
    try:
        assert bodies(logs(second)) == ["before the restart"]
        cart = grpc_logger(second, "cart")
        try:
            cart.log.info("after the restart")
        finally:
            cart.close()
        assert bodies(logs(second)) == ["after the restart", "before the restart"]
    finally:
        second.stop()
