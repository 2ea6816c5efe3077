"""Tail sampling through a real `boutique observatory` process: each policy keeps what it should and no more.

Traces are sent as OTLP/HTTP requests, each built so that at most one policy can keep it; after the
decision wait the store is asked for every trace, and /api/sampling for every policy's counts.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from boutique.observatory.sampling.policies import trace_hashes
from tests.observatory.process import ObservatoryProcess, start_observatory
from tests.observatory.sampling_traffic import (
    Ids,
    SpanSpec,
    now_us,
    sampling,
    search,
    send,
    stored_spans,
    wait_decided,
)

POLICIES = {
    "decision_wait": "1s",
    "policies": [
        {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
        {"name": "slow", "type": "latency", "latency": {"threshold_ms": 500}},
        {
            "name": "checkout",
            "type": "string_attribute",
            "string_attribute": {"key": "service.name", "values": ["checkoutservice"]},
        },
        {
            "name": "gold",
            "type": "string_attribute",
            "string_attribute": {"key": "app.tier", "values": ["gold"]},
        },
        {
            "name": "server-errors",
            "type": "numeric_attribute",
            "numeric_attribute": {"key": "http.status_code", "min_value": 500, "max_value": 599},
        },
        {
            "name": "api-v2",
            "type": "string_attribute",
            "string_attribute": {
                "key": "http.route",
                "values": ["^/api/v2/"],
                "enabled_regex_matching": True,
            },
        },
        {
            "name": "flagged",
            "type": "boolean_attribute",
            "boolean_attribute": {"key": "debug", "value": True},
        },
        {
            "name": "busy-ads",
            "type": "and",
            "and": {
                "and_sub_policy": [
                    {
                        "name": "ads",
                        "type": "string_attribute",
                        "string_attribute": {"key": "service.name", "values": ["adservice"]},
                    },
                    {"name": "three-or-more", "type": "span_count", "span_count": {"min_spans": 3}},
                ]
            },
        },
    ],
}


def write_config(folder: Path, config: dict[str, object], name: str = "sampling.json") -> Path:
    """The config as a file for --tail-sampling."""
    path = folder / name
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def observatory(tmp_path: Path) -> Iterator[ObservatoryProcess]:
    """An observatory sampling by POLICIES."""
    running = start_observatory(tmp_path / "data", "--tail-sampling", str(write_config(tmp_path, POLICIES)))
    try:
        yield running
    finally:
        running.stop()


def one_trace(
    ids: Ids, service: str = "frontend", count: int = 1, duration_us: int = 10_000, **span: object
) -> list[SpanSpec]:
    """`count` spans of one new trace, all alike but for their ids."""
    trace, start = ids.trace(), now_us()
    return [
        SpanSpec(trace, ids.span(), service, start_us=start + i, duration_us=duration_us, **span)  # type: ignore[arg-type]
        for i in range(count)
    ]


def two_services(ids: Ids, second: str, gap_us: int = 0) -> list[SpanSpec]:
    """A frontend span and a span of `second` starting `gap_us` later, of one trace, 10 ms each."""
    trace, start = ids.trace(), now_us()
    return [
        SpanSpec(trace, ids.span(), "frontend", start_us=start, duration_us=10_000),
        SpanSpec(trace, ids.span(), second, start_us=start + gap_us, duration_us=10_000),
    ]


def test_each_policy_keeps_its_traces_and_the_rest_is_dropped(observatory: ObservatoryProcess) -> None:
    ids = Ids(17)
    kept = {
        "errors": one_trace(ids, error=True),
        "slow": two_services(ids, "cartservice", gap_us=790_000),  # 800 ms from first start to last end
        "checkout": two_services(ids, "checkoutservice"),
        "gold": one_trace(ids, attributes={"app.tier": "gold"}),
        "server-errors": one_trace(ids, attributes={"http.status_code": 503}),
        "api-v2": one_trace(ids, attributes={"http.route": "/api/v2/items"}),
        "flagged": one_trace(ids, attributes={"debug": True}),
        "busy-ads": one_trace(ids, service="adservice", count=3),
    }
    dropped = {
        "fast": two_services(ids, "cartservice"),
        "499 ms": one_trace(ids, duration_us=499_000),
        "silver": one_trace(ids, attributes={"app.tier": "silver"}),
        "gold only in an event": one_trace(ids, event_attributes={"app.tier": "gold"}),
        "404": one_trace(ids, attributes={"http.status_code": 404}),
        "500 as a string": one_trace(ids, attributes={"http.status_code": "500"}),
        "api-v1": one_trace(ids, attributes={"http.route": "/api/v1/items"}),
        "debug as a string": one_trace(ids, attributes={"debug": "true"}),
        "quiet ads": one_trace(ids, service="adservice", count=2),
    }
    everything = [s for spans in (*kept.values(), *dropped.values()) for s in spans]
    with httpx.Client(timeout=10) as client:
        send(client, observatory.ports["otlp_http"], everything)
        figures = wait_decided(client, observatory.query_url, len(kept) + len(dropped))
        for name, spans in kept.items():
            found = {s["spanID"] for s in stored_spans(client, observatory.query_url, spans[0].trace_id)}
            assert found == {s.span_id.hex() for s in spans}, f"{name}: the whole trace is kept"
        for name, spans in dropped.items():
            assert stored_spans(client, observatory.query_url, spans[0].trace_id) == [], f"{name}: dropped"
    assert figures["traces"] == {"kept": len(kept), "dropped": len(dropped), "held": 0, "decided_early": 0}
    assert figures["spans"]["stored"] == sum(len(s) for s in kept.values())
    by_name = {p["name"]: p for p in figures["policies"]}
    assert list(by_name) == [p["name"] for p in POLICIES["policies"]]  # type: ignore[index]
    total = len(kept) + len(dropped)
    for name, spans in kept.items():
        counts = by_name[name]
        assert (counts["kept_traces"], counts["kept_spans"]) == (1, len(spans)), name
        assert counts["kept_traces"] + counts["dropped_traces"] == total
    print(json.dumps(figures["policies"], indent=1))


def test_late_spans_follow_their_traces_decision(observatory: ObservatoryProcess) -> None:
    ids = Ids(23)
    kept, dropped = one_trace(ids, error=True), one_trace(ids)
    with httpx.Client(timeout=10) as client:
        send(client, observatory.ports["otlp_http"], kept + dropped)
        wait_decided(client, observatory.query_url, 2)
        late_kept = SpanSpec(kept[0].trace_id, ids.span(), "cartservice", start_us=now_us())
        late_dropped = SpanSpec(dropped[0].trace_id, ids.span(), "cartservice", start_us=now_us(), error=True)
        send(client, observatory.ports["otlp_http"], [late_kept, late_dropped])
        deadline = time.monotonic() + 30
        figures = sampling(client, observatory.query_url)
        while figures["spans"]["stored"] < 2 or figures["journal"]["batches_waiting"]:
            assert time.monotonic() < deadline, figures
            time.sleep(0.1)
            figures = sampling(client, observatory.query_url)
        found = {s["spanID"] for s in stored_spans(client, observatory.query_url, kept[0].trace_id)}
        assert found == {kept[0].span_id.hex(), late_kept.span_id.hex()}
        # A late error span does not reopen a dropped trace: the decision stands.
        assert stored_spans(client, observatory.query_url, dropped[0].trace_id) == []
    assert (figures["spans"]["late_kept"], figures["spans"]["late_dropped"]) == (1, 1)
    assert figures["traces"]["kept"] + figures["traces"]["dropped"] == 2


def test_probabilistic_keeps_its_share_by_trace_id(tmp_path: Path) -> None:
    traces, percent = 3000, 10.0
    ids = Ids(31)
    start = now_us()
    spans = [SpanSpec(ids.trace(), ids.span(), "web", start_us=start + i) for i in range(traces)]
    running = start_observatory(
        tmp_path / "data", "--sample-percent", str(percent), "--sample-decision-wait", "1s"
    )
    try:
        with httpx.Client(timeout=30) as client:
            for first in range(0, traces, 500):
                send(client, running.ports["otlp_http"], spans[first : first + 500])
            figures = wait_decided(client, running.query_url, traces)
            stored = {
                t["traceID"] for t in search(client, running.query_url, "web", start - 1, start + traces + 1)
            }
    finally:
        running.stop()
    kept = figures["traces"]["kept"]
    # Binomial(3000, 0.1): mean 300, standard deviation 16.4; the ids are seeded, so this never flakes.
    mean, deviation = traces * percent / 100, (traces * percent / 100 * (1 - percent / 100)) ** 0.5
    print(f"kept {kept} of {traces} traces at {percent}% (expected {mean:.0f} ± {deviation:.1f})")
    assert abs(kept - mean) <= 4 * deviation
    assert len(stored) == kept
    # The choice is the documented hash of the trace id: the same traces in every process and restart.
    policy = figures["policies"][0]
    assert policy["type"] == "probabilistic" and policy["kept_traces"] == kept
    hashes = trace_hashes([s.trace_id for s in spans], salt_of(""))
    expected = {
        s.trace_id.hex() for s, h in zip(spans, hashes.tolist(), strict=True) if h < 2**64 * percent / 100
    }
    assert stored == expected


def salt_of(text: str) -> int:
    """The salt a probabilistic policy with `hash_salt: text` mixes in."""
    from boutique.observatory.sampling.policies import Probabilistic

    return Probabilistic("p", 10, text).salt


def test_rate_limiting_caps_spans_per_second_of_trace_time(tmp_path: Path) -> None:
    cap, seconds = 50, 8
    ids = Ids(41)
    second0 = now_us() // 1_000_000 * 1_000_000 - seconds * 1_000_000
    spans: list[SpanSpec] = []
    offered: dict[int, int] = defaultdict(int)
    for second in range(seconds):
        for number in range(120):  # about four times the cap offered each second, in traces of 1 to 7 spans
            size = 1 if number % 2 else ids.rng.randint(2, 7)
            start = second0 + second * 1_000_000 + ids.rng.randrange(990_000)
            trace = ids.trace()
            spans += [SpanSpec(trace, ids.span(), "api", start_us=start + i) for i in range(size)]
            offered[second] += size
    running = start_observatory(
        tmp_path / "data", "--sample-spans-per-second", str(cap), "--sample-decision-wait", "1s"
    )
    try:
        with httpx.Client(timeout=30) as client:
            for first in range(0, len(spans), 400):
                send(client, running.ports["otlp_http"], spans[first : first + 400])
            wait_decided(client, running.query_url, seconds * 120)
            found = search(client, running.query_url, "api", second0, second0 + seconds * 1_000_000)
    finally:
        running.stop()
    per_second: dict[int, int] = defaultdict(int)
    for trace in found:  # measured by the stored spans' own timestamps: each trace's earliest start
        first_start = min(s["startTime"] for s in trace["spans"])
        per_second[(first_start - second0) // 1_000_000] += len(trace["spans"])
    print(f"offered per second {dict(offered)}, stored per second {dict(per_second)} (cap {cap})")
    assert set(per_second) == set(range(seconds))
    for second in range(seconds):
        assert cap - 6 <= per_second[second] <= cap, f"second {second}: {per_second[second]} spans stored"


def test_an_inverted_match_drops_what_it_matches_whatever_else_keeps_it(tmp_path: Path) -> None:
    config = {
        "decision_wait": "1s",
        "policies": [
            {"name": "everything", "type": "always_sample"},
            {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
            {
                "name": "no-health-checks",
                "type": "string_attribute",
                "string_attribute": {"key": "http.route", "values": ["/health"], "invert_match": True},
            },
        ],
    }
    ids = Ids(53)
    health, failing_health = (
        one_trace(ids, attributes={"http.route": "/health"}),
        one_trace(ids, attributes={"http.route": "/health"}, error=True),
    )
    other = one_trace(ids, attributes={"http.route": "/cart"})
    running = start_observatory(tmp_path / "data", "--tail-sampling", str(write_config(tmp_path, config)))
    try:
        with httpx.Client(timeout=10) as client:
            send(client, running.ports["otlp_http"], health + failing_health + other)
            figures = wait_decided(client, running.query_url, 3)
            assert stored_spans(client, running.query_url, health[0].trace_id) == []
            assert stored_spans(client, running.query_url, failing_health[0].trace_id) == []
            assert len(stored_spans(client, running.query_url, other[0].trace_id)) == 1
    finally:
        running.stop()
    inverted = figures["policies"][2]
    assert (inverted["kept_traces"], inverted["dropped_traces"]) == (1, 2)
    assert figures["traces"]["kept"] == 1


def test_sampling_is_off_by_default(tmp_path: Path) -> None:
    running = start_observatory(tmp_path / "data")
    try:
        with httpx.Client(timeout=10) as client:
            assert sampling(client, running.query_url) == {"enabled": False}
            trace = one_trace(Ids(3))
            send(client, running.ports["otlp_http"], trace)
            assert len(stored_spans(client, running.query_url, trace[0].trace_id)) == 1
    finally:
        running.stop()
    assert not (tmp_path / "data" / "observatory.duckdb.sampling").exists()


def test_a_stop_leaves_waiting_traces_for_the_next_start_to_decide(tmp_path: Path) -> None:
    ids = Ids(61)
    failing, fine = one_trace(ids, error=True, count=2), one_trace(ids, count=2)
    first = start_observatory(tmp_path / "data", "--sample-errors", "--sample-decision-wait", "10m")
    try:
        with httpx.Client(timeout=10) as client:
            send(client, first.ports["otlp_http"], failing + fine)
    finally:
        assert first.stop() == 0  # SIGTERM: a clean stop, both traces still waiting
    second = start_observatory(tmp_path / "data", "--sample-errors", "--sample-decision-wait", "1s")
    try:
        with httpx.Client(timeout=10) as client:
            figures = wait_decided(client, second.query_url, 2)
            assert len(stored_spans(client, second.query_url, failing[0].trace_id)) == 2
            assert stored_spans(client, second.query_url, fine[0].trace_id) == []
    finally:
        second.stop()
    assert figures["spans"]["replayed"] == 4
    assert not list((tmp_path / "data" / "observatory.duckdb.sampling").iterdir())
