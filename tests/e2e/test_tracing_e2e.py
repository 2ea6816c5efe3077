"""Every shop process traced into the observatory `boutique up` starts: one trace per shopper action.

One `up` with simulated shoppers checking out; on top, a scripted shopper whose requests carry W3C and
B3 headers. The traces, the dependency graph, the logs and every process's metrics are then read back
through the same interfaces a person uses.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from boutique.shop.services import SERVICES
from tests.e2e.harness import Up, checkout_form, eventually, log_events, observatory_api, read_logs, start_up
from tests.faults.orders import CHECKOUT_SERVICES

pytestmark = pytest.mark.e2e

CARD = "5555-5555-5555-4444"  # a valid Mastercard test number, not the load generator's
CVV = "9183"
TEST_CARD_NUMBER, TEST_CARD_CVV = "4432-8015-6152-0454", "672"  # the load generator's (locustfile.py)


def ids() -> tuple[str, str]:
    """A fresh trace id and parent span id, as a caller upstream of the shop would send."""
    return secrets.token_hex(16), secrets.token_hex(8)


class Shopper:
    """A scripted shopper with its own session, and the trace ids its requests carried."""

    def __init__(self, up: Up) -> None:
        self.browser = httpx.Client(base_url=up.url, timeout=20)
        self.checkout_trace, self.checkout_parent = ids()
        self.b3_trace, self.b3_parent = ids()
        self.b3multi_trace, self.b3multi_parent = ids()
        self.error_trace, _ = ids()

    def shop(self) -> None:
        """Every page and action once, in EUR so conversions happen; the checkout under a traceparent."""
        get, post = self.browser.get, self.browser.post
        assert get("/").status_code == 200
        assert post("/setCurrency", data={"currency_code": "EUR"}, follow_redirects=True).status_code == 200
        assert get("/product/OLJCESPC7Z").status_code == 200
        added = post("/cart", data={"product_id": "OLJCESPC7Z", "quantity": "2"}, follow_redirects=True)
        assert added.status_code == 200
        form = checkout_form("alex.reader@example.com", "221 Harbour Road", CARD, CVV)
        headers = {"traceparent": f"00-{self.checkout_trace}-{self.checkout_parent}-01"}
        placed = post("/cart/checkout", data=form, headers=headers)
        assert placed.status_code == 200, placed.text[-500:]
        b3 = {"b3": f"{self.b3_trace}-{self.b3_parent}-1"}
        assert get("/product/66VCHSJNUP", headers=b3).status_code == 200
        b3multi = {
            "X-B3-TraceId": self.b3multi_trace,
            "X-B3-SpanId": self.b3multi_parent,
            "X-B3-Sampled": "1",
        }
        assert get("/cart", headers=b3multi).status_code == 200


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Up, Shopper]]:
    """The whole shop with three fast simulated shoppers, and one scripted shopper who has shopped."""
    up = start_up(
        tmp_path_factory.mktemp("traced"),
        "--load",
        "--users",
        "3",
        "--spawn-rate",
        "3",
        env={"LOADGEN_WAIT_MIN": "0.1", "LOADGEN_WAIT_MAX": "0.5"},
    )
    try:
        shopper = Shopper(up)
        shopper.shop()
        yield up, shopper
    finally:
        up.stop()


def trace_of(up: Up, trace_id: str, services: set[str]) -> dict[str, Any]:
    """The trace once spans of all `services` have arrived, and every span's parent but one's with them.

    A process exports a trace's spans in whichever batches they ended in, so the first spans of a
    service to arrive are not necessarily all of them.
    """

    def probe() -> dict[str, Any] | None:
        try:
            found = observatory_api(up, f"/api/traces/{trace_id}")["data"][0]
        except httpx.HTTPStatusError:
            return None
        present = {process["serviceName"] for process in found["processes"].values()}
        ids = {span["spanID"] for span in found["spans"]}
        orphans = [s for s in found["spans"] if s["references"] and s["references"][0]["spanID"] not in ids]
        return found if services <= present and len(orphans) <= 1 else None

    return eventually(probe, f"trace {trace_id} with {sorted(services)}")


def service_of(trace: dict[str, Any], span: dict[str, Any]) -> str:
    """The service that reported a span."""
    return str(trace["processes"][span["processID"]]["serviceName"])


def tags(span: dict[str, Any]) -> dict[str, Any]:
    """A span's tags as a dict."""
    return {tag["key"]: tag["value"] for tag in span["tags"]}


