"""The cart, payment, checkout, shipping and frontend flags against one real `boutique up`.

Each test switches one flag on, shops through the frontend the way a browser does (every request under
a trace id the test chose), checks what the shopper was shown, the shop's own books and what the
observatory recorded, then switches the flag off and checks the shop is back to normal.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.e2e.harness import Up, eventually
from tests.faults.orders import Books
from tests.faults.traffic import traceparent
from tests.flags.support import flag_file, mesh_status, observatory, reset_flags, spans_of, tag, traces

pytestmark = pytest.mark.e2e

ORDER_ID = re.compile(r'<code class="order-id">([^<]+)</code>')
ORDER_KEY = re.compile(r'name="order_key" value="([^"]+)"')
PRODUCT = "OLJCESPC7Z"
IMAGE = "/static/img/products/sunglasses.svg"


@pytest.fixture(scope="module")
def up(shop: Up) -> Iterator[Up]:
    """The flag modules' shared shop, with every flag as shipped before and after this module."""
    reset_flags(shop)
    yield shop
    reset_flags(shop)


@pytest.fixture(autouse=True)
def flags_back_as_shipped(up: Up) -> Iterator[None]:
    yield
    reset_flags(up)  # a failed test must not leave its flag on for the next


# ---- switching flags, and knowing every process concerned has taken the change ---------------------


def changes_seen(up: Up, instance: str, flag: str) -> int:
    """How many flag changes naming `flag` the instance has logged taking."""
    path = up.data_dir / "logs" / f"{instance}.log"
    return sum(
        1
        for line in path.read_text(errors="replace").splitlines()
        if "flags: changed" in line and flag in line
    )


def switch(up: Up, flag: str, variant: str | None, *instances: str) -> None:
    """Set the flag (None: every flag as shipped) and wait until each instance has taken the change."""
    before = {instance: changes_seen(up, instance, flag) for instance in instances}
    if variant is None:
        reset_flags(up)
    else:
        flag_file(up).set(flag, variant, by="test")
    eventually(
        lambda: all(changes_seen(up, i, flag) > n for i, n in before.items()),
        f"{', '.join(instances)} to take {flag}={variant or 'as shipped'}",
        timeout=20,
        every=0.1,
    )


# ---- a shopper ------------------------------------------------------------------------------------


class Shopper:
    """A browser with its own session; every request it makes starts a trace whose id it keeps."""

    def __init__(self, up: Up) -> None:
        self.client = httpx.Client(base_url=up.url, timeout=30, follow_redirects=False)
        self.last_trace = ""

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        header, self.last_trace, _ = traceparent()
        return self.client.request(method, path, headers={"traceparent": header}, **kwargs)

    def add(self, product: str = PRODUCT) -> None:
        answer = self.request("POST", "/cart", data={"product_id": product, "quantity": "1"})
        assert answer.status_code == 302, answer.text[-1500:]

    def cart(self) -> httpx.Response:
        return self.request("GET", "/cart")

    def checkout(self, **changes: str) -> tuple[str, httpx.Response]:
        """Submit the cart page's prefilled checkout form (with `changes`); its order key and the answer."""
        page = self.cart()
        assert page.status_code == 200, page.text[-1500:]
        form = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page.text))
        for name in ("credit_card_expiration_month", "credit_card_expiration_year"):
            chosen = re.search(
                rf'<select[^>]*name="{name}".*?<option value="([^"]+)"[^>]*selected', page.text, re.S
            )
            assert chosen, f"no {name} in the form"
            form[name] = chosen.group(1)
        form.update(changes)
        return form["order_key"], self.request("POST", "/cart/checkout", data=form)

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def shopper(up: Up) -> Iterator[Shopper]:
    browser = Shopper(up)
    yield browser
    browser.close()


def placed(answer: httpx.Response) -> str:
    """The order id the page shows ('' when the page is not an order confirmation)."""
    found = ORDER_ID.search(answer.text)
    return found.group(1) if answer.status_code == 200 and found else ""


def heading(answer: httpx.Response) -> str:
    """The page's title and the first paragraph after it, for messages."""
    found = re.search(r"<h1>(.*?)</h1>\s*(?:<p>(.*?)</p>)?", answer.text, re.S)
    return " / ".join(" ".join(part.split()) for part in found.groups() if part) if found else ""


# ---- what the observatory recorded ------------------------------------------------------------------


def trace_of(up: Up, trace_id: str) -> dict | None:
    answer = httpx.get(f"{observatory(up)}/api/traces/{trace_id}", timeout=10)
    if answer.status_code == 404:
        return None
    answer.raise_for_status()
    data = answer.json()["data"]
    return data[0] if data else None


