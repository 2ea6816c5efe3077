"""Mesh basics: duration parsing, static endpoints, JSON logs, and the server's drain on stop."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from boutique.mesh import GrpcServer, ProcessInfo, StaticEndpoints, parse_duration
from boutique.mesh.logs import JsonFormatter
from boutique.shop.productcatalog.server import bindings


def test_parse_duration() -> None:
    assert parse_duration("250ms") == pytest.approx(0.25)
    assert parse_duration("1.5s") == 1.5
    assert parse_duration("2m") == 120
    assert parse_duration("3") == 3
    for bad in ("", "fast", "-1s", "1 parsec"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_static_endpoints_parse_comma_lists_and_reject_garbage() -> None:
    assert StaticEndpoints.parse("a:1, b:2").addresses == ("a:1", "b:2")
    for bad in ("", "nohost", "host:", "host:99999", ":80", "h:x"):
        with pytest.raises(ValueError):
            StaticEndpoints.parse(bad)


@pytest.fixture
def json_log(request: pytest.FixtureRequest) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of the test's own that writes through `JsonFormatter("svc", "svc-0")` into the stream."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("svc", "svc-0"))
    logger = logging.getLogger(f"test.json.{request.node.name}")
    logger.addHandler(handler)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def test_json_formatter_emits_required_fields_and_extras(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_log
    logger.warning("order placed", extra={"order_id": "o-1"})
    entry = json.loads(stream.getvalue())
    assert entry["service"] == "svc" and entry["instance"] == "svc-0"
    assert entry["event"] == "order placed" and entry["level"] == "warning" and entry["order_id"] == "o-1"
    assert entry["timestamp"].endswith("+00:00")


def test_json_formatter_masks_card_numbers_cvvs_and_emails_that_slip_into_a_line(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_log
    try:
        raise ValueError("card 4111 1111 1111 1111 refused for jane.doe@example.com")
    except ValueError:
        logger.exception(
            "charge failed: 4111111111111111 cvv 123", extra={"cvv": 123, "to": "jane.doe@example.com"}
        )
    line = stream.getvalue()
    entry = json.loads(line)
    assert "4111111111111111" not in line and "4111 1111 1111 1111" not in line
    assert "jane.doe@" not in line and "123" not in entry["event"]
    assert entry["event"] == "charge failed: ************1111 cvv ***"
    assert entry["cvv"] == "***" and entry["to"] == "j***@example.com"
    assert "1111" in entry["exception"] and "ValueError" in entry["exception"]


async def test_stop_reports_not_serving_and_lets_in_flight_calls_finish(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EXTRA_LATENCY", "400ms")
    server = GrpcServer(ProcessInfo("productcatalog", "pc-test"), bindings(), grace=3.0, drain_delay=0.3)
    port = await server.start()
    try:
        await _call_during_stop(server, port)
    finally:
        await server.stop()


async def _call_during_stop(server: GrpcServer, port: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        status = (await health.Check(health_pb2.HealthCheckRequest())).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        raw = channel.unary_unary("/hipstershop.ProductCatalogService/ListProducts")
        in_flight = asyncio.ensure_future(raw(b"", timeout=5))
        await asyncio.sleep(0.1)
        stopping = asyncio.create_task(server.stop())
        await asyncio.sleep(0.05)
        status = (await health.Check(health_pb2.HealthCheckRequest())).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert (await in_flight) != b"", "the in-flight call was cut off"
        await stopping


async def test_busy_port_is_a_clear_oserror() -> None:
    first = GrpcServer(ProcessInfo("productcatalog", "a"), bindings())
    port = await first.start()
    try:
        second = GrpcServer(ProcessInfo("productcatalog", "b", port=port), bindings())
        with pytest.raises(OSError, match=f"{port}"):
            await second.start()
    finally:
        await first.stop()
