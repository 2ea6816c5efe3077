"""Mesh faults switched by flags in a real `boutique up` with three product catalogs.

`meshCallFault` delays or aborts the calls of one edge (caller → callee), for a share of the traces;
`grayReplica` makes productcatalog-1 answer late and the callers' balancing route around it. Each test
changes the flag file, waits until the processes have read it, loads shop pages under trace ids of its
own and reads those traces back from the observatory.
"""

from __future__ import annotations

import collections
import json
import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.e2e.harness import Up, eventually, start_up
from tests.flags.support import flag_file, mesh_status, now_us, observatory, spans_of, tag, traces

PRODUCT = "OLJCESPC7Z"
FEATURED = ("1YMWWN1N4O", "L9ECAV7KIM", "0PUK6V6EV0", "OLJCESPC7Z", "6E92ZMYYFZ", "2ZYFJ3GM2N")
PRODUCTS = ("OLJCESPC7Z", "66VCHSJNUP", "1YMWWN1N4O", "L9ECAV7KIM", "2ZYFJ3GM2N", "0PUK6V6EV0")


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """One shop with three product catalogs for every test here."""
    # Spans go out every 200 ms rather than 5 s, so a page's trace can be read back at once.
    running = start_up(
        tmp_path_factory.mktemp("mesh-faults"),
        "--replicas",
        "productcatalog=3",
        env={"OTEL_BSP_SCHEDULE_DELAY": "200"},
    )
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(autouse=True)
def shipped_flags(up: Up) -> Iterator[None]:
    """Every flag as shipped after each test, read by the processes the tests watch."""
    yield
    change_flags(up, lambda: flag_file(up).reset(by="test"), ("frontend-0", "productcatalog-1"))


def flag_changes(up: Up, instance: str) -> int:
    """How many flag changes `instance` has logged having read."""
    path = up.data_dir / "logs" / f"{instance}.log"
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return sum('"event": "flags: changed' in line for line in lines)


def change_flags(up: Up, change: Callable[[], Any], instances: tuple[str, ...] = ("frontend-0",)) -> None:
    """Change the flag file and wait until each of `instances` has read a change (if it made one)."""
    before = {instance: flag_changes(up, instance) for instance in instances}
    if not change():
        return
    for instance in instances:
        eventually(
            lambda i=instance: flag_changes(up, i) > before[i], f"{instance} to read the flag file", 20
        )


def visit(up: Up, path: str = f"/product/{PRODUCT}") -> tuple[str, httpx.Response]:
    """Load a shop page in a trace of our own; its trace id and the answer."""
    trace_id = secrets.token_hex(16)
    parent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    return trace_id, httpx.get(up.url + path, headers={"traceparent": parent}, timeout=30)


def visits(up: Up, count: int) -> list[str]:
    """Load the product page `count` times, each in a trace of its own; their trace ids (every page 200)."""
    pages = [visit(up) for _ in range(count)]
    assert [answer.status_code for _, answer in pages] == [200] * count
    return [trace_id for trace_id, _ in pages]


def trace_of(up: Up, trace_id: str) -> dict:
    """One trace once the frontend's spans of it are stored (its server span ends after its calls)."""

    def stored() -> dict | None:
        answer = httpx.get(f"{observatory(up)}/api/traces/{trace_id}", timeout=10)
        if answer.status_code != 200 or not answer.json().get("data"):
            return None
        trace: dict = answer.json()["data"][0]
        frontend = spans_of(trace, "frontend")
        return trace if any(tag(span, "span.kind") == "server" for span in frontend) else None

    return eventually(stored, f"trace {trace_id} in the observatory", timeout=30, every=0.1)


def calls_to(trace: dict, callee: str, caller: str = "frontend") -> list[dict]:
    """The client spans in a trace of `caller`'s calls to `callee`."""
    return [
        span
        for span in spans_of(trace, caller)
        if tag(span, "span.kind") == "client" and tag(span, "mesh.dependency") == callee
    ]


def faulted(up: Up, callee: str, kind: str, path: str = f"/product/{PRODUCT}") -> dict:
    """A trace whose frontend calls to `callee` met the fault `kind` (loading pages until one does)."""

    def attempt() -> dict | None:
        trace = trace_of(up, visit(up, path)[0])
        return trace if any(tag(s, "fault.injected") == kind for s in calls_to(trace, callee)) else None

    return eventually(attempt, f"a {kind} on frontend → {callee}", timeout=30)


def recommended(page: str) -> list[str]:
    """The product ids the page recommends."""
    marker = 'data-recommendation="'
    return [part.split('"', 1)[0] for part in page.split(marker)[1:]]


def test_a_delay_on_one_edge_slows_its_calls_and_records_the_fault_on_their_spans(up: Up) -> None:
    rule = {"caller": "frontend", "callee": "cart"}
    change_flags(up, lambda: flag_file(up).set("meshCallFault", "delay500ms", by="test", when=rule))
    faulted(up, "cart", "delay")
    for trace_id in visits(up, 3):
        trace = trace_of(up, trace_id)
        delayed = calls_to(trace, "cart")
        assert delayed, "the product page made no cart call"
        for span in delayed:
            assert tag(span, "fault.injected") == "delay" and tag(span, "fault.delay_ms") == 500
            assert tag(span, "feature_flag.key") == "meshCallFault"
            assert tag(span, "feature_flag.result.variant") == "delay500ms"
        others = [
            s for s in spans_of(trace, "frontend") if tag(s, "span.kind") == "client" and s not in delayed
        ]
        assert others and not [s for s in others if tag(s, "fault.injected")], "another edge met the fault"
        print(f"\ncart calls of one page: {[s['duration'] // 1000 for s in delayed]} ms")


