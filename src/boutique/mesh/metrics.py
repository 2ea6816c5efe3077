"""The mesh's Prometheus metrics (prefix boutique_mesh_), registered once per process."""

from __future__ import annotations

import weakref
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from boutique.mesh.resilience.limiter import ConcurrencyLimiter

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class CallCount:
    """One client-call counter: a plain attribute the event loop increments (no lock, no label lookup)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self) -> None:
        """Count one call."""
        self.value += 1


class CallLatency:
    """One client-call latency histogram: bucket counts found by bisection, exposed cumulatively on scrape."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """Add one call's duration."""
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds


class CallStats(Collector):
    """Call counts and latencies kept in plain objects and turned into a counter and a histogram when scraped.

    Every RPC and request updates them, so they avoid what prometheus_client's children cost per update
    (a lock per value and a Python loop over the buckets); updates come from the event loop's thread.
    The counter's labels are the histogram's plus one (the outcome or status code).
    """

    def __init__(
        self, counter: tuple[str, str, Sequence[str]], histogram: tuple[str, str, Sequence[str]]
    ) -> None:
        self._counter = counter  # (name, help, labels)
        self._histogram = histogram
        self._calls: dict[tuple[str, ...], CallCount] = {}
        self._latency: dict[tuple[str, ...], CallLatency] = {}

    def count(self, *labels: str) -> CallCount:
        """The counter of calls with these label values."""
        found = self._calls.get(labels)
        if found is None:
            found = self._calls[labels] = CallCount()
        return found

    def latency(self, *labels: str) -> CallLatency:
        """The latency histogram of calls with these label values."""
        found = self._latency.get(labels)
        if found is None:
            found = self._latency[labels] = CallLatency()
        return found

    def collect(self) -> Iterator[Metric]:
        """The two metric families as of now."""
        name, text, labels = self._counter
        calls = CounterMetricFamily(name, text, labels=list(labels))
        for values, count in list(self._calls.items()):
            calls.add_metric(list(values), count.value)
        yield calls
        name, text, labels = self._histogram
        latency = HistogramMetricFamily(name, text, labels=list(labels))
        bounds = [*(repr(float(b)) for b in LATENCY_BUCKETS), "+Inf"]
        for values, hist in list(self._latency.items()):
            running, cumulative = 0, []
            for bound, n in zip(bounds, list(hist.counts), strict=True):
                running += n
                cumulative.append((bound, running))
            latency.add_metric(list(values), cumulative, hist.total)
        yield latency


CLIENT_STATS = CallStats(
    (
        "boutique_mesh_client_calls",
        "Client calls by dependency, method and outcome "
        "(ok, error, overloaded, short_circuited, bulkhead_full, no_instances).",
        ("dependency", "method", "outcome"),
    ),
    (
        "boutique_mesh_client_call_duration_seconds",
        "Client call latency including retries.",
        ("dependency", "method"),
    ),
)
REGISTRY.register(CLIENT_STATS)
SERVER_STATS = CallStats(
    (
        "grpc_server_handled",
        "RPCs completed on the server, by status code.",
        ("grpc_service", "grpc_method", "grpc_code"),
    ),
    ("grpc_server_handling_seconds", "Time to handle an RPC on the server.", ("grpc_service", "grpc_method")),
)
REGISTRY.register(SERVER_STATS)
HTTP_STATS = CallStats(
    (
        "http_server_requests",
        "HTTP requests served, by method, route template and status code.",
        ("method", "route", "status"),
    ),
    ("http_server_request_duration_seconds", "Time to serve an HTTP request.", ("method", "route")),
)
REGISTRY.register(HTTP_STATS)
RETRIES = Counter(
    "boutique_mesh_client_retries", "Retries sent to another instance.", ["dependency", "method"]
)
BUDGET_EXHAUSTED = Counter(
    "boutique_mesh_retry_budget_exhausted",
    "Retries refused because the retry budget was spent.",
    ["dependency"],
)
FALLBACKS = Counter(
    "boutique_mesh_fallbacks", "Fallbacks served instead of a dependency's answer.", ["dependency"]
)
BREAKER_STATE = Gauge(
    "boutique_mesh_breaker_state",
    "Circuit breaker state: 0 closed, 1 open, 2 half-open, 3 forced-open, 4 disabled.",
    ["breaker"],
)
BREAKER_TRANSITIONS = Counter(
    "boutique_mesh_breaker_transitions",
    "Circuit breaker state changes.",
    ["breaker", "from_state", "to_state"],
)
EJECTIONS = Counter("boutique_mesh_ejections", "Instances ejected as outliers.", ["dependency"])
INSTANCES = Gauge("boutique_mesh_instances", "Live instances known per service.", ["service"])
DISCOVERY_UPDATES = Counter("boutique_mesh_discovery_updates", "Instance-set updates received.", ["service"])


