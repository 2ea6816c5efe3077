"""The metrics query API over a real DuckDB store: fn semantics per kind, resets, quantiles, groups, errors, retention."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb
from starlette.applications import Starlette

from boutique.observatory.api import query_routes
from boutique.observatory.metrics.decode import decode
from boutique.observatory.metrics.table import TABLE
from boutique.observatory.store.duckdb_store import DuckDBStore, Retention
from tests.observatory.test_metrics_decode import (
    DELTA,
    SPAN,
    TRACE,
    exponential_metric,
    exponential_point,
    gauge_metric,
    histogram_metric,
    histogram_point,
    number_point,
    request,
    resource,
    sum_metric,
)

S = 1_000_000  # µs per second
T0 = (time.time_ns() // 1000 // S - 1800) * S  # half an hour ago, whole seconds: inside the age limit
BOUNDS = [10.0, 20.0, 50.0, 100.0]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    opened = DuckDBStore(tmp_path / "observatory.duckdb")
    yield opened
    opened.close()


@asynccontextmanager
async def client(store: DuckDBStore) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the query port's API routes over the store."""
    app = Starlette(routes=query_routes(store))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        yield http


def put(store: DuckDBStore, *resources: Any) -> None:
    batch = decode(request(*resources).SerializeToString())
    assert batch.rejected == 0, batch.rejection
    store.append(batch)