def test_a_percentage_splits_traces_and_each_trace_meets_the_fault_on_every_call_or_none(up: Up) -> None:
    rule = {"caller": "frontend", "callee": "productcatalog"}
    change_flags(
        up, lambda: flag_file(up).set("meshCallFault", "delay500ms", by="test", when=rule, percent=50)
    )
    faulted(up, "productcatalog", "delay")
    split = collections.Counter()
    for trace_id in visits(up, 12):
        calls = calls_to(trace_of(up, trace_id), "productcatalog")
        marks = {tag(span, "fault.injected") for span in calls}
        assert len(calls) > 1 and len(marks) == 1, f"a trace met the fault on some calls only: {marks}"
        split[marks.pop() or "none"] += 1
    print(f"\ntraces at 50 %: {dict(split)}")
    assert split["delay"] and split["none"]


def test_an_abort_on_one_edge_fails_only_that_edge_and_the_page_falls_back(up: Up) -> None:
    rule = {"caller": "frontend", "callee": "recommendation"}
    since = now_us()
    change_flags(up, lambda: flag_file(up).set("meshCallFault", "abortUnavailable", by="test", when=rule))
    first = faulted(up, "recommendation", "abort")
    assert not spans_of(first, "recommendation"), "an aborted call reached the recommendation service"
    fallback = [p for p in FEATURED if p != PRODUCT]
    pages = [visit(up) for _ in range(12)]
    for trace_id, answer in pages:
        assert answer.status_code == 200
        shown = recommended(answer.text)
        assert shown and shown == fallback[: len(shown)], f"not the featured fallback: {shown}"
        trace = trace_of(up, trace_id)
        failed = [span for span in trace["spans"] if tag(span, "otel.status_code") == "ERROR"]
        assert failed, "the recommendation call did not fail"
        assert all(span in calls_to(trace, "recommendation") for span in failed), "another edge failed"
        assert not spans_of(trace, "recommendation")

    def breaker() -> str:
        for process in mesh_status(up)["processes"]:
            for dependency in process.get("dependencies") or []:
                if process["service"] == "frontend" and dependency["name"] == "recommendation":
                    return str(dependency["breaker"]["state"])
        return ""

    def opened() -> str | None:
        visit(up)
        return breaker() if breaker() == "OPEN" else None

    # Counted like a real UNAVAILABLE: the frontend's breaker for recommendation opens.
    state = eventually(opened, "the frontend's breaker for recommendation to open", timeout=30)
    aborted = traces(up, "frontend", {"fault.injected": "abort"}, since)
    print(f"\nfrontend → recommendation breaker {state}; {len(aborted)} traces with an injected abort")


def serving_instance(trace: dict, span: dict) -> str:
    """The service.instance.id of the process that made `span`."""
    process = trace["processes"][span["processID"]]
    return next((t["value"] for t in process.get("tags", []) if t["key"] == "service.instance.id"), "")


def test_a_gray_replica_is_routed_around(up: Up) -> None:
    since = now_us()
    change_flags(up, lambda: flag_file(up).set("grayReplica", "500ms", by="test"), ("productcatalog-1",))

    def gray_spans() -> list[tuple[str, dict]]:
        found = []
        for trace in traces(up, "productcatalog", {"feature_flag.key": "grayReplica"}, since):
            found += [(serving_instance(trace, s), s) for s in spans_of(trace, "productcatalog")]
        return [(instance, span) for instance, span in found if tag(span, "feature_flag.key")]

    eventually(lambda: visit(up) and gray_spans(), "a late answer of productcatalog-1", timeout=30)

    lock = threading.Lock()
    pages: list[tuple[str, int]] = []

    def shopper(number: int) -> None:
        for index in range(8):
            trace_id, answer = visit(up, f"/product/{PRODUCTS[(number + index) % len(PRODUCTS)]}")
            with lock:
                pages.append((trace_id, answer.status_code))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(shopper, range(8)))
    assert {status for _, status in pages} == {200}, "a shop page failed"

    served = collections.Counter()
    for trace_id, _ in pages:
        for span in calls_to(trace_of(up, trace_id), "productcatalog"):
            served[tag(span, "mesh.instance")] += 1
    share = served["productcatalog-1"] / sum(served.values())
    late = gray_spans()
    print(
        f"\nfrontend → productcatalog calls by instance: {dict(served)}; productcatalog-1's share {share:.3f}"
        f"\nflagged server spans: {len(late)}, all of productcatalog-1; durations (ms):"
        f" {sorted(span['duration'] // 1000 for _, span in late)[:10]} …"
    )
    assert {instance for instance, _ in late} == {"productcatalog-1"}
    assert all(tag(span, "fault.injected") == "delay" for _, span in late)
    assert share < 0.25, f"least-request did not route around the late replica ({share:.2f} of calls)"
    views = [
        (process["id"], [(i["id"], i["ejected"]) for i in dependency["instances"]])
        for process in mesh_status(up)["processes"]
        for dependency in process.get("dependencies") or []
        if dependency["name"] == "productcatalog"
    ]
    print(f"callers' view of the catalogs (instance, ejected): {json.dumps(views)}")