def spans_in(up: Up, trace_id: str, service: str, operation: str, **tags: Any) -> list[dict]:
    """Spans of `service` in the trace whose operation name contains `operation` and whose tags match."""
    trace = trace_of(up, trace_id)
    if trace is None:
        return []
    return [
        span
        for span in spans_of(trace, service)
        if operation in span["operationName"] and all(tag(span, k) == v for k, v in tags.items())
    ]


def wait_for_span(up: Up, trace_id: str, service: str, operation: str, **tags: Any) -> dict:
    """The first matching span, once the observatory has it."""
    found = eventually(
        lambda: spans_in(up, trace_id, service, operation, **tags),
        f"a {service} span {operation!r} with {tags} in trace {trace_id}",
        timeout=30,
        every=0.3,
    )
    return found[0]


def failed(span: dict) -> bool:
    return tag(span, "error") is True or tag(span, "otel.status_code") == "ERROR"


def events(span: dict) -> list[str]:
    return [f["value"] for log in span.get("logs", []) for f in log["fields"] if f["key"] == "event"]


def ms(span: dict) -> float:
    return float(span["duration"]) / 1000


# ---- the tests --------------------------------------------------------------------------------------


def test_cart_failure_fails_empty_cart_and_the_paid_order_still_stands(up: Up, shopper: Shopper) -> None:
    shopper.add()
    switch(up, "cartFailure", "100%", "cart-0")
    key, answer = shopper.checkout()
    order_id = placed(answer)
    assert order_id, f"a paid, shipped order must be shown placed: {answer.status_code} {heading(answer)}"
    trace_id = shopper.last_trace
    assert PRODUCT in shopper.cart().text, "the cart was emptied although EmptyCart failed"

    empty = wait_for_span(up, trace_id, "cart", "EmptyCart", **{"feature_flag.key": "cartFailure"})
    assert failed(empty) and tag(empty, "rpc.grpc.status_code") == 14  # UNAVAILABLE
    step = wait_for_span(up, trace_id, "checkout", "checkout: empty cart")
    assert failed(step)
    order_span = wait_for_span(up, trace_id, "checkout", "PlaceOrder")
    assert tag(order_span, "app.cart.emptied") is False and "cart_not_emptied" in events(order_span)
    assert not failed(order_span), "the order was placed: its span must not say it failed"
    books = Books.read(up.data_dir)
    assert books.orders[key] == (order_id, "placed")
    assert books.charges[order_id] == "charged"
    assert sum(state == "charged" for state in books.charges.values()) == len(
        [k for k, (_, state) in books.orders.items() if state == "placed"]
    ), "a charge without an order, or an order charged twice"
    print(f"\ncartFailure: order {order_id} placed, cart kept its line, EmptyCart span {ms(empty):.1f} ms")

    switch(up, "cartFailure", None, "cart-0")
    key, answer = shopper.checkout()  # the line the failed empty left is ordered now, and emptied
    trace_id = shopper.last_trace
    assert placed(answer), heading(answer)
    assert PRODUCT not in shopper.cart().text
    empty = wait_for_span(up, trace_id, "cart", "EmptyCart")
    assert not failed(empty) and tag(empty, "feature_flag.key") is None


def cart_health(address: str) -> str:
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=2
        )
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def healthz(process: dict) -> int:
    """The HTTP status of the process's /healthz (on its status port)."""
    return httpx.get(f"http://{process['metrics']}/healthz", timeout=5).status_code


def cart_process(up: Up) -> dict:
    return next(p for p in up.state()["processes"] if p["instance"] == "cart-0")


def registry_status(up: Up, instance: str) -> str | None:
    """The instance's status as the observatory's Mesh view has it from the registry."""
    found = [p for p in mesh_status(up).get("processes", []) if p.get("id") == instance]
    return found[0].get("status") if found else None


