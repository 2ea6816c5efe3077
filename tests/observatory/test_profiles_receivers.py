"""Profiles into a real `boutique observatory` process: OTLP (gRPC, HTTP protobuf and JSON) and Pyroscope.

Every test sends what a sender would, then stops the observatory and reads the DuckDB tables it wrote
(`profile_samples`, `profile_stacks`): what was answered with success is there, what was refused is not.
The Pyroscope client test runs the real `pyroscope-io` package in a child process burning CPU in a
function of a known name, pointed at the observatory's query port.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.rpc.status_pb2 import Status as RpcStatus
from opentelemetry.proto.collector.profiles.v1development.profiles_service_pb2 import (
    ExportProfilesServiceResponse,
)
from starlette.applications import Starlette

from boutique.observatory.pipeline import Pipeline
from boutique.observatory.profiles import folded
from boutique.observatory.profiles.push_pb2 import LabelPair, PushRequest, RawProfileSeries, RawSample
from boutique.observatory.receivers import RECEIVERS, HttpReceiver, Limits
from boutique.observatory.receivers.pyroscope import decode_ingest
from boutique.observatory.store.duckdb_store import DuckDBStore
from tests.observatory import test_receivers
from tests.observatory.process import ObservatoryProcess, start_observatory
from tests.observatory.test_profiles_decode import (
    EXPECTED,
    HANDLE,
    PARSE,
    T0,
    a_pprof,
    labels_of,
    otlp_json,
    sample_request,
)
from tests.observatory.test_receivers import ControlledStore

EXPORT = "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export"
OTLP_PATH = "/v1development/profiles"
PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
FOLDED = (
    "<module> (app/run.py:9);burn (app/burn.py:6) 582\n"
    "<module> (app/run.py:9);burn (app/burn.py:7) 202\n"
    "<module> (app/run.py:9);idle (app/idle.py:2) 5\n"
)


@pytest.fixture
def observatory(tmp_path: Path) -> Iterator[ObservatoryProcess]:
    running = start_observatory(tmp_path / "data", "--max-body", "1MB")
    yield running
    running.stop()


def stored(observatory: ObservatoryProcess, data: Path) -> list[dict[str, Any]]:
    """Stop the observatory (its store closes), then every stored row with its frames, oldest first."""
    assert observatory.stop() == 0, observatory.text()[-2000:]
    store = DuckDBStore(data / "observatory.duckdb")
    try:
        found = store.read(
            lambda cursor: cursor.execute(
                """
                SELECT p.time_us, p.service, p.instance, p.type, p.unit, p.value, s.frames, p.thread,
                       p.labels, p.trace_id, p.span_id
                FROM profile_samples p JOIN profile_stacks s USING (stack_id)
                ORDER BY p.service, p.time_us, p.type, p.value DESC
                """
            ).fetchall()
        )
    finally:
        store.close()
    names = ("time_us", "service", "instance", "type", "unit", "value", "frames", "thread", "labels")
    return [
        dict(zip((*names, "trace_id", "span_id"), (*row[:6], tuple(row[6]), *row[7:]), strict=True))
        for row in found
    ]


def as_expected(row: dict[str, Any]) -> tuple[Any, ...]:
    """A stored row in the shape of `test_profiles_decode.EXPECTED`."""
    return (
        row["time_us"],
        row["type"],
        row["unit"],
        row["value"],
        row["frames"],
        row["thread"],
        json.loads(row["labels"]),
        bytes(row["trace_id"]),
        bytes(row["span_id"]),
        row["service"],
        row["instance"],
    )


def for_service(service: str) -> list[tuple[Any, ...]]:
    return [(*row[:-2], service, row[-1]) for row in EXPECTED]


def renamed(service: str) -> Any:
    request = sample_request()
    request.resource_profiles[0].resource.attributes[0].value.string_value = service
    return request


def with_bad_profile(service: str) -> Any:
    """The sample request of `service`, its wall profile naming a stack the dictionary lacks."""
    request = renamed(service)
    request.resource_profiles[0].scope_profiles[0].profiles[1].samples[0].stack_index = 99
    return request


def test_otlp_exports_over_grpc_and_http_are_stored_with_partial_success_counts(
    observatory: ObservatoryProcess, tmp_path: Path
) -> None:
    http_url = f"http://127.0.0.1:{observatory.ports['otlp_http']}{OTLP_PATH}"
    with grpc.insecure_channel(f"127.0.0.1:{observatory.ports['otlp_grpc']}") as channel:
        export = channel.unary_unary(EXPORT)
        answer = ExportProfilesServiceResponse.FromString(
            export(renamed("grpc").SerializeToString(), timeout=10)
        )
        assert not answer.HasField("partial_success")
        partial = ExportProfilesServiceResponse.FromString(
            export(with_bad_profile("grpc-partial").SerializeToString(), timeout=10)
        )
        assert partial.partial_success.rejected_profiles == 1
        assert "stack_index 99 is outside the stack table" in partial.partial_success.error_message

    protobuf = httpx.post(http_url, content=renamed("http").SerializeToString(), headers=PROTOBUF)
    assert protobuf.status_code == 200, protobuf.text
    assert not ExportProfilesServiceResponse.FromString(protobuf.content).HasField("partial_success")
    as_json = httpx.post(http_url, content=json.dumps(otlp_json(renamed("json"))), headers=JSON)
    assert (as_json.status_code, as_json.json()) == (200, {})
    partial_json = httpx.post(
        http_url, content=json.dumps(otlp_json(with_bad_profile("json-partial"))), headers=JSON
    )
    assert partial_json.json()["partialSuccess"]["rejectedProfiles"] == "1"
    gzipped = gzip.compress(renamed("gzip").SerializeToString())
    zipped = httpx.post(http_url, content=gzipped, headers={**PROTOBUF, "Content-Encoding": "gzip"})
    assert zipped.status_code == 200

    rows = stored(observatory, tmp_path / "data")
    by_service: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        by_service.setdefault(row["service"], []).append(as_expected(row))
    for service in ("grpc", "http", "json", "gzip"):
        assert sorted(by_service.pop(service)) == sorted(for_service(service)), service
    for service in ("grpc-partial", "json-partial"):  # the cpu profile only
        assert sorted(by_service.pop(service)) == sorted(r for r in for_service(service) if r[1] == "cpu")
    assert by_service == {}


def folded_back(rows: list[dict[str, Any]], sample_rate: int = 100) -> str:
    """The rows as folded text: samples per stack (value back to counts at the sample rate), summed."""
    stacks: dict[tuple[str, ...], int] = {}
    for row in rows:
        assert row["unit"] == "nanoseconds"
        count, rest = divmod(row["value"] * sample_rate, 10**9)
        assert rest == 0
        stacks[row["frames"]] = stacks.get(row["frames"], 0) + count
    return folded.to_folded(stacks)


def test_pyroscope_folded_ingest_round_trips(observatory: ObservatoryProcess, tmp_path: Path) -> None:
    ingest = f"{observatory.query_url}/ingest"
    now = int(time.time())
    sent = folded.to_folded(folded.parse_folded(FOLDED.encode()))
    assert sent == FOLDED  # already sorted and summed: what comes back must be this very text
    half = FOLDED.splitlines(keepends=True)
    params = {"name": "burner.cpu{env=prod,region=eu}", "from": str(now - 20), "until": str(now - 10)}
    first = httpx.post(
        ingest, params=params, content="".join(half[:2]) + "<module> (app/run.py:9);idle (app/idle.py:2) 2\n"
    )
    assert (first.status_code, first.text) == (200, "")
    later = {**params, "from": str((now - 10) * 1000), "until": str(now * 1000), "spyName": "pyspy"}
    second = httpx.post(ingest, params=later, content="<module> (app/run.py:9);idle (app/idle.py:2) 3\n")
    assert second.status_code == 200
    lines = httpx.post(
        ingest,
        params={"name": "lines-app", "format": "lines", "from": str(now)},
        content="a;b\na;b\na\n",
        headers={"Content-Type": "text/plain"},
    )
    assert lines.status_code == 200

    tree = httpx.get(
        f"{observatory.query_url}/api/profiles",
        params={"service": "burner", "start": (now - 30) * 10**6, "end": (now + 1) * 10**6},
    )
    if tree.status_code == 200:  # the query API, when this build has it, sees the same samples
        assert tree.json()["data"]["total"] == (582 + 202 + 5) * 10**7

    rows = stored(observatory, tmp_path / "data")
    burner = [row for row in rows if row["service"] == "burner"]
    assert folded_back(burner) == FOLDED
    assert {row["type"] for row in burner} == {"cpu"}
    assert {row["time_us"] for row in burner} == {(now - 20) * 10**6, (now - 10) * 10**6}
    assert {row["labels"] for row in burner} == {
        '{"env":"prod","region":"eu"}',
        '{"env":"prod","region":"eu","spyName":"pyspy"}',
    }
    assert folded_back([row for row in rows if row["service"] == "lines-app"]) == "a 1\na;b 2\n"


def test_pyroscope_pprof_ingest_as_the_0_8_client_sends_it_and_as_multipart(
    observatory: ObservatoryProcess, tmp_path: Path
) -> None:
    now = int(time.time())
    # What pyroscope-io 0.8 sends: a gzipped pprof (Content-Encoding gzip), this query, this Content-Type.
    params = {"name": "legacy", "from": str(now - 10), "until": str(now), "format": "pprof"}
    params |= {"sampleRate": "100", "spyName": "pyspy"}
    headers = {"Content-Type": "binary/octet-stream", "Content-Encoding": "gzip"}
    body = gzip.compress(a_pprof().bytes())
    legacy = httpx.post(f"{observatory.query_url}/ingest", params=params, content=body, headers=headers)
    assert (legacy.status_code, legacy.text) == (200, "")
    files = {"profile": ("profile.pprof", gzip.compress(a_pprof().bytes()), "application/octet-stream")}
    form = httpx.post(
        f"{observatory.query_url}/ingest",
        params={"name": "form.cpu", "format": "pprof", "from": str(now)},
        files=files,
    )
    assert form.status_code == 200, form.text
    push = PushRequest(
        series=[
            RawProfileSeries(
                labels=[
                    LabelPair(name="__name__", value="process_cpu"),
                    LabelPair(name="service_name", value="pushed"),
                    LabelPair(name="region", value="eu"),
                ],
                samples=[RawSample(raw_profile=a_pprof().bytes(), ID="x")],
            )
        ]
    )
    pushed = httpx.post(
        f"{observatory.query_url}/push.v1.PusherService/Push",
        content=gzip.compress(push.SerializeToString()),
        headers={"Content-Type": "application/proto", "Content-Encoding": "gzip"},
    )
    assert pushed.status_code == 200 and pushed.headers["content-type"] == "application/proto"

    rows = stored(observatory, tmp_path / "data")
    expected = [(30_000_000, labels_of(PARSE), "MainThread"), (20_000_000, labels_of(HANDLE), "")]
    for service in ("legacy", "form", "pushed"):
        found = [row for row in rows if row["service"] == service]
        assert [(r["value"], r["frames"], r["thread"]) for r in found] == expected, service
        assert {(r["type"], r["unit"]) for r in found} == {("cpu", "nanoseconds")}
    legacy_rows = [row for row in rows if row["service"] == "legacy"]
    assert {row["time_us"] for row in legacy_rows} == {(now - 10) * 10**6}
    assert json.loads(legacy_rows[0]["labels"]) == {"spyName": "pyspy", "thread_id": 7}
    pushed_rows = [row for row in rows if row["service"] == "pushed"]
    assert {row["time_us"] for row in pushed_rows} == {T0 // 1000}  # the profile's own time
    assert json.loads(pushed_rows[1]["labels"]) == {"region": "eu"}


def test_malformed_and_oversized_payloads_are_refused_and_nothing_is_stored(
    observatory: ObservatoryProcess, tmp_path: Path
) -> None:
    query, http_port = observatory.query_url, observatory.ports["otlp_http"]
    otlp_url = f"http://127.0.0.1:{http_port}{OTLP_PATH}"
    all_bad = with_bad_profile("bad")
    all_bad.resource_profiles[0].scope_profiles[0].profiles[0].samples[0].stack_index = 98
    with grpc.insecure_channel(f"127.0.0.1:{observatory.ports['otlp_grpc']}") as channel:
        export = channel.unary_unary(EXPORT)
        for payload, reason in (
            (b"\x0a\xff", "not an OTLP ExportProfilesServiceRequest"),
            (all_bad.SerializeToString(), "every profile was refused: stack_index 98 is outside"),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                export(payload, timeout=10)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert reason in (refused.value.details() or "")

    refused_otlp = httpx.post(otlp_url, content=all_bad.SerializeToString(), headers=PROTOBUF)
    assert refused_otlp.status_code == 400
    assert "every profile was refused" in RpcStatus.FromString(refused_otlp.content).message
    bad_json = httpx.post(
        otlp_url, content=b'{"dictionary": {"linkTable": [{"traceId": "xyz"}]}}', headers=JSON
    )
    assert (bad_json.status_code, bad_json.json()["message"]) == (
        400,
        "dictionary.linkTable[0].traceId is not hex: 'xyz'",
    )
    oversized = httpx.post(otlp_url, content=bytes(2 << 20), headers=PROTOBUF)
    assert oversized.status_code == 413

    ingest = f"{query}/ingest"
    for params, body, reason in (
        ({"name": "bad"}, "a;b 1\na;b;c\n", "folded line 2: no sample count after the stack: 'a;b;c'"),
        ({"name": "bad"}, "a;b -3\n", "folded line 1: the sample count -3 is negative"),
        ({"name": "bad", "format": "trie"}, "a;b 1\n", "format 'trie' is not supported"),
        ({"name": "bad", "format": "pprof"}, "not a profile", "not a pprof profile"),
        ({"name": "bad", "from": "soon"}, "a 1\n", "from must be a Unix time"),
        ({}, "a 1\n", "name must be an application name"),
    ):
        answer = httpx.post(ingest, params=params, content=body)
        assert answer.status_code == 400, (params, answer.text)
        assert reason in answer.text and answer.text.count("\n") == 1, answer.text
    too_big = httpx.post(ingest, params={"name": "big"}, content=b"a 1\n" * (300 * 1024))
    assert too_big.status_code == 413
    assert "larger than" in too_big.text
    push = httpx.post(
        f"{query}/push.v1.PusherService/Push",
        content=b"\xff\xff",
        headers={"Content-Type": "application/proto"},
    )
    assert push.status_code == 400 and push.json()["code"] == "invalid_argument"

    assert stored(observatory, tmp_path / "data") == []


# ---- the real pyroscope-io client ---------------------------------------------------------------

CLIENT = textwrap.dedent(
    """
    import inspect, sys, time
    import pyroscope

    options = {"application_name": "burner", "server_address": sys.argv[1], "tags": {"run": "test"}}
    if "upload_interval" in inspect.signature(pyroscope.configure).parameters:
        options["upload_interval"] = 1
    pyroscope.configure(**options)

    def burn_the_cpu_in_a_known_function(seconds):
        total, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            total += sum(range(1000))
        return total

    burn_the_cpu_in_a_known_function(float(sys.argv[2]))
    pyroscope.shutdown()
    """
)


def test_the_pyroscope_client_profiles_a_python_process_into_the_observatory(
    observatory: ObservatoryProcess, tmp_path: Path
) -> None:
    try:
        import pyroscope  # noqa: F401
    except ImportError:
        pytest.skip("needs the pyroscope-io client: pip install -e '.[dev]' (or pip install pyroscope-io)")
    script = tmp_path / "burner.py"
    script.write_text(CLIENT)
    deadline = time.monotonic() + 60
    seconds = 3.0
    while True:
        child = subprocess.run(
            [sys.executable, str(script), observatory.query_url, str(seconds)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert child.returncode == 0, child.stderr[-2000:]
        status = httpx.get(f"{observatory.query_url}/api/status").json()
        if status["signals"]["profiles"]["stored"] or time.monotonic() > deadline:
            break
        seconds *= 2  # the client sends once per upload interval: burn longer, so a window closes
    rows = stored(observatory, tmp_path / "data")
    burner = [row for row in rows if row["service"] == "burner"]
    assert burner, f"the pyroscope client sent nothing the observatory stored:\n{observatory.text()[-2000:]}"
    hot = [row for row in burner if any("burn_the_cpu_in_a_known_function" in f for f in row["frames"])]
    assert hot, sorted({row["frames"] for row in burner})
    assert {row["type"] for row in burner} == {"cpu"}
    assert any("burner.py" in frame for row in hot for frame in row["frames"])
    assert all(json.loads(row["labels"]).get("run") == "test" for row in burner)
    print(f"{len(burner)} rows, {sum(r['value'] for r in hot) / 1e9:.2f} s of CPU in the known function")


# ---- a full pipeline and a failing store: the OTLP receivers' answers ----------------------------

store, controlled, pipeline = test_receivers.store, test_receivers.controlled, test_receivers.pipeline
PYROSCOPE = [r for r in RECEIVERS if isinstance(r, HttpReceiver) and r.name.startswith("pyroscope")]


@pytest.fixture
async def client(pipeline: Pipeline) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=[route for r in PYROSCOPE for route in r.routes(pipeline, Limits())])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://observatory"
    ) as opened:
        yield opened


async def test_a_full_queue_is_429_and_a_failing_store_503_with_retry_after(
    client: httpx.AsyncClient, pipeline: Pipeline, controlled: ControlledStore
) -> None:
    push_body = PushRequest(
        series=[RawProfileSeries(samples=[RawSample(raw_profile=a_pprof().bytes())])]
    ).SerializeToString()
    proto = {"Content-Type": "application/proto"}
    controlled.release.clear()
    first = pipeline.offer(decode_ingest({"name": "queued"}, "", 1 << 20, b"a;b 1\n"))  # the queue stays full
    try:
        busy = await client.post("/ingest", params={"name": "busy"}, content=b"a;b 1\n")
        assert (busy.status_code, busy.headers["Retry-After"]) == (429, "1")
        assert "the observatory is busy" in busy.text
        busy_push = await client.post("/push.v1.PusherService/Push", content=push_body, headers=proto)
        assert (busy_push.status_code, busy_push.json()["code"]) == (429, "resource_exhausted")
    finally:
        controlled.release.set()
    assert first.result(30) == 1
    controlled.failing = True
    failing = await client.post("/ingest", params={"name": "failing"}, content=b"a 1\n")
    assert failing.status_code == 503 and int(failing.headers["Retry-After"]) > 0
    failing_push = await client.post("/push.v1.PusherService/Push", content=push_body, headers=proto)
    assert (failing_push.status_code, failing_push.json()["code"]) == (503, "unavailable")
