"""The mesh's Prometheus metrics (prefix boutique_mesh_), registered once per process."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

CLIENT_CALLS = Counter(
    "boutique_mesh_client_calls",
    "Client calls by dependency, method and outcome (ok, error, short_circuited, bulkhead_full, no_instances).",
    ["dependency", "method", "outcome"],
)
CLIENT_LATENCY = Histogram(
    "boutique_mesh_client_call_duration_seconds",
    "Client call latency including retries.",
    ["dependency", "method"],
    buckets=LATENCY_BUCKETS,
)
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
