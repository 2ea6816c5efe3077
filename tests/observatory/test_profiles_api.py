"""The profiles API of a real `boutique observatory` process: samples sent over OTLP, read back as JSON.

Spans and profiles go in the way the shop sends them (OTLP protobuf over HTTP: a dictionary of
strings, functions, locations, stacks and links, each sample linked to its span); every route is read
back over HTTP with its filters, the pprof download is decoded, and every bad parameter gets a 400.
"""

from __future__ import annotations

import gzip
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.profiles.v1development.profiles_service_pb2 import (
    ExportProfilesServiceRequest,
)

from boutique.observatory.profiles import pprof_pb2 as pb
from tests.observatory.process import ObservatoryProcess, start_observatory
from tests.observatory.profile_builders import Dictionary, Frame, export_request
from tests.observatory.test_api_jaeger import SERVER, S, request

S_US = 1_000_000
PROTOBUF = {"Content-Type": "application/x-protobuf"}
MAIN = ("main", "app/main.py", 10)
HANDLE_20 = ("handle", "app/web.py", 20)
HANDLE_25 = ("handle", "app/web.py", 25)
QUERY = ("query", "app/db.py", 5)
RENDER = ("render", "app/web.py", 40)
OLD = ("old", "app/old.py", 1)
TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN_A, SPAN_B, SPAN_C = "a100000000000001", "b200000000000002", "c300000000000003"


def label(frame: Frame) -> str:
    return f"{frame[0]} ({frame[1]}:{frame[2]})"


@dataclass
class Row:
    """A sample to send: its stack (root first), value (ns), time (s after t0), thread and span."""

    frames: Sequence[Frame]
    value: int
    at: int
    thread: str = "MainThread"
    span: str = ""


def profiles_request(
    t0: int, service: str, instance: str, profiles: Mapping[str, Sequence[Row]]
) -> ExportProfilesServiceRequest:
    """One resource and scope with a profile per type, as the shop's sampler exports them: each sample
    a row's stack (locations leaf first), one value, its time, thread and link."""
    d = Dictionary()
    out = []
    for kind, rows in profiles.items():
        samples = [
            d.sample(
                row.frames,
                [row.value],
                [(t0 + row.at * S_US) * 1000],
                thread=row.thread,
                trace=TRACE if row.span else "",
                span=row.span,
            )
            for row in rows
        ]
        out.append(d.profile(kind, samples, (t0 - 200 * S_US) * 1000, 300 * S_US * 1000))
    return export_request(d, out, service, instance)