def test_one_checkout_is_one_trace_through_every_service_it_touched(shop: tuple[Up, Shopper]) -> None:
    up, shopper = shop
    trace = trace_of(up, shopper.checkout_trace, CHECKOUT_SERVICES)
    spans = {span["spanID"]: span for span in trace["spans"]}
    parent = {sid: (span["references"] or [{}])[0].get("spanID") for sid, span in spans.items()}
    roots = [sid for sid, pid in parent.items() if pid not in spans]
    assert len(roots) == 1, "exactly one span hangs off the caller's span"
    root = spans[roots[0]]
    assert parent[roots[0]] == shopper.checkout_parent
    assert service_of(trace, root) == "frontend" and root["operationName"] == "POST /cart/checkout"
    crossings = 0
    for sid, span in spans.items():
        if sid == roots[0]:
            continue
        upstream = spans[parent[sid]]
        if service_of(trace, upstream) != service_of(trace, span):
            # Every hop between processes is a gRPC client span calling the same RPC's server span.
            crossings += 1
            assert tags(span)["span.kind"] == "server"
            assert tags(upstream)["span.kind"] == "client"
            assert upstream["operationName"] == span["operationName"]
            assert tags(upstream)["rpc.method"] == tags(span)["rpc.method"]
    assert crossings >= 9  # frontend→checkout, then checkout to six services, conversions, …
    names = {span["operationName"] for span in spans.values() if service_of(trace, span) == "checkout"}
    assert {"checkout: charge", "checkout: ship", "checkout: confirm", "checkout: price items"} <= names
    if any(p["service"] == "redis" for p in up.state()["processes"]):  # carts in Redis: its commands too
        commands = [
            s for s in spans.values() if "redis" in (tags(s).get("db.system"), tags(s).get("db.system.name"))
        ]
        assert commands and {service_of(trace, s) for s in commands} == {"cart"}
    conversions = [s for s in spans.values() if s["operationName"] == "currency: convert"]
    assert conversions and all(service_of(trace, s) == "currency" for s in conversions)


def test_b3_single_and_multi_headers_continue_into_the_backends(shop: tuple[Up, Shopper]) -> None:
    up, shopper = shop
    for trace_id, parent_id, backend in (
        (shopper.b3_trace, shopper.b3_parent, "productcatalog"),
        (shopper.b3multi_trace, shopper.b3multi_parent, "cart"),
    ):
        trace = trace_of(up, trace_id, {"frontend", backend})
        frontend_roots = [
            span
            for span in trace["spans"]
            if service_of(trace, span) == "frontend" and tags(span)["span.kind"] == "server"
        ]
        assert [root["references"][0]["spanID"] for root in frontend_roots] == [parent_id]


def test_the_dependency_graph_is_exactly_the_shops_call_edges(shop: tuple[Up, Shopper]) -> None:
    up, _ = shop
    expected = {(spec.name, child) for spec in SERVICES.values() for child in spec.depends_on}

    def edges() -> set[tuple[str, str]] | None:
        now_ms = int(time.time() * 1000)
        data = observatory_api(up, "/api/dependencies", endTs=now_ms, lookback=3_600_000)["data"]
        found = {(edge["parent"], edge["child"]) for edge in data}
        return found if found >= expected else None

    found = eventually(edges, f"every edge of {sorted(expected)}")
    assert found == expected


def test_every_service_reports_under_its_own_name(shop: tuple[Up, Shopper]) -> None:
    up, _ = shop

    def services() -> set[str] | None:
        names = set(observatory_api(up, "/api/services")["data"])
        return names if names >= set(SERVICES) else None

    assert eventually(services, "every service") == set(SERVICES)


