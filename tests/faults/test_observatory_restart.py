"""kill -9 of the observatory while every service exports to it: `up` brings it back at the first try."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import grpc
import httpx
import psutil
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from tests.e2e.harness import eventually, start_up
from tests.faults.traffic import Shoppers, browsing

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def observatory_of(state: dict) -> dict:
    return next(p for p in state["processes"] if p["service"] == "observatory")


def serves_everything(ports: list[int]) -> bool:
    """All four ports answer: OTLP/gRPC takes an empty export, the three HTTP ports their health check."""
    grpc_port, *http_ports = ports
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            export = channel.unary_unary(
                EXPORT,
                request_serializer=trace_service_pb2.ExportTraceServiceRequest.SerializeToString,
                response_deserializer=trace_service_pb2.ExportTraceServiceResponse.FromString,
            )
            export(trace_service_pb2.ExportTraceServiceRequest(), timeout=0.5)
        for port in http_ports:
            if httpx.get(f"http://127.0.0.1:{port}/_healthz", timeout=0.5).status_code >= 500:
                return False
    except (grpc.RpcError, httpx.HTTPError):
        return False
    return True


def lingering(ports: list[int]) -> int:
    """Connections to the ports left in TIME_WAIT (what made the old restart fail)."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        return -1
    return sum(1 for c in connections if c.laddr and c.laddr.port in ports and c.status == "TIME_WAIT")


def test_a_killed_observatory_serves_all_four_ports_again_at_the_first_try(tmp_path: Path) -> None:
    up = start_up(tmp_path)
    try:
        command = " ".join(up.process.args)  # type: ignore[arg-type]
        ports = [int(p) for p in command.split("--observatory-ports ")[1].split()[0].split(",")]
        shoppers = Shoppers(up.url, browsing, count=3, pause=0.05).start()
        time.sleep(3)  # every service now holds export connections to the observatory
        before = observatory_of(up.state())
        os.kill(before["pid"], signal.SIGKILL)
        killed = time.monotonic()
        time_wait = lingering(ports)
        eventually(
            lambda: serves_everything(ports), "the observatory serving its four ports", timeout=60, every=0.05
        )
        back_after = time.monotonic() - killed
        shoppers.stop()
        after = eventually(
            lambda: (o := observatory_of(up.state()))["pid"] not in (None, before["pid"]) and o, "new pid"
        )
        print(f"observatory back after {back_after:.2f} s; {time_wait} connections were in TIME_WAIT")
        assert after["restarts"] == before["restarts"] + 1  # the first try, not the sixth
        log = Path(after["log"]).read_text(errors="replace")
        assert "port busy" not in log
    finally:
        up.stop()
