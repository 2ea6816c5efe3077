"""The mesh at work in the running shop: failover without failed reads, breakers with fallbacks."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from boutique.shop.recommendation.client import FEATURED
from tests.e2e.harness import Up, eventually, log_events, start_up

pytestmark = pytest.mark.e2e

FAST_SHOPPERS = {"LOADGEN_WAIT_MIN": "0.05", "LOADGEN_WAIT_MAX": "0.3"}
IDEMPOTENT = {"GET", "HEAD"}


def _process(up: Up, instance: str) -> dict:
    return next(p for p in up.state()["processes"] if p["instance"] == instance)


def _registered(up: Up, service: str) -> list[dict]:
    registry = _process(up, "registry-0")["address"]
    return httpx.get(f"http://{registry}/v1/services/{service}", timeout=5).json()["instances"]


def _metrics_url(up: Up, service: str) -> str:
    (instance,) = _registered(up, service)
    return f"http://{instance['address']}:{instance['ports']['metrics']}"


def _load_rows(data_dir: Path, name: str) -> list[dict[str, str]]:
    path = data_dir / f"loadgen_{name}.csv"
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_killing_a_cart_replica_fails_no_idempotent_request(tmp_path: Path) -> None:
    up = start_up(
        tmp_path, "--replicas", "cart=3,currency=3", "--load", "--users", "12", "--spawn-rate", "12",
        env=FAST_SHOPPERS,
    )  # fmt: skip
    try:
        eventually(lambda: len(_registered(up, "cart")) == 3, "three cart replicas in the registry", 20)
        eventually(
            lambda: any(
                int(r["Request Count"]) > 100
                for r in _load_rows(tmp_path, "stats")
                if r["Name"] == "Aggregated"
            ),
            "the load generator to get going",
            60,
        )
        victim = _process(up, "cart-1")
        killed_at = datetime.now().astimezone()
        os.kill(victim["pid"], signal.SIGKILL)
        time.sleep(6)  # the load keeps running across the failure and the restart

        for caller in ("frontend-0", "checkout-0"):
            updates = [
                e for e in log_events(tmp_path, caller, "instances")
                if e.get("dependency") == "cart" and datetime.fromisoformat(e["timestamp"]) >= killed_at
            ]  # fmt: skip
            assert any("cart-1" not in e["instances"] for e in updates), f"{caller} kept cart-1 in its set"

        failures = [r for r in _load_rows(tmp_path, "failures") if r["Method"] in IDEMPOTENT]
        assert failures == [], f"idempotent requests failed: {failures}"
        requests = sum(
            int(r["Request Count"]) for r in _load_rows(tmp_path, "stats") if r["Type"] in IDEMPOTENT
        )
        assert requests > 200, "too little load to show anything"
        assert _process(up, "cart-1")["restarts"] >= 1
    finally:
        assert up.stop() == 0


def _breaker_state(metrics_url: str, dependency: str) -> float | None:
    text = httpx.get(f"{metrics_url}/metrics", timeout=5).text
    match = re.search(rf'boutique_mesh_breaker_state\{{breaker="frontend->{dependency}"\}} (\S+)', text)
    return float(match.group(1)) if match else None


def _stream_event(metrics_url: str, group: str, timeout: float = 10.0) -> dict:
    """The first /mesh/stream event for the breaker of `group`."""
    deadline = time.monotonic() + timeout
    with httpx.stream("GET", f"{metrics_url}/mesh/stream", timeout=timeout) as response:
        for line in response.iter_lines():
            if line.startswith("data:") and time.monotonic() < deadline:
                event = json.loads(line[5:])
                if event.get("group") == group:
                    return event
            if time.monotonic() > deadline:
                break
    pytest.fail(f"no stream event for {group}")


def test_a_hanging_recommendation_service_opens_the_breaker_and_pages_use_the_fallback(
    tmp_path: Path,
) -> None:
    up = start_up(tmp_path)
    pages = [f"{up.url}/product/{pid}" for pid in ("1YMWWN1N4O", "L9ECAV7KIM", "OLJCESPC7Z", "66VCHSJNUP")]

    def browse(count: int) -> list[httpx.Response]:
        with ThreadPoolExecutor(8) as pool, httpx.Client(timeout=20) as client:
            return list(pool.map(lambda i: client.get(pages[i % len(pages)]), range(count)))

    recommendation: dict = {}
    try:  # every failure below must still stop `up`, or its processes outlive the test
        recommendation = _process(up, "recommendation-0")
        frontend_metrics = _metrics_url(up, "frontend")
        assert all(r.status_code == 200 for r in browse(8))
        assert _breaker_state(frontend_metrics, "recommendation") == 0

        os.kill(recommendation["pid"], signal.SIGSTOP)  # hangs: accepts connections, never answers
        responses = browse(24)
        assert all(r.status_code == 200 for r in responses), [r.status_code for r in responses]
        for response in responses:
            shown = set(re.findall(r'data-recommendation="([^"]+)"', response.text))
            assert shown and shown <= set(FEATURED), "the featured products stand in for recommendations"

        eventually(lambda: _breaker_state(frontend_metrics, "recommendation") == 1, "the breaker to open", 10)
        event = _stream_event(frontend_metrics, "recommendation")
        assert event["isCircuitBreakerOpen"] is True
        assert event["rollingCountFallbackSuccess"] > 0
        assert {
            "errorPercentage",
            "requestCount",
            "latencyTotal",
            "rollingCountShortCircuited",
        } <= event.keys()

        os.kill(recommendation["pid"], signal.SIGCONT)

        def closed_again() -> bool:
            browse(4)
            return _breaker_state(frontend_metrics, "recommendation") == 0

        eventually(closed_again, "the breaker to close after the service came back", 60)
        page = browse(1)[0]
        assert page.status_code == 200 and "data-recommendation" in page.text
    finally:
        if recommendation:
            os.kill(recommendation["pid"], signal.SIGCONT)
        assert up.stop() == 0