def test_failed_readiness_probe_takes_the_cart_out_of_rotation_and_back(up: Up, shopper: Shopper) -> None:
    shopper.add()
    cart = cart_process(up)
    assert cart_health(cart["address"]) == "SERVING"
    switch(up, "failedReadinessProbe", "on", "cart-0")

    eventually(
        lambda: cart_health(cart["address"]) == "NOT_SERVING", "cart to report NOT_SERVING", timeout=10
    )
    eventually(lambda: healthz(cart) == 503, "the cart's /healthz to say 503", timeout=10)
    eventually(
        lambda: cart_process(up)["state"] == "NOT_SERVING", "`up` to see the cart NOT_SERVING", timeout=15
    )
    page = eventually(
        lambda: (answer := shopper.cart()).status_code == 503 and answer,
        "the frontend to stop routing to the cart",
        timeout=15,
    )
    assert "the cart service" in page.text, heading(page)
    call = wait_for_span(up, shopper.last_trace, "frontend", "CartService/GetCart")
    assert failed(call) and tag(call, "mesh.instance") is None  # no instance was there to be called
    assert eventually(
        lambda: registry_status(up, "cart-0") == "critical", "the Mesh view to show the cart critical"
    )
    change = eventually(
        lambda: [
            s
            for t in traces(up, "cart", {"feature_flag.key": "failedReadinessProbe"})
            for s in spans_of(t, "cart")
            if tag(s, "health.status") == "NOT_SERVING"
        ],
        "the cart's readiness change span",
        timeout=30,
    )
    print(f"\nfailedReadinessProbe: {heading(page)!r}; readiness spans {len(change)}")

    switch(up, "failedReadinessProbe", None, "cart-0")
    eventually(lambda: cart_health(cart["address"]) == "SERVING", "cart to report SERVING again", timeout=10)
    eventually(
        lambda: shopper.cart().status_code == 200, "the frontend to route to the cart again", timeout=15
    )
    assert PRODUCT in shopper.cart().text  # nothing was lost while it was out of rotation
    eventually(lambda: healthz(cart) == 200, "the cart's /healthz to say 200", timeout=10)
    eventually(lambda: registry_status(up, "cart-0") == "passing", "the Mesh view to show the cart passing")


def not_charged(up: Up, key: str) -> None:
    """The order under `key` was not placed and nothing stands charged for it."""
    books = Books.read(up.data_dir)
    order_id, step = books.orders[key]
    assert step in ("failed", "voided"), f"order {key} is {step}"
    assert books.charges.get(order_id) != "charged", f"order {key} failed, yet {order_id} stands charged"


def test_payment_failure_fails_the_charge_and_charges_nothing(up: Up, shopper: Shopper) -> None:
    shopper.add()
    switch(up, "paymentFailure", "100%", "payment-0")
    key, answer = shopper.checkout()
    assert answer.status_code == 503 and not placed(answer), heading(answer)
    assert "payment" in answer.text and "The payment could not be processed" in answer.text, heading(answer)
    charge = wait_for_span(
        up, shopper.last_trace, "payment", "Charge", **{"feature_flag.key": "paymentFailure"}
    )
    assert failed(charge) and tag(charge, "rpc.grpc.status_code") == 14
    not_charged(up, key)
    assert PRODUCT in shopper.cart().text  # the cart is unchanged: the shopper can try again
    print(f"\npaymentFailure: shown {heading(answer)!r}")

    switch(up, "paymentFailure", None, "payment-0")
    key, answer = shopper.checkout()
    order_id = placed(answer)
    assert order_id, heading(answer)
    assert Books.read(up.data_dir).charges[order_id] == "charged"


def breaker_of(up: Up, caller: str, dependency: str) -> str | None:
    for process in mesh_status(up).get("processes", []):
        if process.get("service") != caller:
            continue
        for entry in process.get("dependencies", []):
            if entry.get("name") == dependency and entry.get("breaker"):
                return str(entry["breaker"].get("state"))
    return None


def test_payment_unreachable_fails_orders_cleanly_and_opens_the_breaker(up: Up, shopper: Shopper) -> None:
    shopper.add()
    switch(up, "paymentUnreachable", "on", "checkout-0")
    keys: list[str] = []
    shown: set[str] = set()

    def breaker_open() -> bool:
        key, answer = shopper.checkout()
        keys.append(key)
        assert answer.status_code == 503 and not placed(answer), heading(answer)
        shown.add(heading(answer))
        return breaker_of(up, "checkout", "payment-unreachable") == "OPEN"

    eventually(breaker_open, "the breaker of the unreachable payment to open", timeout=60, every=0.1)
    step = wait_for_span(
        up, shopper.last_trace, "checkout", "checkout: charge", **{"feature_flag.key": "paymentUnreachable"}
    )
    assert failed(step) and tag(step, "app.payment.unreachable") is True
    first = spans_in(up, shopper.last_trace, "checkout", "PaymentService/Charge")
    assert all(failed(span) for span in first)
    for key in keys:
        not_charged(up, key)
    print(
        f"\npaymentUnreachable: {len(keys)} orders failed (none charged) until the Mesh view showed the "
        f"breaker open; shown {sorted(shown)}"
    )

    switch(up, "paymentUnreachable", None, "checkout-0")
    key, answer = shopper.checkout()
    order_id = placed(answer)
    assert order_id, f"the flag is off: the next order must go through ({heading(answer)})"
    assert Books.read(up.data_dir).charges[order_id] == "charged"


