"""A real Prometheus scrapes every process of a real `boutique up` through the generated configuration."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from boutique.run.ports import free_port
from tests.e2e.harness import Up, start_up

pytestmark = pytest.mark.e2e

T = TypeVar("T")
DEADLINE = 60.0


def wait_for(what: str, probe: Callable[[], T], done: Callable[[T], bool], timeout: float = DEADLINE) -> T:
    """Call `probe` until `done` holds for its answer; fail naming `what` and the last answer otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except httpx.HTTPError as exc:
            last = exc
        else:
            if done(last):
                return last
        time.sleep(0.5)
    raise AssertionError(f"{what} within {timeout:.0f} s; last seen: {last!r}")


def place_order(up: Up) -> None:
    """One shopper: add a product to the cart and check out."""
    with httpx.Client(base_url=up.url, timeout=15) as browser:
        assert browser.get("/").status_code == 200
        added = browser.post("/cart", data={"product_id": "OLJCESPC7Z", "quantity": "1"})
        assert added.status_code == 302, added.text[-2000:]
        order = browser.post(
            "/cart/checkout",
            data={
                "email": "prometheus@example.com",
                "street_address": "1600 Amphitheatre Parkway",
                "zip_code": "94043",
                "city": "Mountain View",
                "state": "CA",
                "country": "United States",
                "credit_card_number": "4432-8015-6152-0454",
                "credit_card_expiration_month": "1",
                "credit_card_expiration_year": str(date.today().year + 1),
                "credit_card_cvv": "672",
            },
        )
        assert order.status_code == 200, order.text[-2000:]


def test_prometheus_scrapes_every_process_of_the_shop(tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("install prometheus (apt-get install prometheus)")
    up = start_up(tmp_path / "shop", "--load")  # the load generator keeps the frontend busy
    server: subprocess.Popen[bytes] | None = None
    log = tmp_path / "prometheus.log"
    try:
        processes = up.state()["processes"]
        registry = next(p["address"] for p in processes if p["service"] == "registry")
        scraped = {p["instance"]: p["metrics"] for p in processes if p["metrics"]}
        assert len(scraped) >= 10, processes

        out = tmp_path / "prometheus"
        command = [sys.executable, "-m", "boutique.cli", "prometheus-config", "--once", "--out", str(out)]
        generated = subprocess.run(
            [*command, "--registry", f"http://{registry}", "--scrape-interval", "1s"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert generated.returncode == 0, generated.stderr
        groups = json.loads((out / "targets.json").read_text())
        assert {g["labels"]["instance"]: g["targets"][0] for g in groups} == scraped

        place_order(up)

        port = free_port()
        api = f"http://127.0.0.1:{port}/api/v1"
        with log.open("wb") as sink:
            server = subprocess.Popen(
                [
                    prometheus,
                    f"--config.file={out / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
            )

        def active_targets() -> list[dict[str, Any]]:
            assert server is not None and server.poll() is None, log.read_text()[-3000:]
            answer = httpx.get(f"{api}/targets", params={"state": "active"}, timeout=5)
            answer.raise_for_status()
            return list(answer.json()["data"]["activeTargets"])

        found = wait_for(
            f"Prometheus scraping all {len(scraped)} processes with health up",
            active_targets,
            lambda found: len(found) == len(scraped) and all(t["health"] == "up" for t in found),
        )
        assert {t["labels"]["instance"]: t["scrapeUrl"] for t in found} == {
            instance: f"http://{address}/metrics" for instance, address in scraped.items()
        }
        assert {t["labels"]["service"] for t in found} == {p["service"] for p in processes if p["metrics"]}

        def query(promql: str) -> dict[str, float]:
            """The instant vector's values, keyed by the instance label (or "" for an aggregate)."""
            answer = httpx.get(f"{api}/query", params={"query": promql}, timeout=5)
            answer.raise_for_status()
            return {
                r["metric"].get("instance", ""): float(r["value"][1]) for r in answer.json()["data"]["result"]
            }

        up_values = query('up{job="boutique"}')
        assert up_values == dict.fromkeys(scraped, 1.0)

        calls = wait_for(
            "client calls recorded for frontend and checkout",
            lambda: query("sum by (instance) (boutique_mesh_client_calls_total)"),
            lambda values: values.get("frontend-0", 0) > 0 and values.get("checkout-0", 0) > 0,
        )
        assert calls["frontend-0"] > 0

        wait_for(
            "frontend request rate above zero",
            lambda: query('sum(rate(http_server_requests_total{service="frontend"}[30s]))'),
            lambda values: values.get("", 0) > 0,
        )
        wait_for(
            "the order placed counted by checkout",
            lambda: query('sum(boutique_shop_orders_total{service="checkout"})'),
            lambda values: values.get("", 0) >= 1,
        )
    finally:
        if server is not None and server.poll() is None:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        up.stop()