async def query(http: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await http.get("/api/metrics/query", params={k: str(v) for k, v in params.items()})
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def values(data: dict[str, Any], index: int = 0) -> list[float | None]:
    return [v for _, v in data["series"][index]["points"]]


# ---- sums --------------------------------------------------------------------------------------


async def test_a_cumulative_counter_with_a_reset(store: DuckDBStore) -> None:
    # 10 s apart: 10, 20, 30, then the process restarts at +35 s and counts 5, 15.
    starts = [T0, T0, T0, T0 + 35 * S, T0 + 35 * S]
    points = [
        number_point(T0 + (i + 1) * 10 * S, v, start_us=s)
        for i, (v, s) in enumerate(zip([10, 20, 30, 5, 15], starts, strict=True))
    ]
    put(store, resource("cart", "cart-1", sum_metric("requests", points)))
    window = {"name": "requests", "start": T0, "end": T0 + 60 * S, "step": 10 * S}
    async with client(store) as http:
        value = await query(http, **window)
        assert value["kind"] == "sum" and value["fn"] == "value" and value["step"] == 10 * S
        assert [t for t, _ in value["series"][0]["points"]] == [T0 + i * 10 * S for i in range(1, 7)]
        assert values(value) == [10, 20, 30, 5, 15, 15]  # the last value carried within the lookback
        # The first point counts from its start (in the window); the reset counts 5 from +35 s.
        assert values(await query(http, fn="increase", **window)) == [10, 10, 10, 5, 10, None]
        assert values(await query(http, fn="rate", **window)) == [1, 1, 1, 0.5, 1, None]
        whole = await query(http, fn="increase", name="requests", start=T0, end=T0 + 60 * S, step=60 * S)
        assert values(whole) == [45]
        # Between two stored points the rate is their difference over their own time apart.
        between = await query(
            http, fn="rate", name="requests", start=T0 + 10 * S, end=T0 + 30 * S, step=20 * S
        )
        assert values(between) == [(30 - 10) / 20]
        # Steps smaller than the points' spacing share the increase linearly: nothing counted twice.
        fine = await query(http, fn="increase", name="requests", start=T0, end=T0 + 50 * S, step=2_500_000)
        assert sum(v for v in values(fine) if v is not None) == pytest.approx(45)


async def test_a_counter_first_seen_long_after_its_start_is_a_baseline(store: DuckDBStore) -> None:
    # Started an hour before the window: its first value is not an increase inside the window.
    points = [number_point(T0 + i * 10 * S, 1000 + 7 * i, start_us=T0 - 3600 * S) for i in range(1, 4)]
    put(store, resource("cart", "cart-1", sum_metric("requests", points)))
    async with client(store) as http:
        data = await query(http, name="requests", fn="increase", start=T0, end=T0 + 30 * S, step=30 * S)
    assert values(data) == [14]


async def test_delta_sums_add_their_deltas(store: DuckDBStore) -> None:
    points = [number_point(T0 + i * 5 * S, 3, start_us=T0 + (i - 1) * 5 * S) for i in range(1, 7)]
    put(store, resource("cart", "cart-1", sum_metric("hits", points, temporality=DELTA)))
    async with client(store) as http:
        window = {"name": "hits", "start": T0, "end": T0 + 30 * S, "step": 10 * S}
        assert values(await query(http, **window)) == [6, 6, 6]  # value: the deltas in each step
        assert values(await query(http, fn="increase", **window)) == [6, 6, 6]
        assert values(await query(http, fn="rate", **window)) == [0.6, 0.6, 0.6]


async def test_an_up_down_counter_goes_down_without_a_reset(store: DuckDBStore) -> None:
    points = [number_point(T0 + i * 10 * S, v, start_us=T0) for i, v in enumerate([5, 3, 8], start=1)]
    put(store, resource("cart", "cart-1", sum_metric("in_flight", points, monotonic=False)))
    async with client(store) as http:
        window = {"name": "in_flight", "start": T0, "end": T0 + 30 * S, "step": 10 * S}
        assert values(await query(http, **window)) == [5, 3, 8]
        assert values(await query(http, fn="increase", **window)) == [5, -2, 5]


# ---- gauges ------------------------------------------------------------------------------------


async def test_gauge_value_avg_min_max_and_instances_summed(store: DuckDBStore) -> None:
    one = [number_point(T0 + s * S, v) for s, v in [(2, 1.0), (6, 3.0), (12, 10.0)]]
    two = [number_point(T0 + s * S, v) for s, v in [(4, 100.0), (14, 200.0)]]
    put(
        store,
        resource("cart", "cart-1", gauge_metric("queue", one)),
        resource("cart", "cart-2", gauge_metric("queue", two)),
    )
    window = {"name": "queue", "start": T0, "end": T0 + 20 * S, "step": 10 * S}
    async with client(store) as http:
        assert values(await query(http, **window)) == [3 + 100, 10 + 200]
        assert values(await query(http, fn="avg", **window)) == [2 + 100, 10 + 200]
        assert values(await query(http, fn="min", **window)) == [1, 10]
        assert values(await query(http, fn="max", **window)) == [100, 200]
        grouped = await query(http, fn="max", groupBy="instance", **window)
        assert [(s["labels"], [v for _, v in s["points"]]) for s in grouped["series"]] == [
            ({"instance": "cart-1"}, [3, 10]),
            ({"instance": "cart-2"}, [100, 200]),
        ]
        only = await query(http, filters='{"instance": "cart-2"}', **window)
        assert values(only) == [100, 200]


# ---- histograms --------------------------------------------------------------------------------


def prometheus_quantile(q: float, bounds: list[float], counts: list[float]) -> float:
    """Prometheus's histogram_quantile over one bucket layout (its algorithm, written out)."""
    cumulative = np.cumsum(counts)
    rank = q * cumulative[-1]
    b = int(np.searchsorted(cumulative, rank))
    if b == len(bounds):
        return bounds[-1]
    start = 0.0 if b == 0 else bounds[b - 1]
    before = 0.0 if b == 0 else cumulative[b - 1]
    return start + (bounds[b] - start) * (rank - before) / counts[b]


async def test_histogram_count_sum_rate_avg_and_quantile(store: DuckDBStore) -> None:
    first, second = [4, 10, 4, 2, 0], [6, 30, 40, 4, 0]
    points = [
        histogram_point(T0 + 10 * S, BOUNDS, first, 300.0, start_us=T0),
        histogram_point(T0 + 20 * S, BOUNDS, second, 2300.0, start_us=T0),
    ]
    put(store, resource("cart", "cart-1", histogram_metric("latency", points)))
    window = {"name": "latency", "start": T0, "end": T0 + 20 * S, "step": 10 * S}
    async with client(store) as http:
        assert values(await query(http, **window)) == [20, 80]  # count, as a scrape shows it
        assert values(await query(http, fn="sum", **window)) == [300, 2300]
        assert values(await query(http, fn="count_rate", **window)) == [2, 6]
        assert values(await query(http, fn="avg", **window)) == [15, 2000 / 60]
        for q in (0.5, 0.9, 0.99):
            got = values(await query(http, fn="quantile", quantile=q, **window))
            increase = [b - a for a, b in zip(first, second, strict=True)]
            assert got == pytest.approx(
                [prometheus_quantile(q, BOUNDS, first), prometheus_quantile(q, BOUNDS, increase)]
            )
        default = await query(http, fn="quantile", **window)
        assert values(default)[1] == pytest.approx(prometheus_quantile(0.95, BOUNDS, [2, 20, 36, 2, 0]))


async def test_histogram_quantile_merges_instances_and_groups_by_attribute(store: DuckDBStore) -> None:
    def one(instance: str, method: str, counts: list[int]) -> Any:
        zero = histogram_point(T0 + 1 * S, BOUNDS, [0] * 5, 0.0, {"method": method}, start_us=T0 - 3600 * S)
        later = histogram_point(T0 + 11 * S, BOUNDS, counts, 1.0, {"method": method}, start_us=T0 - 3600 * S)
        return resource("cart", instance, histogram_metric("latency", [zero, later]))

    put(
        store,
        one("cart-1", "Get", [10, 0, 0, 0, 0]),
        one("cart-2", "Get", [0, 0, 10, 0, 0]),
        one("cart-1", "Put", [0, 0, 0, 5, 0]),
    )
    window = {
        "name": "latency",
        "fn": "quantile",
        "quantile": 0.5,
        "start": T0 + S,
        "end": T0 + 11 * S,
        "step": 10 * S,
    }
    async with client(store) as http:
        merged = await query(http, **window)
        assert values(merged) == [pytest.approx(prometheus_quantile(0.5, BOUNDS, [10, 0, 10, 5, 0]))]
        by_method = await query(http, groupBy="method", **window)
        assert [s["labels"] for s in by_method["series"]] == [{"method": "Get"}, {"method": "Put"}]
        assert values(by_method, 0) == [pytest.approx(prometheus_quantile(0.5, BOUNDS, [10, 0, 10, 0, 0]))]
        assert values(by_method, 1) == [pytest.approx(prometheus_quantile(0.5, BOUNDS, [0, 0, 0, 5, 0]))]
        counts = await query(
            http, name="latency", groupBy="instance,method", start=T0 + S, end=T0 + 11 * S, step=10 * S
        )
        assert [(s["labels"], values({"series": [s]})) for s in counts["series"]] == [
            ({"instance": "cart-1", "method": "Get"}, [10]),
            ({"instance": "cart-1", "method": "Put"}, [5]),
            ({"instance": "cart-2", "method": "Get"}, [10]),
        ]


async def test_exponential_histogram_quantiles_across_a_change_of_scale(store: DuckDBStore) -> None:
    # Scale 1 (base √2) with 4 values in (2, 2√2], then scale 0 (base 2) as the range grew: 4 more in (8, 16].
    before = exponential_point(T0 + 10 * S, 1, 2, [4], 10.0, start_us=T0)
    after = exponential_point(T0 + 20 * S, 0, 1, [4, 0, 4], 60.0, start_us=T0)  # (2, 4]: 4, (8, 16]: 4
    put(store, resource("cart", "cart-1", exponential_metric("exp.latency", [before, after])))
    window = {"name": "exp.latency", "start": T0, "end": T0 + 20 * S, "step": 10 * S}
    async with client(store) as http:
        assert values(await query(http, **window)) == [4, 8]
        median = values(await query(http, fn="quantile", quantile=0.5, **window))
        # First step, at the coarsest scale (0): 4 values in (2, 4], the median half-way.
        assert median[0] == pytest.approx(3.0)
        # Second step: the 4 new values in (8, 16].
        assert median[1] == pytest.approx(12.0)
        assert values(await query(http, fn="quantile", quantile=1.0, **window))[1] == pytest.approx(16.0)


async def test_summaries_answer_count_rate_and_their_stored_quantiles(store: DuckDBStore) -> None:
    metric = pb.Metric(name="gc.pause")
    for second, count, total, p99 in ((10, 4, 8.0, 3.0), (20, 10, 26.0, 5.0)):
        point = metric.summary.data_points.add(
            time_unix_nano=(T0 + second * S) * 1000, start_time_unix_nano=T0 * 1000, count=count, sum=total
        )
        point.quantile_values.add(quantile=0.5, value=1.0)
        point.quantile_values.add(quantile=0.99, value=p99)
    put(store, resource("cart", "cart-1", metric), resource("cart", "cart-2", metric))
    window = {"name": "gc.pause", "start": T0, "end": T0 + 20 * S, "step": 10 * S}
    async with client(store) as http:
        assert (await query(http, **window))["kind"] == "summary"
        assert values(await query(http, **window)) == [8, 20]  # count, both instances
        assert values(await query(http, fn="count_rate", **window)) == [0.8, 1.2]
        assert values(await query(http, fn="avg", **window)) == [2, 3]
        assert values(await query(http, fn="quantile", quantile=0.99, **window)) == [3, 5]
        assert values(await query(http, fn="quantile", quantile=0.9, **window)) == [None, None]  # not carried


async def test_delta_exponential_histograms_with_negative_values(store: DuckDBStore) -> None:
    points = []
    for second in (10, 20):
        point = exponential_point(T0 + second * S, 0, 0, [2], 3.0, zero=1, start_us=T0 + (second - 10) * S)
        point.negative.offset = 1
        point.negative.bucket_counts.extend([1])  # one value in [-4, -2)
        point.count += 1
        points.append(point)
    put(store, resource("cart", "cart-1", exponential_metric("balance", points, temporality=DELTA)))
    window = {"name": "balance", "start": T0, "end": T0 + 20 * S, "step": 10 * S}
    async with client(store) as http:
        assert values(await query(http, **window)) == [4, 8]  # a delta histogram's count: its running total
        assert values(await query(http, fn="count_rate", **window)) == [0.4, 0.4]
        lowest = values(await query(http, fn="quantile", quantile=0.0, **window))
        assert lowest == [-4, -4]
        # Of 4 values (one in [-4, -2), one at zero, two in (1, 2]) the median is at the end of the zero bucket.
        assert values(await query(http, fn="quantile", quantile=0.5, **window)) == [0, 0]
        assert values(await query(http, fn="quantile", quantile=1.0, **window)) == [2, 2]


async def test_exemplars_of_a_metric_in_a_window(store: DuckDBStore) -> None:
    point = histogram_point(T0 + 10 * S, BOUNDS, [1, 0, 0, 0, 0], 4.0, {"method": "Get"}, start_us=T0)
    point.exemplars.add(time_unix_nano=(T0 + 9 * S) * 1000, as_double=4.0, trace_id=TRACE, span_id=SPAN)
    put(store, resource("cart", "cart-1", histogram_metric("latency", [point])))
    async with client(store) as http:
        response = await http.get(
            "/api/metrics/exemplars", params={"name": "latency", "start": T0, "end": T0 + 20 * S}
        )
        assert response.status_code == 200
        assert response.json()["data"] == [
            {
                "time": T0 + 9 * S,
                "value": 4.0,
                "traceID": TRACE.hex(),
                "spanID": SPAN.hex(),
                "labels": {"method": "Get"},
                "service": "cart",
                "instance": "cart-1",
            }
        ]
        outside = await http.get(
            "/api/metrics/exemplars", params={"name": "latency", "start": T0 + 10 * S, "end": T0 + 20 * S}
        )
        assert outside.json()["data"] == []


# ---- series, errors, retention -----------------------------------------------------------------


async def test_series_lists_instruments_with_their_labels(store: DuckDBStore) -> None:
    put(
        store,
        resource(
            "cart", "cart-1", sum_metric("requests", [number_point(T0, 1, {"method": "Get", "code": 0})])
        ),
        resource(
            "cart", "cart-2", sum_metric("requests", [number_point(T0, 1, {"method": "Put", "code": 14})])
        ),
        resource("payment", "p-1", gauge_metric("queue", [number_point(T0, 1.0)])),
    )
    async with client(store) as http:
        everything = (await http.get("/api/metrics/series")).json()["data"]
        assert [(e["name"], e["service"]) for e in everything] == [("queue", "payment"), ("requests", "cart")]
        requests = everything[1]
        assert requests == {
            "name": "requests",
            "service": "cart",
            "kind": "sum",
            "unit": "{request}",
            "description": "",
            "temporality": "cumulative",
            "monotonic": True,
            "labels": {"code": ["0", "14"], "instance": ["cart-1", "cart-2"], "method": ["Get", "Put"]},
        }
        one = (await http.get("/api/metrics/series", params={"service": "payment"})).json()["data"]
        assert [e["name"] for e in one] == ["queue"]


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({}, "parameter 'name': the metric's name is required"),
        ({"name": "requests", "fn": "p99"}, "parameter 'fn': unknown function 'p99'"),
        ({"name": "requests", "fn": "quantile"}, "parameter 'fn': 'quantile' does not apply to a sum"),
        ({"name": "requests", "quantile": "2"}, "parameter 'quantile': must be between 0 and 1"),
        ({"name": "requests", "filters": "[1]"}, "parameter 'filters': must be a JSON object"),
        ({"name": "requests", "filters": "{bad"}, "parameter 'filters': not valid JSON"),
        ({"name": "requests", "filters": '{"a": {"b": 1}}'}, "parameter 'filters'"),
        ({"name": "requests", "groupBy": "a,,b"}, "parameter 'groupBy': empty key"),
        ({"name": "requests", "start": "10", "end": "5"}, "parameter 'start': must be before 'end'"),
        ({"name": "requests", "start": "x"}, "parameter 'start': not an integer"),
        (
            {"name": "requests", "step": "1", "start": "0", "end": "100000000"},
            "parameter 'step': gives 100000000 steps",
        ),
        ({"name": "requests", "step": "soon"}, "parameter 'step': not a duration"),
    ],
)
async def test_bad_parameters_are_answered_400_naming_them(
    store: DuckDBStore, params: dict[str, str], words: str
) -> None:
    put(store, resource("cart", "cart-1", sum_metric("requests", [number_point(T0, 1)])))
    async with client(store) as http:
        response = await http.get("/api/metrics/query", params=params)
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert errors[0]["code"] == 400 and words in errors[0]["msg"], errors


