"""The observatory as users run it: real OpenTelemetry exporters in, the three query APIs out, kill -9."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.exporter.zipkin.json import ZipkinExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from tests.observatory.process import ObservatoryProcess, start_observatory


@pytest.fixture
def observatory(tmp_path: Path) -> Iterator[ObservatoryProcess]:
    running = start_observatory(tmp_path / "data")
    yield running
    running.stop()


def finished_trace(service: str) -> list[ReadableSpan]:
    """One nested trace (server → client → internal, with an error, events and a link), finished."""
    kept = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "service.instance.id": f"{service}-1"})
    )
    provider.add_span_processor(SimpleSpanProcessor(kept))
    tracer = provider.get_tracer("tests.observatory", "1.2.3")
    with tracer.start_as_current_span("warm-up") as other:
        linked = other.get_span_context()
    with tracer.start_as_current_span(
        "GET /cart", kind=SpanKind.SERVER, attributes={"http.method": "GET", "http.status_code": 200}
    ) as root:
        root.add_event("cart.loaded", {"items": 3, "cached": True})
        with tracer.start_as_current_span(
            "GetCart", kind=SpanKind.CLIENT, links=[Link(linked, {"reason": "batch"})]
        ) as child:
            child.set_attribute("rpc.system", "grpc")
            child.set_attribute("ratio", 0.25)
            with tracer.start_as_current_span("decode", attributes={"bytes": 512}) as leaf:
                leaf.set_status(Status(StatusCode.ERROR, "bad frame"))
    provider.shutdown()
    spans = [s for s in kept.get_finished_spans() if s.name != "warm-up"]
    assert len(spans) == 3
    return spans


def make_trace(exporter: SpanExporter, service: str) -> list[ReadableSpan]:
    """Export one nested trace through `exporter`, which must report success; its spans."""
    spans = finished_trace(service)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    return spans


def hex_id(number: int, width: int) -> str:
    return f"{number:0{width}x}"


def check_jaeger(trace: dict, spans: list[ReadableSpan], service: str, with_links: bool = True) -> None:
    """The Jaeger v1 trace holds the exported spans with ids, parentage, timing, tags, logs and status."""
    by_id = {s["spanID"]: s for s in trace["spans"]}
    assert set(by_id) == {hex_id(s.context.span_id, 16) for s in spans}
    for sent in spans:
        got = by_id[hex_id(sent.context.span_id, 16)]
        assert got["traceID"] == hex_id(sent.context.trace_id, 32)
        assert got["operationName"] == sent.name
        assert got["startTime"] == sent.start_time // 1000
        assert got["duration"] == (sent.end_time - sent.start_time) // 1000
        assert trace["processes"][got["processID"]]["serviceName"] == service
        parents = [r["spanID"] for r in got["references"] if r["refType"] == "CHILD_OF"]
        assert parents == ([hex_id(sent.parent.span_id, 16)] if sent.parent else [])
        tags = {t["key"]: t for t in got["tags"]}
        for key, value in (sent.attributes or {}).items():
            assert tags[key]["value"] == value
        if sent.status.status_code is StatusCode.ERROR:
            assert tags["error"]["value"] is True
            assert tags["otel.status_code"]["value"] == "ERROR"
    root = next(s for s in trace["spans"] if s["operationName"] == "GET /cart")
    assert {t["key"]: t["type"] for t in root["tags"]}["http.status_code"] == "int64"
    assert [f["value"] for f in root["logs"][0]["fields"] if f["key"] == "event"] == ["cart.loaded"]
    if with_links:
        client = next(s for s in trace["spans"] if s["operationName"] == "GetCart")
        assert [r["refType"] for r in client["references"]].count("FOLLOWS_FROM") == 1


@pytest.mark.parametrize("protocol", ["otlp-grpc", "otlp-http"])
def test_otlp_exporters_round_trip_through_every_query_api(
    observatory: ObservatoryProcess, protocol: str
) -> None:
    ports = observatory.ports
    exporter: SpanExporter
    if protocol == "otlp-grpc":
        exporter = GrpcExporter(endpoint=f"127.0.0.1:{ports['otlp_grpc']}", insecure=True)
    else:
        exporter = HttpExporter(endpoint=f"http://127.0.0.1:{ports['otlp_http']}/v1/traces")
    service = f"cart-{protocol}"
    spans = make_trace(exporter, service)
    trace_id = hex_id(spans[0].context.trace_id, 32)

    with httpx.Client(base_url=observatory.query_url, timeout=10) as client:
        v1 = client.get(f"/api/traces/{trace_id}").json()
        assert v1["errors"] is None and len(v1["data"]) == 1
        check_jaeger(v1["data"][0], spans, service)

        v3 = client.get(f"/api/v3/traces/{trace_id}").json()
        otlp_spans = [
            span
            for resource in v3["result"]["resourceSpans"]
            for scope in resource["scopeSpans"]
            for span in scope["spans"]
        ]
        assert {s["spanId"] for s in otlp_spans} == {hex_id(s.context.span_id, 16) for s in spans}
        for sent in spans:
            got = next(s for s in otlp_spans if s["spanId"] == hex_id(sent.context.span_id, 16))
            assert got["traceId"] == trace_id
            assert int(got["startTimeUnixNano"]) // 1000 == sent.start_time // 1000
            assert got.get("parentSpanId", "") == (hex_id(sent.parent.span_id, 16) if sent.parent else "")
            if sent.status.status_code is StatusCode.ERROR:
                assert got["status"]["code"] == 2 and got["status"]["message"] == "bad frame"
        client_span = next(s for s in otlp_spans if s["name"] == "GetCart")
        assert client_span["links"][0]["spanId"]

        zipkin = client.get(f"/api/v2/trace/{trace_id}").json()
        assert {s["id"] for s in zipkin} == {hex_id(s.context.span_id, 16) for s in spans}
        assert (
            next(s for s in zipkin if s["name"] == "get /cart" or s["name"] == "GET /cart")["kind"]
            == "SERVER"
        )

        assert service in client.get("/api/services").json()["data"]


def test_zipkin_exporter_round_trip(observatory: ObservatoryProcess) -> None:
    exporter = ZipkinExporter(endpoint=f"http://127.0.0.1:{observatory.ports['zipkin']}/api/v2/spans")
    spans = make_trace(exporter, "zipkin-shop")
    trace_id = hex_id(spans[0].context.trace_id, 32)
    with httpx.Client(base_url=observatory.query_url, timeout=10) as client:
        trace = client.get(f"/api/traces/{trace_id}").json()["data"][0]
    # Zipkin v2 carries no links and names events only, so those are not compared.
    by_id = {s["spanID"]: s for s in trace["spans"]}
    assert set(by_id) == {hex_id(s.context.span_id, 16) for s in spans}
    for sent in spans:
        got = by_id[hex_id(sent.context.span_id, 16)]
        assert abs(got["startTime"] - sent.start_time / 1000) <= 1  # the Zipkin exporter rounds to µs
        parents = [r["spanID"] for r in got["references"] if r["refType"] == "CHILD_OF"]
        assert parents == ([hex_id(sent.parent.span_id, 16)] if sent.parent else [])
        tags = {t["key"]: t["value"] for t in got["tags"]}
        for key, value in (sent.attributes or {}).items():
            assert str(tags[key]).lower() == str(value).lower()
        assert trace["processes"][got["processID"]]["serviceName"] == "zipkin-shop"
        if sent.status.status_code is StatusCode.ERROR:
            assert tags["error"] is True
    assert any(log for s in trace["spans"] for log in s["logs"])


def test_every_acknowledged_span_survives_kill_9(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = start_observatory(data)
    exporter = GrpcExporter(endpoint=f"127.0.0.1:{first.ports['otlp_grpc']}", insecure=True)
    acknowledged = []
    for round_number in range(5):  # each export answered SUCCESS: the spans were acknowledged
        acknowledged.extend(make_trace(exporter, f"survivor-{round_number}"))
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL

    second = start_observatory(data)
    try:
        with httpx.Client(base_url=second.query_url, timeout=10) as client:
            for sent in acknowledged:
                trace_id = hex_id(sent.context.trace_id, 32)
                body = client.get(f"/api/traces/{trace_id}").json()
                stored = {s["spanID"] for s in body["data"][0]["spans"]}
                assert hex_id(sent.context.span_id, 16) in stored
    finally:
        second.stop()


def test_export_result_is_success_only_for_stored_spans(observatory: ObservatoryProcess) -> None:
    exporter = HttpExporter(endpoint=f"http://127.0.0.1:{observatory.ports['otlp_http']}/v1/traces")
    provider = TracerProvider(resource=Resource.create({"service.name": "acks"}))
    kept = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(kept))
    with provider.get_tracer("t").start_as_current_span("one"):
        pass
    provider.shutdown()
    assert exporter.export(kept.get_finished_spans()) is SpanExportResult.SUCCESS
    with httpx.Client(base_url=observatory.query_url, timeout=10) as client:
        trace_id = hex_id(kept.get_finished_spans()[0].context.trace_id, 32)
        assert client.get(f"/api/traces/{trace_id}").status_code == 200


def test_a_busy_port_is_one_clear_line(observatory: ObservatoryProcess, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "boutique.cli", "observatory", "--data-dir", str(tmp_path / "other"),
         "--port", str(observatory.ports["query"]), "--otlp-grpc-port", "0", "--otlp-http-port", "0",
         "--zipkin-port", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"127.0.0.1:{observatory.ports['query']}" in result.stderr and "busy" in result.stderr
    assert "Traceback" not in result.stderr


def test_binding_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "boutique.cli", "observatory", "--host", "0.0.0.0", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 2
    assert "token" in result.stderr and "Traceback" not in result.stderr


def test_with_a_token_every_request_must_carry_it(tmp_path: Path) -> None:
    running = start_observatory(tmp_path / "data", "--token", "s3cret")
    try:
        with httpx.Client(base_url=running.query_url, timeout=10) as client:
            assert client.get("/api/services").status_code == 401
            assert client.get("/api/services", headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert client.get("/api/services", headers={"Authorization": "Bearer s3cret"}).status_code == 200
            assert client.get("/_healthz").status_code == 200
        with httpx.Client(
            base_url=running.query_url, timeout=10
        ) as browser:  # keeps cookies, as a browser does
            page = browser.get("/search", headers={"Accept": "text/html"})
            assert page.status_code == 303 and page.headers["location"] == "/login"
            assert browser.post("/login", data={"token": "wrong"}).status_code == 401
            assert "observatory_token" not in browser.cookies
            signed_in = browser.post("/login", data={"token": "s3cret"})
            assert signed_in.status_code == 303 and signed_in.headers["location"] == "/search"
            assert "httponly" in signed_in.headers["set-cookie"].lower()
            assert browser.get("/api/services").status_code == 200  # the cookie now stands for the token
        ingest = f"http://127.0.0.1:{running.ports['otlp_http']}/v1/traces"
        assert (
            httpx.post(ingest, content=b"", headers={"Content-Type": "application/x-protobuf"}).status_code
            == 401
        )
        denied = GrpcExporter(endpoint=f"127.0.0.1:{running.ports['otlp_grpc']}", insecure=True, timeout=2)
        allowed = GrpcExporter(
            endpoint=f"127.0.0.1:{running.ports['otlp_grpc']}",
            insecure=True,
            headers={"authorization": "Bearer s3cret"},
        )
        provider = TracerProvider(resource=Resource.create({"service.name": "tokened"}))
        kept = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(kept))
        with provider.get_tracer("t").start_as_current_span("one"):
            pass
        assert denied.export(kept.get_finished_spans()) is SpanExportResult.FAILURE
        assert allowed.export(kept.get_finished_spans()) is SpanExportResult.SUCCESS
    finally:
        running.stop()
