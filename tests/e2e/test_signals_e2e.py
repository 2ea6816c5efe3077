"""Logs and metrics of the real shop reach the observatory over OTLP and answer its query API.

One `boutique up` (no simulated shoppers, metrics pushed every second); a scripted shopper checks out
and looks at products. Its checkout's log records are then found by the trace id the Jaeger API gives
for it, and the request counts and latency histograms a service serves on `/metrics` are the ones
`/api/metrics/query` answers, exactly, once the traffic has stopped.
"""

from __future__ import annotations

import datetime
import json
import re
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from boutique.shop.services import SERVICES
from tests.e2e.harness import Up, checkout_form, eventually, observatory_api, start_up

pytestmark = pytest.mark.e2e

INTERVAL = 1.0  # BOUTIQUE_METRICS_EXPORT_INTERVAL for every process of this `up`
CARD, CVV, EMAIL = "5555-5555-5555-4444", "9183", "sam.signals@example.com"
PRODUCTS = ("OLJCESPC7Z", "66VCHSJNUP", "1YMWWN1N4O")
PRODUCT_VIEWS = 12  # of each product


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """The whole shop, pushing metrics every second, with no traffic but the tests'."""
    up = start_up(
        tmp_path_factory.mktemp("signals"),
        env={"BOUTIQUE_METRICS_EXPORT_INTERVAL": str(INTERVAL), "OTEL_BLRP_SCHEDULE_DELAY": "500"},
    )
    try:
        yield up
    finally:
        up.stop()


def process(up: Up, instance: str) -> dict[str, Any]:
    """One process of the `up`, as its state file lists it."""
    return next(p for p in up.state()["processes"] if p["instance"] == instance)