async def test_a_name_used_by_two_kinds_needs_a_service_and_an_unknown_name_has_no_series(
    store: DuckDBStore,
) -> None:
    put(
        store,
        resource("cart", "cart-1", sum_metric("x", [number_point(T0, 1)])),
        resource("payment", "p-1", gauge_metric("x", [number_point(T0, 1.0)])),
    )
    async with client(store) as http:
        response = await http.get("/api/metrics/query", params={"name": "x"})
        assert response.status_code == 400 and "give a service" in response.json()["errors"][0]["msg"]
        assert (await query(http, name="x", service="payment", start=T0 - S, end=T0 + S))["kind"] == "gauge"
        assert (await query(http, name="nothing"))["series"] == []
        exemplars = await http.get("/api/metrics/exemplars", params={"name": "x", "limit": "0"})
        assert exemplars.status_code == 400


def test_retention_removes_old_points_then_their_series(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "observatory.duckdb", retention=Retention(max_age_us=60 * S))
    now = time.time_ns() // 1000
    old = resource("cart", "cart-1", sum_metric("old", [number_point(now - 120 * S, 1)]))
    mixed = resource(
        "cart", "cart-1", sum_metric("mixed", [number_point(now - 90 * S, 1), number_point(now - 10 * S, 2)])
    )
    put(store, old, mixed)

    def count(db: Any) -> tuple[int, int]:
        points = db.execute("SELECT count(*) FROM metric_points").fetchone()[0]
        return points, db.execute("SELECT count(*) FROM metric_series").fetchone()[0]

    assert store.read(count) == (3, 2)
    assert store.read(lambda db: TABLE.time_range(db)) == (now - 120 * S, now - 10 * S)
    store.enforce_retention(now)
    assert store.read(count) == (1, 1)
    assert store.read(lambda db: TABLE.time_range(db)) == (now - 10 * S, now - 10 * S)
    names = store.read(lambda db: db.execute("SELECT name FROM metric_series").fetchall())
    assert names == [("mixed",)]
    store.close()