def test_each_simulated_shopper_action_is_one_trace_from_the_first_hop(shop: tuple[Up, Shopper]) -> None:
    up, _ = shop

    def checkouts() -> list[dict[str, Any]] | None:
        data = observatory_api(up, "/api/traces", service="loadgen", operation="shopper checkout", limit=5)[
            "data"
        ]
        complete = [t for t in data if {"loadgen", "frontend", "checkout", "payment"} <= _services(t)]
        return complete or None

    trace = eventually(checkouts, "a simulated checkout traced from the load generator")[0]
    spans = {span["spanID"]: span for span in trace["spans"]}
    roots = [span for span in spans.values() if not span["references"]]
    assert [(service_of(trace, r), r["operationName"]) for r in roots] == [("loadgen", "shopper checkout")]
    for span in spans.values():
        if service_of(trace, span) == "frontend" and tags(span)["span.kind"] == "server":
            upstream = spans[span["references"][0]["spanID"]]
            assert service_of(trace, upstream) == "loadgen"
            assert tags(upstream)["span.kind"] == "client"


def _services(trace: dict[str, Any]) -> set[str]:
    return {process["serviceName"] for process in trace["processes"].values()}


def test_the_checkouts_log_lines_carry_its_trace_id(shop: tuple[Up, Shopper]) -> None:
    up, shopper = shop
    trace_of(up, shopper.checkout_trace, CHECKOUT_SERVICES)  # by now every process has logged it
    placed = [
        e
        for e in log_events(up.data_dir, "checkout-0", "order placed")
        if e.get("trace_id") == shopper.checkout_trace
    ]
    assert len(placed) == 1 and re.fullmatch(r"[0-9a-f]{16}", placed[0]["span_id"])
    email_lines = (up.data_dir / "logs" / "email-0.log").read_text().splitlines()
    assert any(
        json.loads(line).get("trace_id") == shopper.checkout_trace
        for line in email_lines
        if line.startswith("{")
    )


def test_an_error_page_quotes_the_trace_id_and_links_to_it(shop: tuple[Up, Shopper]) -> None:
    up, shopper = shop
    headers = {"traceparent": f"00-{shopper.error_trace}-{secrets.token_hex(8)}-01"}
    page = shopper.browser.get("/product/NO-SUCH-PRODUCT", headers=headers)
    assert page.status_code == 404
    assert shopper.error_trace in page.text
    assert f'href="{up.state()["observatory_url"]}/trace/{shopper.error_trace}"' in page.text
    trace_of(up, shopper.error_trace, {"frontend", "productcatalog"})


def _card_like(text: str) -> list[str]:
    """Runs of 13-19 digits (spaces and dashes allowed between) that pass the Luhn check."""
    found = []
    for match in re.finditer(r"(?:\d[ -]?){13,19}", text):
        digits = re.sub(r"\D", "", match.group(0))
        total = sum(
            int(d) if i % 2 == 0 else sum(divmod(int(d) * 2, 10)) for i, d in enumerate(reversed(digits))
        )
        if 13 <= len(digits) <= 19 and total % 10 == 0:
            found.append(digits)
    return found


def test_no_card_number_cvv_or_email_in_any_span_log_or_metric(shop: tuple[Up, Shopper]) -> None:
    up, shopper = shop
    trace_of(up, shopper.checkout_trace, CHECKOUT_SERVICES)
    metrics = [p["metrics"] for p in up.state()["processes"] if p.get("metrics")]

    def orders_placed() -> float | None:
        checkout = next(p for p in up.state()["processes"] if p["instance"] == "checkout-0")
        text = httpx.get(f"http://{checkout['metrics']}/metrics", timeout=10).text
        total = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("boutique_shop_orders_total")
        )
        return total if total >= 4 else None

    eventually(orders_placed, "a few simulated checkouts", timeout=90)
    time.sleep(6)  # let the last batches of spans arrive
    texts = {}
    for service in SERVICES:
        texts[f"spans of {service}"] = json.dumps(
            observatory_api(up, "/api/traces", service=service, limit=500, lookback="1h")
        )
    texts.update(read_logs(up.data_dir))
    for address in metrics:
        texts[f"metrics on {address}"] = httpx.get(f"http://{address}/metrics", timeout=10).text
    cards = {re.sub(r"\D", "", number) for number in (CARD, TEST_CARD_NUMBER)}
    for where, text in texts.items():
        assert not cards & set(_card_like(text)), f"a card number in {where}"
        for email in ("alex.reader@example.com", "someone@example.com"):
            assert email not in text, f"a full email address in {where}"
        for cvv in (CVV, TEST_CARD_CVV):
            assert not re.search(rf'"{cvv}"|cvv[^,\n]*{cvv}', text, re.I), f"the CVV in {where}"