def test_international_quotes_slow_down_within_the_callers_deadline(up: Up, shopper: Shopper) -> None:
    shopper.add()
    switch(up, "intlShippingSlowdown", "5sec", "shipping-0")
    key, answer = shopper.checkout(country="Germany")
    assert answer.status_code == 503 and "shipping" in answer.text, heading(answer)
    quote = wait_for_span(
        up, shopper.last_trace, "shipping", "GetQuote", **{"feature_flag.key": "intlShippingSlowdown"}
    )
    assert tag(quote, "app.shipping.delay_ms") == 5000 and tag(quote, "app.shipping.international") is True
    assert failed(quote) and tag(quote, "rpc.grpc.status_code") == 4  # DEADLINE_EXCEEDED
    assert "delay cut short by the caller's deadline" in events(quote)
    caller = wait_for_span(up, shopper.last_trace, "checkout", "ShippingService/GetQuote")
    not_charged(up, key)

    key, answer = shopper.checkout(country="united states")  # domestic: not slowed down
    assert placed(answer), heading(answer)
    domestic = wait_for_span(up, shopper.last_trace, "shipping", "GetQuote")
    assert tag(domestic, "feature_flag.key") is None and not failed(domestic)
    print(
        f"\nintlShippingSlowdown 5 s: quote stopped after {ms(quote):.0f} ms (caller gave up after "
        f"{ms(caller):.0f} ms); domestic quote {ms(domestic):.1f} ms"
    )
    switch(up, "intlShippingSlowdown", None, "shipping-0")
    shopper.add()
    key, answer = shopper.checkout(country="Germany")
    assert placed(answer), heading(answer)


def test_shipping_worker_pool_makes_concurrent_quotes_wait(up: Up) -> None:
    shoppers = [Shopper(up) for _ in range(6)]
    try:
        for browser in shoppers:
            browser.add()
        switch(up, "shippingWorkerPool", "1", "shipping-0")

        def burst() -> list[dict]:
            threads = [threading.Thread(target=b.cart) for b in shoppers]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            quotes = [wait_for_span(up, b.last_trace, "shipping", "GetQuote") for b in shoppers]
            assert all(tag(q, "app.pool.size") == 1 for q in quotes), "a quote without the pool"
            return [q for q in quotes if tag(q, "app.pool.queued") is True]

        queued = eventually(burst, "a quote that waited for the one worker", timeout=60, every=0.1)
        assert all(tag(q, "app.pool.wait_ms") > 0 for q in queued)
        print(
            f"\nshippingWorkerPool=1: {len(queued)} of {len(shoppers)} concurrent quotes queued, longest wait "
            f"{max(tag(q, 'app.pool.wait_ms') for q in queued):.0f} ms"
        )
        switch(up, "shippingWorkerPool", None, "shipping-0")
        assert shoppers[0].cart().status_code == 200
        quote = wait_for_span(up, shoppers[0].last_trace, "shipping", "GetQuote")
        assert tag(quote, "app.pool.size") is None and tag(quote, "feature_flag.key") is None
    finally:
        for browser in shoppers:
            browser.close()


def test_image_slow_load_delays_product_images_without_blocking_other_requests(
    up: Up, shopper: Shopper
) -> None:
    switch(up, "imageSlowLoad", "5sec", "frontend-0")
    image = Shopper(up)
    answers: list[httpx.Response] = []
    fetch = threading.Thread(target=lambda: answers.append(image.request("GET", IMAGE)))
    fetch.start()
    try:
        eventually(lambda: image.last_trace, "the image request to start", timeout=5, every=0.01)
        assert shopper.request("GET", "/").status_code == 200
        assert shopper.request("GET", "/static/css/shop.css").status_code == 200
        assert fetch.is_alive(), "the page and the stylesheet waited for the slow image"
        fetch.join(30)
    finally:
        image.close()
    assert answers and answers[0].status_code == 200 and "<svg" in answers[0].text
    span = wait_for_span(up, image.last_trace, "frontend", "GET /static/img/products")
    assert tag(span, "feature_flag.key") == "imageSlowLoad" and tag(span, "app.image.delay_ms") == 5000
    print(f"\nimageSlowLoad 5 s: the image took {ms(span):.0f} ms; the home page answered meanwhile")

    switch(up, "imageSlowLoad", None, "frontend-0")
    assert shopper.request("GET", IMAGE).status_code == 200
    span = wait_for_span(up, shopper.last_trace, "frontend", "GET /static/img/products")
    assert tag(span, "feature_flag.key") is None and tag(span, "app.image.delay_ms") is None
