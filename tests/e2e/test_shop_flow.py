"""The shopper's path through real processes started the way `boutique up` starts them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import ROUND_HALF_EVEN, Decimal
from importlib import resources
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import Up, read_logs, start_up

pytestmark = pytest.mark.e2e

CARD = "4432-8015-6152-0454"
CVV = "8317"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    up = start_up(tmp_path_factory.mktemp("shop"))
    yield up
    up.stop()


def _form_value(page: str, name: str) -> str:
    """The value of the named input (or selected option) in a page's checkout form."""
    match = re.search(rf'<input[^>]*name="{name}"[^>]*value="([^"]*)"', page) or re.search(
        rf'<input[^>]*value="([^"]*)"[^>]*name="{name}"', page
    )
    if match:
        return match.group(1)
    select = re.search(rf'<select[^>]*name="{name}".*?</select>', page, re.S)
    assert select, f"checkout form has no field {name}"
    option = re.search(r'<option[^>]*value="([^"]*)"[^>]*selected', select.group(0)) or re.search(
        r'<option[^>]*selected[^>]*value="([^"]*)"', select.group(0)
    )
    assert option, f"no selected option in {name}"
    return option.group(1)


def _eur_shipping() -> str:
    """8.99 USD in EUR as the shop shows it, from the checked-in rate table."""
    rates = json.loads(resources.files("boutique.shop.currency").joinpath("rates.json").read_text())
    table = rates.get("rates", rates)
    eur = Decimal("8.99") / Decimal(str(table["USD"])) * Decimal(str(table["EUR"]))
    return f"€{eur.quantize(Decimal('0.01'), rounding=ROUND_HALF_EVEN)}"


def test_browse_add_change_currency_checkout(shop: Up) -> None:
    with httpx.Client(base_url=shop.url, timeout=15) as browser:
        home = browser.get("/")
        assert home.status_code == 200
        assert "shop_session-id" in browser.cookies
        assert home.headers["x-served-by"].startswith("frontend-")
        for product_id in ("OLJCESPC7Z", "1YMWWN1N4O"):
            assert browser.get(f"/product/{product_id}").status_code == 200
            added = browser.post("/cart", data={"product_id": product_id, "quantity": "1"})
            assert added.status_code == 302 and added.headers["location"].endswith("/cart")

        switched = browser.post(
            "/setCurrency", data={"currency_code": "EUR"}, headers={"referer": f"{shop.url}/"}
        )
        assert switched.status_code == 302
        cart = browser.get("/cart")
        assert cart.status_code == 200 and "€" in cart.text

        form = {
            name: _form_value(cart.text, name)
            for name in (
                "email",
                "street_address",
                "zip_code",
                "city",
                "state",
                "country",
                "credit_card_number",
                "credit_card_expiration_month",
                "credit_card_expiration_year",
            )
        }
        assert form["credit_card_number"].replace("-", "").startswith("4")
        form["credit_card_number"] = CARD
        form["credit_card_cvv"] = CVV
        order = browser.post("/cart/checkout", data=form)
        assert order.status_code == 200, order.text[-2000:]
        assert re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", order.text), (
            "no order id"
        )
        assert re.search(r"\b[A-Z]{2}-[A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4}\b", order.text), "no tracking id"
        assert _eur_shipping() in order.text

        after = browser.get("/cart")
        assert after.status_code == 200
        assert "OLJCESPC7Z" not in after.text and "1YMWWN1N4O" not in after.text

    mails = list((shop.data_dir / "outbox").glob("*.html"))
    assert mails, "the confirmation mail was not written to the outbox"


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    else:
        yield str(value)


def test_logs_hold_no_card_number_or_cvv(shop: Up) -> None:
    test_browse_add_change_currency_checkout(shop)
    logs = read_logs(shop.data_dir)
    assert set(logs) >= {f"{name}-0.log" for name in ("frontend", "checkout", "payment", "email")}
    digits = CARD.replace("-", "")
    for name, text in logs.items():
        assert CARD not in text and digits not in text, f"card number in {name}"
        for line in text.splitlines():
            if not line.startswith("{"):
                continue
            entry = json.loads(line)
            for value in _strings(entry):
                assert "cvv" not in value.lower() or CVV not in value, f"CVV in {name}: {line}"
                assert value != CVV, f"CVV in {name}: {line}"
            assert "someone@example.com" not in line, f"full email in {name}: {line}"


def test_every_process_writes_json_logs(shop: Up) -> None:
    for name, text in read_logs(shop.data_dir).items():
        lines = [line for line in text.splitlines() if line.strip()]
        assert lines, f"{name} is empty"
        assert "Traceback" not in text, f"{name} has a traceback"
        for line in lines:
            entry = json.loads(line)
            assert {"timestamp", "level", "service", "instance", "event"} <= entry.keys()


def test_data_dir_layout(shop: Up) -> None:
    state = shop.state()
    assert state["frontend_url"] == shop.url
    shop_services = {
        "productcatalog", "currency", "cart", "shipping", "payment", "email",
        "recommendation", "ad", "checkout", "frontend",
    }  # fmt: skip
    assert {p["service"] for p in state["processes"]} == shop_services | {"registry", "observatory"}
    assert all(p["state"] == "SERVING" for p in state["processes"])
    assert all(Path(p["log"]).exists() for p in state["processes"])

    observatory = state["observatory_url"]
    assert observatory in shop.text()  # the ready line says where the traces are
    assert httpx.get(f"{observatory}/_healthz", timeout=5).status_code == 200
    assert httpx.get(f"{observatory}/api/services", timeout=5).json()["errors"] is None
    assert (shop.data_dir / "observatory.duckdb").exists()

    registry = next(p["address"] for p in state["processes"] if p["service"] == "registry")
    listed = httpx.get(f"http://{registry}/v1/services", timeout=5).json()["services"]
    assert set(listed) == shop_services, "every service registers itself"
    for service, instances in listed.items():
        (instance,) = instances
        assert instance["id"] == f"{service}-0"
        assert {"pid", "started_at", "version"} <= instance["metadata"].keys()
        assert "metrics" in instance["ports"]
        process = next(p for p in state["processes"] if p["instance"] == instance["id"])
        assert process["metrics"] == f"127.0.0.1:{instance['ports']['metrics']}"
        metrics = httpx.get(f"http://{instance['address']}:{instance['ports']['metrics']}/metrics", timeout=5)
        assert metrics.status_code == 200 and "boutique_mesh" in metrics.text
