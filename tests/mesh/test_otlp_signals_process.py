"""A whole process set up as `boutique serve` sets one up sends spans, log records and metrics over OTLP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.mesh.otlp_receiver import OtlpReceiver, plain, wait_for

# What `boutique serve` does for a service (settings, JSON logs, tracing and the signals beside it), then
# one handled RPC logged inside its span, a while of running, and the stop with what is left of it.
SCRIPT = """
import logging, sys, time
from opentelemetry import trace
from boutique.mesh.logs import configure_logging
from boutique.mesh.metrics import SERVER_STATS
from boutique.mesh.settings import MeshSettings
from boutique.mesh.tracing import setup_tracing

MeshSettings.install(MeshSettings.from_env())
configure_logging("cart", "cart-7")
setup = setup_tracing("cart", "cart-7", "9.9.9", MeshSettings.current().tracing)
with trace.get_tracer("test").start_as_current_span("GetCart") as span:
    SERVER_STATS.count("hipstershop.CartService", "GetCart", "OK").inc()
    SERVER_STATS.latency("hipstershop.CartService", "GetCart").observe(0.004)
    logging.getLogger("cart").info(sys.argv[1], extra={"user_id": "u-1"})
print(format(span.get_span_context().trace_id, "032x"), flush=True)
time.sleep(float(sys.argv[2]))
began = time.monotonic()
setup.shutdown(float(sys.argv[3]))
print(round(time.monotonic() - began, 2), flush=True)
"""


def run(receiver: OtlpReceiver, event: str, run_for: float = 1.0, stop_within: float = 2.0, **env: str):  # type: ignore[no-untyped-def]
    """Run the script against `receiver` over OTLP/HTTP; the finished process."""
    variables = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "BOUTIQUE_METRICS_EXPORT_INTERVAL": "0.2",
        "OTEL_BLRP_SCHEDULE_DELAY": "100",
        "BOUTIQUE_EXPORT_RETRY_MAX": "0.2",
        "BOUTIQUE_LOG_STREAM": "stderr",
        **env,
    }
    command = [sys.executable, "-c", SCRIPT, event, str(run_for), str(stop_within)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=variables)


def handled(request) -> float | None:  # type: ignore[no-untyped-def]
    """The GetCart count in one metrics request."""
    for metric in request.resource_metrics[0].scope_metrics[0].metrics:
        if metric.name == "grpc_server_handled":
            for point in metric.sum.data_points:
                labels = {kv.key: plain(kv.value) for kv in point.attributes}
                if labels.get("grpc_method") == "GetCart":
                    return float(point.as_double)
    return None


def test_a_process_sends_spans_logs_and_metrics_under_one_resource_and_keeps_its_json_lines() -> None:
    receiver = OtlpReceiver().start()
    try:
        done = run(receiver, "cart fetched")
        assert done.returncode == 0, done.stderr
        trace_id = done.stdout.split()[0]
        (record,) = [r for r in receiver.log_records() if r.body == "cart fetched"]
        assert record.record.trace_id.hex() == trace_id and record.attributes["user_id"] == "u-1"
        (span,) = [s for s in receiver.spans() if s.name == "GetCart"]
        assert record.record.span_id == span.span_id
        metrics = receiver.metrics()
        assert len(metrics) >= 2  # every 0.2 s for a second, and one at the stop
        assert handled(metrics[-1]) == 1.0
        for resource in (
            record.resource,
            {kv.key: plain(kv.value) for kv in metrics[-1].resource_metrics[0].resource.attributes},
        ):
            assert resource["service.name"] == "cart" and resource["service.instance.id"] == "cart-7"
            assert resource["service.version"] == "9.9.9"
        lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
        (line,) = [entry for entry in lines if entry["event"] == "cart fetched"]
        assert line["trace_id"] == trace_id and line["span_id"] == span.span_id.hex()
        assert set(line) == {
            "timestamp", "level", "service", "instance", "logger", "event", "trace_id", "span_id", "user_id"
        }  # fmt: skip
        setup_line = next(entry for entry in lines if entry["event"] == "tracing")
        assert setup_line["logs"].endswith("/v1/logs") and setup_line["metrics"].endswith("every 0.2 s")
    finally:
        receiver.stop()


def test_logs_and_metrics_can_each_be_switched_off() -> None:
    receiver = OtlpReceiver().start()
    try:
        no_logs = run(receiver, "logs off", run_for=0.5, OTEL_LOGS_EXPORTER="none")
        assert no_logs.returncode == 0, no_logs.stderr
        assert receiver.bodies["logs"] == [] and receiver.metrics() and receiver.spans()
        receiver.bodies = {name: [] for name in receiver.bodies}
        no_metrics = run(receiver, "metrics off", run_for=0.5, OTEL_METRICS_EXPORTER="none")
        assert no_metrics.returncode == 0, no_metrics.stderr
        assert receiver.bodies["metrics"] == [] and receiver.log_records() and receiver.spans()
        receiver.bodies = {name: [] for name in receiver.bodies}
        no_spans = run(receiver, "no spans", run_for=0.5, OTEL_TRACES_EXPORTER="none")
        assert no_spans.returncode == 0, no_spans.stderr
        assert receiver.bodies == {"traces": [], "logs": [], "metrics": []}  # nothing where spans go nowhere
    finally:
        receiver.stop()


def test_a_stop_with_the_backend_away_is_bounded_and_the_next_process_delivers_every_signal(
    tmp_path: Path,
) -> None:
    receiver = OtlpReceiver()  # away
    spool = tmp_path / "spool"
    began = time.monotonic()
    away = run(receiver, "said while the backend was away", 1.0, 1.0, BOUTIQUE_EXPORT_SPOOL_DIR=str(spool))
    assert away.returncode == 0, away.stderr
    stop_seconds = float(away.stdout.split()[1])
    print(
        f"\nstop with the backend away: {stop_seconds} s (within 1.0 s asked), run {time.monotonic() - began:.1f} s"
    )
    instance = spool / "cart-7"
    assert list(instance.glob("*.otlp")) and list((instance / "logs").glob("*.otlp"))
    assert list((instance / "metrics").glob("*.otlp"))
    receiver.start()
    try:
        back = run(receiver, "said once it was back", 0.2, 2.0, BOUTIQUE_EXPORT_SPOOL_DIR=str(spool))
        assert back.returncode == 0, back.stderr
        bodies = {r.body for r in receiver.log_records()}
        assert {"said while the backend was away", "said once it was back"} <= bodies
        wait_for(lambda: not list(instance.rglob("*.otlp")), "the spool emptied")
        assert len([s for s in receiver.spans() if s.name == "GetCart"]) == 2
        assert len(receiver.metrics()) >= 2
    finally:
        receiver.stop()