def checkout(up: Up, trace_id: str) -> None:
    """Add a product to a fresh cart and place the order, the checkout under `trace_id`."""
    with httpx.Client(base_url=up.url, timeout=20) as browser:
        added = browser.post(
            "/cart", data={"product_id": PRODUCTS[0], "quantity": "1"}, follow_redirects=True
        )
        assert added.status_code == 200
        form = checkout_form(EMAIL, "1 Signal Street", CARD, CVV)
        headers = {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
        placed = browser.post("/cart/checkout", data=form, headers=headers)
        assert placed.status_code == 200, placed.text[-500:]


def json_lines(up: Up, trace_id: str) -> list[dict[str, Any]]:
    """Every JSON log line any process wrote with `trace_id`."""
    found = []
    for path in sorted((up.data_dir / "logs").glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{") and trace_id in line:
                entry = json.loads(line)
                if entry.get("trace_id") == trace_id:
                    found.append(entry)
    return found


def test_a_checkouts_log_records_are_found_by_its_trace_id(shop: Up) -> None:
    chosen = secrets.token_hex(16)
    checkout(shop, chosen)

    def checkout_trace() -> str | None:  # the checkout as the Jaeger API lists the checkout service's traces
        traces = observatory_api(shop, "/api/traces", service="checkout", lookback="1h", limit=50)["data"]
        ids = [
            t["traceID"] for t in traces if any(s["operationName"].endswith("PlaceOrder") for s in t["spans"])
        ]
        return next((i for i in ids if i == chosen), None)

    trace_id = eventually(checkout_trace, "the checkout's trace in the Jaeger API")
    trace = observatory_api(shop, f"/api/traces/{trace_id}")["data"][0]
    span_ids = {span["spanID"] for span in trace["spans"]}
    written = json_lines(shop, trace_id)
    wanted = Counter((entry["service"], entry["event"]) for entry in written)
    assert ("checkout", "order placed") in wanted and ("email", "order confirmation sent") in wanted

    def all_records() -> list[dict[str, Any]] | None:
        records = observatory_api(shop, "/api/logs", traceID=trace_id, limit=1000)["data"]
        found = Counter((r["service"], r["body"]) for r in records)
        return records if found >= wanted else None

    records = eventually(all_records, f"the {sum(wanted.values())} log records of trace {trace_id}")
    print(
        f"\n{len(records)} records of the checkout: {sorted(Counter(r['service'] for r in records).items())}"
    )
    assert Counter((r["service"], r["body"]) for r in records) == wanted  # each line once, nothing else
    for record in records:
        assert record["traceID"] == trace_id and record["spanID"] in span_ids
        assert record["resource"]["service.instance.id"] == record["instance"]
    placed = next(r for r in records if r["body"] == "order placed")
    line = next(e for e in written if e["event"] == "order placed")
    assert placed["severity"] == "INFO" and placed["scope"] == line["logger"]
    assert placed["attributes"]["order_id"] == line["order_id"]
    assert abs(placed["time"] - datetime.datetime.fromisoformat(line["timestamp"]).timestamp() * 1e6) < 1000
    text = json.dumps(records)
    assert CARD not in text and CARD.replace("-", "") not in text and EMAIL not in text
    assert not re.search(rf'"{CVV}"|cvv[^,\n]*{CVV}', text, re.I)


def scrape(up: Up, instance: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample `instance` serves on /metrics now."""
    text = httpx.get(f"http://{process(up, instance)['metrics']}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def served(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """The one sample called `name` whose labels include `labels`."""
    (value,) = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls)]
    return value


def queried(up: Up, service: str, name: str, fn: str, since_us: int, **filters: str) -> float | None:
    """The last value `/api/metrics/query` gives for one series of `name` with `fn`."""
    data = observatory_api(
        up,
        "/api/metrics/query",
        name=name,
        service=service,
        filters=json.dumps(filters),
        fn=fn,
        start=since_us,
        end=time.time_ns() // 1000 + 1_000_000,
    )["data"]
    if len(data["series"]) != 1:
        return None
    values = [value for _, value in data["series"][0]["points"] if value is not None]
    return values[-1] if values else None


@pytest.mark.parametrize(
    ("service", "instance", "counter", "histogram", "labels"),
    [
        (
            "productcatalog",
            "productcatalog-0",
            "grpc_server_handled",
            "grpc_server_handling_seconds",
            {"grpc_method": "GetProduct"},
        ),
        (
            "frontend",
            "frontend-0",
            "http_server_requests",
            "http_server_request_duration_seconds",
            {"method": "GET", "route": "/product/{product_id}"},
        ),
    ],
)
def test_request_counts_and_latency_histograms_from_otlp_are_the_ones_metrics_served(
    shop: Up, service: str, instance: str, counter: str, histogram: str, labels: dict[str, str]
) -> None:
    since_us = time.time_ns() // 1000 - 600_000_000
    with httpx.Client(base_url=shop.url, timeout=20) as browser:
        for _ in range(PRODUCT_VIEWS):
            for product in PRODUCTS:
                assert browser.get(f"/product/{product}").status_code == 200
    time.sleep(INTERVAL * 1.5)  # traffic stopped; every update made, one export since
    samples = scrape(shop, instance)
    outcome = {"grpc_code": "OK"} if counter.startswith("grpc") else {"status": "200"}
    count = served(samples, f"{counter}_total", **labels, **outcome)
    handled = served(samples, f"{histogram}_count", **labels)
    seconds = served(samples, f"{histogram}_sum", **labels)
    assert count >= PRODUCT_VIEWS * len(PRODUCTS) and handled >= count
    expected = {
        ("value", counter, json.dumps({**labels, **outcome})): count,
        ("count", histogram, json.dumps(labels)): handled,
        ("sum", histogram, json.dumps(labels)): seconds,
    }

    def answers() -> dict[tuple[str, str, str], float | None]:
        return {
            (fn, name, filters): queried(shop, service, name, fn, since_us, **json.loads(filters))
            for fn, name, filters in expected
        }

    def same() -> dict[tuple[str, str, str], float | None] | None:
        found = answers()
        return found if all(found[k] == pytest.approx(v, rel=1e-12) for k, v in expected.items()) else None

    try:
        eventually(same, f"{service}'s metrics in the observatory as /metrics served them", timeout=30)
    finally:
        print(f"\n{service}: served {expected}\n  answered {answers()}")
    assert (
        served(scrape(shop, instance), f"{counter}_total", **labels, **outcome) == count
    )  # no other traffic
    series = observatory_api(shop, "/api/metrics/series", service=service, name=histogram)["data"]
    (described,) = [s for s in series if s["name"] == histogram]
    assert (described["kind"], described["temporality"], described["unit"]) == (
        "histogram",
        "cumulative",
        "s",
    )
    (sums,) = [s for s in observatory_api(shop, "/api/metrics/series", service=service, name=counter)["data"]]
    assert (sums["kind"], sums["monotonic"], sums["temporality"]) == ("sum", True, "cumulative")


def test_every_shop_process_sends_its_log_records_and_metrics(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Services, frontend and the load generator (Locust, under gevent) alike, each under its instance."""
    up = start_up(
        tmp_path_factory.mktemp("every"),
        "--load",
        "--users",
        "2",
        "--spawn-rate",
        "2",
        env={
            "BOUTIQUE_METRICS_EXPORT_INTERVAL": str(INTERVAL),
            "LOADGEN_WAIT_MIN": "0.2",
            "LOADGEN_WAIT_MAX": "0.5",
        },
    )
    try:
        names = {p["service"]: p["instance"] for p in up.state()["processes"] if p["service"] in SERVICES}
        assert set(names) == set(SERVICES)

        def logging_services() -> set[str] | None:
            found = set(observatory_api(up, "/api/logs/services")["data"])
            return found if found >= set(SERVICES) else None

        eventually(logging_services, "log records of every shop process", timeout=60)

        def metric_instances() -> dict[str, set[str]] | None:
            found = {}
            for service in SERVICES:
                series = observatory_api(
                    up, "/api/metrics/series", service=service, name="process_cpu_seconds"
                )["data"]
                found[service] = {i for s in series for i in s["labels"].get("instance", [])}
            return found if all(found.values()) else None

        instances = eventually(metric_instances, "metrics of every shop process", timeout=60)
        assert instances == {service: {instance} for service, instance in names.items()}
        for service, instance in names.items():
            (record, *_) = observatory_api(up, "/api/logs", service=service, limit=1)["data"]
            assert record["instance"] == instance == record["resource"]["service.instance.id"]
    finally:
        up.stop()