WATCH_LAG = Histogram(
    "boutique_mesh_registry_watch_lag_seconds",
    "Time from a registry change to this client learning of it (registry backend).",
    ["service"],
    buckets=LATENCY_BUCKETS,
)


class LimiterStats(Collector):
    """Limit, in-flight and shed counts of the process's concurrency limiters, read from them when scraped.

    A server registers its limiter with `track` (under its name, e.g. "grpc" or "http") and removes it with
    `untrack` when it stops (a limiter nobody holds any more goes by itself); requests never touch
    Prometheus objects.
    """

    def __init__(self) -> None:
        self._limiters: weakref.WeakValueDictionary[str, ConcurrencyLimiter] = weakref.WeakValueDictionary()

    def track(self, limiter: ConcurrencyLimiter) -> None:
        """Expose `limiter` under its name (a second one of the same name gets a numbered name)."""
        name, number = limiter.name, 1
        while name in self._limiters and self._limiters[name] is not limiter:
            number += 1
            name = f"{limiter.name}#{number}"
        self._limiters[name] = limiter

    def untrack(self, limiter: ConcurrencyLimiter) -> None:
        """Stop exposing `limiter`."""
        for name, known in list(self._limiters.items()):
            if known is limiter:
                del self._limiters[name]

    def snapshot(self) -> list[dict[str, Any]]:
        """Every tracked limiter's state, for /mesh/status."""
        return [{**limiter.snapshot(), "name": name} for name, limiter in list(self._limiters.items())]

    def collect(self) -> Iterator[Metric]:
        """The limiter metric families as of now."""
        labels = ["limiter"]
        limit = GaugeMetricFamily(
            "boutique_mesh_concurrency_limit",
            "Requests a server admits at once (adaptive limit).",
            labels=labels,
        )
        in_flight = GaugeMetricFamily(
            "boutique_mesh_concurrency_in_flight", "Requests admitted and not yet finished.", labels=labels
        )
        shed = CounterMetricFamily(
            "boutique_mesh_concurrency_shed",
            "Requests refused at once because the concurrency limit was reached.",
            labels=labels,
        )
        admitted = CounterMetricFamily(
            "boutique_mesh_concurrency_admitted",
            "Requests admitted under the concurrency limit.",
            labels=labels,
        )
        latency = GaugeMetricFamily(
            "boutique_mesh_concurrency_latency_seconds",
            "Latency the adaptive limit works from: last window's median (sample) and no-load estimate (baseline).",
            labels=["limiter", "kind"],
        )
        for name, limiter in list(self._limiters.items()):
            limit.add_metric([name], limiter.current_limit)
            in_flight.add_metric([name], limiter.in_flight)
            shed.add_metric([name], limiter.shed_count)
            admitted.add_metric([name], limiter.admitted_count)
            state = limiter.limit.snapshot()
            if "sample_rtt_ms" in state:
                latency.add_metric([name, "sample"], state["sample_rtt_ms"] / 1000)
                latency.add_metric([name, "baseline"], state["baseline_rtt_ms"] / 1000)
        yield from (limit, in_flight, shed, admitted, latency)


LIMITER_STATS = LimiterStats()
REGISTRY.register(LIMITER_STATS)
