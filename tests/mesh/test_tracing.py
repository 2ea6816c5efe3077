"""Tracing in the mesh: span shapes of real gRPC calls, propagation formats, and the set-up from OTEL_*."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace

from boutique.mesh.propagation import AcceptingPropagator, configured_names

SCENARIOS = Path(__file__).with_name("tracing_scenarios.py")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


def run_python(code_or_file: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a Python file or snippet in a fresh interpreter (a tracer provider is set once per process)."""
    argv = (
        [sys.executable, str(code_or_file)]
        if isinstance(code_or_file, Path)
        else [sys.executable, "-c", code_or_file]
    )
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env={**os.environ, **env})


@pytest.fixture(scope="module")
def recorded() -> dict[str, Any]:
    """Spans and log lines of three calls (ok, NOT_FOUND, unexpected error) and a health check."""
    done = run_python(SCENARIOS, OTEL_TRACES_EXPORTER="none", OTEL_SERVICE_NAME="")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def grpc_spans(recorded: dict[str, Any]) -> list[dict[str, Any]]:
    """The spans of the gRPC scenarios."""
    return [s for s in recorded["spans"] if s["attributes"].get("rpc.system") == "grpc"]


def pairs(recorded: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(client span, server span) of each call, in call order."""
    spans = grpc_spans(recorded)
    clients = [s for s in spans if s["kind"] == "CLIENT"]
    servers = {s["parent_id"]: s for s in spans if s["kind"] == "SERVER"}
    return [(client, servers[client["span_id"]]) for client in clients]


def test_each_call_is_a_client_span_with_the_server_span_as_its_child(recorded: dict[str, Any]) -> None:
    calls = pairs(recorded)
    assert len(calls) == 3
    assert len(grpc_spans(recorded)) == 6  # the health check made none
    for client, server in calls:
        assert client["trace_id"] == server["trace_id"]
        assert client["name"] == server["name"] == "hipstershop.ProductCatalogService/GetProduct"
        for span in (client, server):
            assert span["attributes"]["rpc.system"] == "grpc"
            assert span["attributes"]["rpc.service"] == "hipstershop.ProductCatalogService"
            assert span["attributes"]["rpc.method"] == "GetProduct"
        assert client["attributes"]["mesh.instance"]
        assert client["attributes"]["server.address"] == "127.0.0.1"
        assert client["attributes"]["server.port"] > 0
        assert client["attributes"]["mesh.attempt"] == 1
        assert server["attributes"]["network.peer.address"] == "127.0.0.1"
    assert len({client["trace_id"] for client, _ in calls}) == 3  # no call inherits another's trace


def test_status_codes_follow_the_rpc_conventions(recorded: dict[str, Any]) -> None:
    (ok_client, ok_server), (missing_client, missing_server), (boom_client, boom_server) = pairs(recorded)
    assert (
        ok_client["attributes"]["rpc.grpc.status_code"]
        == ok_server["attributes"]["rpc.grpc.status_code"]
        == 0
    )
    assert ok_client["status"] == ok_server["status"] == "UNSET"
    # NOT_FOUND: the caller's call failed; the server did its job.
    assert missing_client["attributes"]["rpc.grpc.status_code"] == 5
    assert missing_client["status"] == "ERROR"
    assert missing_server["attributes"]["rpc.grpc.status_code"] == 5
    assert missing_server["status"] == "UNSET"
    # An unexpected exception: INTERNAL, an error on both sides, the exception recorded where it happened.
    assert boom_server["attributes"]["rpc.grpc.status_code"] == 13
    assert boom_server["status"] == boom_client["status"] == "ERROR"
    assert "exception" in boom_server["events"]


def test_resource_names_service_instance_and_version(recorded: dict[str, Any]) -> None:
    span = recorded["spans"][0]
    assert span["service"] == "scenario-app"
    assert span["instance"] == "scenario-app-1"


def test_http_calls_are_client_spans_and_requests_server_spans_named_by_route(
    recorded: dict[str, Any],
) -> None:
    spans = [s for s in recorded["spans"] if s["attributes"].get("rpc.system") != "grpc"]
    by_id = {s["span_id"]: s for s in spans}
    servers = [s for s in spans if s["kind"] == "SERVER"]
    assert [s["name"] for s in servers] == ["GET /items/{item}"]  # the probe made no server span
    assert servers[0]["attributes"]["http.route"] == "/items/{item}"
    client = by_id[servers[0]["parent_id"]]
    assert client["kind"] == "CLIENT" and client["trace_id"] == servers[0]["trace_id"]
    call = by_id[client["parent_id"]]
    assert call["name"] == "mesh web.GET" and call["attributes"]["mesh.attempt"] == 1


def test_log_lines_written_inside_a_span_carry_its_ids(recorded: dict[str, Any]) -> None:
    servers = [server for _, server in pairs(recorded)]
    lines = [json.loads(line) for line in recorded["logs"]]
    assert len(lines) == 3
    for line, server in zip(lines, servers, strict=True):
        assert line["trace_id"] == server["trace_id"]
        assert line["span_id"] == server["span_id"]


def context_of(carrier: dict[str, str], inject: str = "tracecontext,baggage") -> trace.SpanContext:
    """The span context the accepting propagator reads from headers."""
    context = AcceptingPropagator(configured_names(inject)).extract(carrier)
    return trace.get_current_span(context).get_span_context()


@pytest.mark.parametrize(
    "headers",
    [
        {"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-01"},
        {"b3": f"{TRACE_ID}-{SPAN_ID}-1"},
        {"x-b3-traceid": TRACE_ID, "x-b3-spanid": SPAN_ID, "x-b3-sampled": "1"},
    ],
    ids=["w3c", "b3-single", "b3-multi"],
)
def test_w3c_and_both_b3_forms_are_accepted(headers: dict[str, str]) -> None:
    context = context_of(headers)
    assert format(context.trace_id, "032x") == TRACE_ID
    assert format(context.span_id, "016x") == SPAN_ID
    assert context.is_remote and context.trace_flags.sampled


def test_traceparent_wins_over_b3_when_both_arrive() -> None:
    other = "a" * 32
    context = context_of({"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-01", "b3": f"{other}-{'b' * 16}-1"})
    assert format(context.trace_id, "032x") == TRACE_ID


def test_garbage_headers_start_no_trace() -> None:
    assert not context_of({"traceparent": "00-zz-yy-01", "b3": "nonsense"}).is_valid


def test_outgoing_calls_carry_only_the_configured_formats() -> None:
    span = trace.NonRecordingSpan(
        trace.SpanContext(int(TRACE_ID, 16), int(SPAN_ID, 16), True, trace.TraceFlags(1))
    )
    context = trace.set_span_in_context(span)
    w3c: dict[str, str] = {}
    AcceptingPropagator(configured_names("")).inject(w3c, context)
    assert set(w3c) == {"traceparent"}
    b3: dict[str, str] = {}
    AcceptingPropagator(configured_names("b3multi")).inject(b3, context)
    assert set(b3) >= {"x-b3-traceid", "x-b3-spanid"} and "traceparent" not in b3


def test_unknown_propagators_are_skipped() -> None:
    assert configured_names("tracecontext, jaeger ,b3") == ["tracecontext", "b3"]
    assert configured_names("none") == []


def test_sdk_disabled_installs_nothing() -> None:
    code = (
        "from opentelemetry import trace\n"
        "from boutique.mesh.tracing import setup_tracing\n"
        "setup = setup_tracing('x', 'x-1')\n"
        "print(setup.exporter, type(trace.get_tracer_provider()).__name__)\n"
    )
    done = run_python(code, OTEL_SDK_DISABLED="true")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["disabled", "ProxyTracerProvider"]


def test_a_bad_exporter_setting_is_one_clear_line_from_serve() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "boutique.cli", "serve", "currency"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "OTEL_TRACES_EXPORTER": "zipkin-carrier-pigeon",
            "PORT": "0",
            "BOUTIQUE_METRICS": "off",
        },
    )
    assert done.returncode == 2
    expected = "OTEL_TRACES_EXPORTER must be one of otlp, console, none, got 'zipkin-carrier-pigeon'"
    assert expected in done.stderr
    assert "Traceback" not in done.stderr


def test_the_sampler_comes_from_the_standard_variables() -> None:
    code = (
        "from boutique.mesh.tracing import setup_tracing\n"
        "setup = setup_tracing('x', 'x-1')\n"
        "print(setup.provider.sampler.get_description())\n"
    )
    done = run_python(
        code,
        OTEL_TRACES_EXPORTER="none",
        OTEL_TRACES_SAMPLER="parentbased_traceidratio",
        OTEL_TRACES_SAMPLER_ARG="0.25",
    )
    assert done.returncode == 0, done.stderr
    assert "TraceIdRatioBased{0.25}" in done.stdout
    default = run_python(
        code, OTEL_TRACES_EXPORTER="none", OTEL_TRACES_SAMPLER="", OTEL_TRACES_SAMPLER_ARG=""
    )
    assert "ParentBased{root:AlwaysOnSampler" in default.stdout
