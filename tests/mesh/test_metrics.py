"""The client-call statistics the mesh keeps itself read back as Prometheus counters and histograms."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from boutique.mesh.metrics import CallStats


def client_stats() -> CallStats:
    """Stats shaped like the mesh's client-call metrics."""
    return CallStats(
        ("boutique_mesh_client_calls", "calls", ("dependency", "method", "outcome")),
        ("boutique_mesh_client_call_duration_seconds", "latency", ("dependency", "method")),
    )


def scrape(stats: CallStats) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a registry holding only `stats`, by name and sorted labels."""
    registry = CollectorRegistry()
    registry.register(stats)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_counts_by_outcome_and_cumulative_latency_buckets() -> None:
    stats = client_stats()
    for _ in range(3):
        stats.count("cart", "GetCart", "ok").inc()
    stats.count("cart", "GetCart", "error").inc()
    latency = stats.latency("cart", "GetCart")
    for seconds in (0.001, 0.002, 0.3, 30.0):  # on a bound, inside, inside, above the last bound
        latency.observe(seconds)

    samples = scrape(stats)
    labels = (("dependency", "cart"), ("method", "GetCart"))
    assert samples["boutique_mesh_client_calls_total", (*labels, ("outcome", "ok"))] == 3
    assert samples["boutique_mesh_client_calls_total", (*labels, ("outcome", "error"))] == 1

    def bucket(le: str) -> float:
        return samples[
            "boutique_mesh_client_call_duration_seconds_bucket", tuple(sorted((*labels, ("le", le))))
        ]

    assert bucket("0.001") == 1  # le is inclusive
    assert bucket("0.0025") == 2
    assert bucket("0.25") == 2
    assert bucket("0.5") == 3
    assert bucket("10.0") == 3
    assert bucket("+Inf") == 4
    assert samples["boutique_mesh_client_call_duration_seconds_count", labels] == 4
    assert abs(samples["boutique_mesh_client_call_duration_seconds_sum", labels] - 30.303) < 1e-9


def test_the_same_labels_share_one_counter() -> None:
    stats = client_stats()
    assert stats.count("a", "M", "ok") is stats.count("a", "M", "ok")
    assert stats.latency("a", "M") is stats.latency("a", "M")
    assert stats.count("a", "M", "ok") is not stats.count("a", "M", "error")