@dataclass
class Running:
    """The observatory with the data set sent, its HTTP client and the data set's time origin."""

    observatory: ObservatoryProcess
    http: httpx.Client
    t0: int

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(path, params={k: str(v) for k, v in params.items()})

    def ok(self, path: str, **params: Any) -> Any:
        response = self.get(path, **params)
        assert response.status_code == 200, response.text
        return response.json()

    def window(self, start: int = 0, end: int = 60) -> dict[str, int]:
        return {"start": self.t0 + start * S_US, "end": self.t0 + end * S_US}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """An observatory holding web's and shop's samples and two of web's spans, all sent over OTLP."""
    t0 = (time.time_ns() // 1000 // S_US - 600) * S_US
    observatory = start_observatory(tmp_path_factory.mktemp("profiles") / "data")
    otlp = f"http://127.0.0.1:{observatory.ports['otlp_http']}"
    try:
        with httpx.Client(base_url=observatory.query_url, timeout=30) as http:
            spans = [
                S(TRACE, SPAN_A, "", "GET /checkout", SERVER, t0 + S_US, 3 * S_US),
                S(TRACE, SPAN_B, SPAN_A, "GetCart", SERVER, t0 + 2 * S_US, S_US),
            ]
            sent = request([({"service.name": "web"}, ("", ""), spans)]).SerializeToString()
            assert httpx.post(f"{otlp}/v1/traces", content=sent, headers=PROTOBUF).status_code == 200
            web = {
                "cpu": [
                    Row([MAIN, HANDLE_20, QUERY], 20, 1, span=SPAN_A),
                    Row([MAIN, HANDLE_20, QUERY], 10, 2, span=SPAN_B),
                    Row([MAIN, HANDLE_25, QUERY], 20, 3, span=SPAN_A),
                    Row([MAIN, HANDLE_20], 10, 4, thread="worker"),
                    Row([MAIN, RENDER], 15, 5, span=SPAN_C),
                    Row([MAIN, RENDER], 10, 6),
                    Row([MAIN, HANDLE_20, QUERY], 5, -100),  # the diff's base window
                    Row([MAIN, OLD], 8, -90),
                ],
                "wall": [Row([MAIN, HANDLE_20, QUERY], 1000, 1)],
            }
            shop = {"cpu": [Row([MAIN, RENDER], 2000, 1)]}
            for service, instance, profiles in (("web", "web-1", web), ("shop", "shop-1", shop)):
                body = profiles_request(t0, service, instance, profiles).SerializeToString()
                sent_profiles = httpx.post(f"{otlp}/v1development/profiles", content=body, headers=PROTOBUF)
                assert sent_profiles.status_code == 200, sent_profiles.text
            yield Running(observatory, http, t0)
    finally:
        observatory.stop()


def node(name: str, own: int, total: int, *children: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "self": own, "total": total, "children": list(children)}


WEB_TREE = node(
    "total",
    0,
    85,
    node(
        "main (app/main.py)",
        0,
        85,
        node("handle (app/web.py)", 10, 60, node("query (app/db.py)", 50, 50)),
        node("render (app/web.py)", 25, 25),
    ),
)


# ---- trees -------------------------------------------------------------------------------------


def test_a_flame_tree_with_its_envelope(running: Running) -> None:
    body = running.ok("/api/profiles", service="web", **running.window())
    assert body == {
        "data": WEB_TREE,
        "type": "cpu",
        "unit": "nanoseconds",
        "samples": 6,
        "pruned": 0,
        **running.window(),
    }
    before = time.time_ns() // 1000
    recent = running.ok("/api/profiles", service="web")  # the last hour: the base rows too
    assert recent["data"]["total"] == 98 and recent["samples"] == 8
    assert recent["end"] >= before and recent["end"] - recent["start"] == 3600 * S_US


def test_max_nodes_folds_small_callees_and_keeps_the_total(running: Running) -> None:
    whole = running.ok("/api/profiles", service="web", maxNodes="0", **running.window())
    pruned = running.ok("/api/profiles", service="web", maxNodes="1", **running.window())
    assert whole["pruned"] == 0 and pruned["pruned"] > 0
    assert pruned["data"]["total"] == whole["data"]["total"]
    assert sum(child["total"] for child in pruned["data"]["children"]) == whole["data"]["total"]


def test_granularity_and_filters(running: Running) -> None:
    lines = running.ok("/api/profiles", service="web", granularity="line", **running.window())["data"]
    assert [(c["name"], c["total"]) for c in lines["children"][0]["children"]] == [
        (label(HANDLE_20), 40),
        (label(RENDER), 25),
        (label(HANDLE_25), 20),
    ]
    assert (
        running.ok("/api/profiles", service="web", type="wall", **running.window())["data"]["total"] == 1000
    )
    assert running.ok("/api/profiles", service="shop", **running.window())["data"]["total"] == 2000
    assert (
        running.ok("/api/profiles", service="web", instance="web-2", **running.window())["data"]["total"] == 0
    )
    worker = running.ok("/api/profiles", service="web", thread="worker", **running.window())
    assert worker["data"] == node(
        "total", 0, 10, node("main (app/main.py)", 0, 10, node("handle (app/web.py)", 10, 10))
    )
    assert running.ok("/api/profiles", service="web", **running.window(2, 5))["data"]["total"] == 55
    assert running.ok("/api/profiles", service="nobody")["data"] == node("total", 0, 0)


def test_a_span_profile_in_the_spans_own_window(running: Running) -> None:
    t0 = running.t0
    span = running.ok("/api/profiles", traceID=TRACE, spanID=SPAN_A)
    assert (span["start"], span["end"], span["samples"]) == (t0 + S_US, t0 + 4 * S_US, 2)
    assert span["data"] == node(
        "total",
        0,
        40,
        node(
            "main (app/main.py)", 0, 40, node("handle (app/web.py)", 0, 40, node("query (app/db.py)", 40, 40))
        ),
    )
    assert running.ok("/api/profiles", traceID=TRACE, spanID=SPAN_B)["data"]["total"] == 10
    unstored = running.ok("/api/profiles", traceID=TRACE, spanID=SPAN_C, service="web")
    assert unstored["data"]["total"] == 15 and unstored["end"] - unstored["start"] == 3600 * S_US
    whole = running.ok("/api/profiles", traceID=TRACE)
    assert (whole["start"], whole["end"], whole["data"]["total"]) == (t0 + S_US, t0 + 4 * S_US, 65)
    short_ids = running.ok("/api/profiles", traceID=TRACE.upper(), spanID=SPAN_A, **running.window(3, 9))
    assert short_ids["data"]["total"] == 20


def test_a_diff_of_two_windows(running: Running) -> None:
    t0 = running.t0
    base = {"baseStart": t0 - 120 * S_US, "baseEnd": t0 - 60 * S_US}
    body = running.ok("/api/profiles/diff", service="web", **running.window(), **base)
    assert {k: body[k] for k in ("type", "unit", "samples", "baseSamples")} == {
        "type": "cpu",
        "unit": "nanoseconds",
        "samples": 6,
        "baseSamples": 2,
    }
    root = body["data"]
    assert (root["total"], root["baseTotal"], root["baseSelf"]) == (85, 13, 0)
    main = root["children"][0]
    assert [(c["name"], c["total"], c["baseTotal"]) for c in main["children"]] == [
        ("handle (app/web.py)", 60, 5),
        ("render (app/web.py)", 25, 0),
        ("old (app/old.py)", 0, 8),
    ]
    # without a base window: the one just before, as long
    implied = running.ok("/api/profiles/diff", service="web", **running.window(-50, 50))
    assert (implied["baseStart"], implied["baseEnd"]) == (t0 - 150 * S_US, t0 - 50 * S_US)
    assert (implied["data"]["total"], implied["data"]["baseTotal"]) == (85, 13)


# ---- top, pprof, traces, services --------------------------------------------------------------


def test_top_functions(running: Running) -> None:
    assert running.ok("/api/profiles/top", service="web", limit=2, **running.window()) == {
        "data": [
            {"name": "query (app/db.py)", "self": 50, "total": 50},
            {"name": "render (app/web.py)", "self": 25, "total": 25},
        ]
    }
    every = running.ok("/api/profiles/top", service="web", granularity="line", **running.window())["data"]
    assert [item["name"] for item in every] == [
        label(QUERY),
        label(RENDER),
        label(HANDLE_20),
        label(MAIN),
        label(HANDLE_25),
    ]


def test_the_pprof_download_decodes(running: Running) -> None:
    response = running.get("/api/profiles/pprof", service="web", **running.window())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"] == 'attachment; filename="web-cpu.pb.gz"'
    profile = pb.Profile.FromString(gzip.decompress(response.content))
    strings = profile.string_table
    functions = {f.id: (strings[f.name], strings[f.filename]) for f in profile.function}
    frames = {loc.id: (*functions[loc.line[0].function_id], loc.line[0].line) for loc in profile.location}
    stacks: Counter[tuple[Frame, ...]] = Counter()
    for sample in profile.sample:
        stacks[tuple(frames[i] for i in reversed(sample.location_id))] += sample.value[0]
    assert stacks == Counter(
        {
            (MAIN, HANDLE_20, QUERY): 30,
            (MAIN, HANDLE_25, QUERY): 20,
            (MAIN, HANDLE_20): 10,
            (MAIN, RENDER): 25,
        }
    )
    assert [(strings[t.type], strings[t.unit]) for t in profile.sample_type] == [("cpu", "nanoseconds")]
    wall = running.get("/api/profiles/pprof", traceID=TRACE, type="wall")
    assert wall.headers["content-disposition"] == f'attachment; filename="trace-{TRACE}-wall.pb.gz"'
    assert len(pb.Profile.FromString(gzip.decompress(wall.content)).sample) == 0


def test_traces_for_a_frame(running: Running) -> None:
    t0 = running.t0
    found = running.ok("/api/profiles/traces", frame="query (app/db.py)", service="web", **running.window())
    assert found == {
        "data": [
            {"traceID": TRACE, "spanID": SPAN_A, "service": "web", "operation": "GET /checkout", "value": 40, "start": t0 + S_US},
            {"traceID": TRACE, "spanID": SPAN_B, "service": "web", "operation": "GetCart", "value": 10, "start": t0 + 2 * S_US},
        ]
    }  # fmt: skip
    anywhere = running.ok("/api/profiles/traces", frame=label(MAIN), limit=3, **running.window())["data"]
    assert [(t["spanID"], t["value"], t["operation"]) for t in anywhere] == [
        (SPAN_A, 40, "GET /checkout"),
        (SPAN_C, 15, ""),
        (SPAN_B, 10, "GetCart"),
    ]
    by_line = running.ok(
        "/api/profiles/traces", frame=label(HANDLE_25), granularity="line", **running.window()
    )
    assert [(t["spanID"], t["value"]) for t in by_line["data"]] == [(SPAN_A, 20)]


def test_services(running: Running) -> None:
    assert running.ok("/api/profiles/services") == {
        "data": [
            {"service": "shop", "types": ["cpu"], "instances": ["shop-1"]},
            {"service": "web", "types": ["cpu", "wall"], "instances": ["web-1"]},
        ]
    }


# ---- bad parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "named"),
    [
        ("/api/profiles", {}, "service"),
        ("/api/profiles/diff", {"type": "cpu"}, "service"),
        ("/api/profiles/top", {"instance": "web-1"}, "service"),
        ("/api/profiles/pprof", {}, "service"),
        ("/api/profiles", {"service": "web", "traceID": "xyz"}, "traceID"),
        ("/api/profiles", {"traceID": "1" * 33}, "traceID"),
        ("/api/profiles", {"traceID": TRACE, "spanID": "g1"}, "spanID"),
        ("/api/profiles/traces", {"frame": "f", "spanID": "1" * 17}, "spanID"),
        ("/api/profiles", {"service": "web", "granularity": "file"}, "granularity"),
        ("/api/profiles/top", {"service": "web", "granularity": "FUNCTION"}, "granularity"),
        ("/api/profiles", {"service": "web", "start": "5", "end": "4"}, "start"),
        ("/api/profiles", {"service": "web", "start": "in a day"}, "start"),
        ("/api/profiles", {"service": "web", "start": "soon"}, "start"),
        ("/api/profiles/pprof", {"service": "web", "end": "-1"}, "end"),
        ("/api/profiles/diff", {"service": "web", "baseStart": "10", "baseEnd": "5"}, "baseStart"),
        ("/api/profiles/diff", {"service": "web", "baseEnd": "x"}, "baseEnd"),
        ("/api/profiles/top", {"service": "web", "limit": "-1"}, "limit"),
        ("/api/profiles/traces", {"service": "web", "limit": "ten", "frame": "f"}, "limit"),
        ("/api/profiles/traces", {"service": "web"}, "frame"),
        ("/api/profiles", {"service": "web", "maxNodes": "-3"}, "maxNodes"),
        ("/api/profiles/diff", {"service": "web", "maxNodes": "many"}, "maxNodes"),
    ],
)
def test_bad_parameters_are_400_with_the_jaeger_envelope(
    running: Running, path: str, params: dict[str, str], named: str
) -> None:
    if params.get("start") == "in a day":  # after now, with no end given
        params = {**params, "start": str(time.time_ns() // 1000 + 86_400 * S_US)}
    response = running.http.get(path, params=params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["data"] is None and [e["code"] for e in body["errors"]] == [400]
    assert f"parameter '{named}'" in body["errors"][0]["msg"]
