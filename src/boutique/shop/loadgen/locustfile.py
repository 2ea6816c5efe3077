"""A simulated shopper for Locust: Online Boutique's task mix against the frontend's routes.

Run by `boutique load` (see runner.py) in a child process. The wait between tasks comes from
LOADGEN_WAIT_MIN / LOADGEN_WAIT_MAX (seconds, default 1-10). Requests are named by route template,
so the stats table has one row per route however many products there are. Each shopper action is one
trace: a span for the action, a CLIENT span per request, and `traceparent` on every request, so the
frontend's spans continue the trace from the first hop (spans go out over OTLP/HTTP, which works under
Locust's gevent).

With a flag source configured (FLAGD_OFFLINE_FLAG_SOURCE_PATH, as `boutique up` sets it) the flags
`loadGeneratorTraffic` and `loadGeneratorVUs` are read about once a second and pause the shoppers or
change their number while the load runs (see control.py).

A request the shop sheds because it is overloaded (503 with Retry-After) is neither a success nor a
failure: it is counted under the request type SHED (its own rows in the live table, e.g. "SHED /"), and
the shopper waits at least the Retry-After before its next task, as a polite client does.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import random
import time
from collections.abc import Mapping, MutableMapping
from functools import cache
from importlib import resources
from typing import Any, cast

import gevent
from locust import HttpUser, events, task
from locust.env import Environment
from opentelemetry import propagate, trace

from boutique import __version__
from boutique.mesh.flags import flags, install_flags
from boutique.mesh.settings import MeshSettings, SettingsError
from boutique.mesh.tracing import setup_tracing
from boutique.shop.loadgen import json_log
from boutique.shop.loadgen.control import POLL_SECONDS, TRAFFIC, USERS, ShopperControl, steering
from boutique.shop.loadgen.shed import SHED, retry_after

CATALOG_PACKAGE = "boutique.shop.productcatalog"
CURRENCIES = ("EUR", "USD", "JPY", "CAD", "GBP", "TRY")
PRODUCT_ROUTE = "/product/[id]"
SHOPPER_EMAIL = "someone@example.com"
TEST_CARD_NUMBER = "4432-8015-6152-0454"
TEST_CARD_CVV = "672"
PARENT_PID_VARIABLE = "LOADGEN_PARENT_PID"

tracer = trace.get_tracer("boutique.shop.loadgen")
log = logging.getLogger("boutique.shop.loadgen")


def instance_id() -> str:
    """This load generator's instance id (BOUTIQUE_INSTANCE_ID, as `boutique up` sets it)."""
    return os.environ.get("BOUTIQUE_INSTANCE_ID") or f"loadgen-{os.getpid()}"


if (
    json_log.wanted()
):  # `boutique serve loadgen`: before Locust's first line, as Locust's own set-up is skipped
    json_log.install(instance_id())


def action(name: str) -> Any:
    """The span of one shopper action (a new trace), made current while its requests run."""
    return tracer.start_as_current_span(f"shopper {name}", attributes={"app.shopper.action": name})


@cache
def catalog_ids() -> tuple[str, ...]:
    """The product ids of the catalog shipped with the productcatalog package."""
    text = resources.files(CATALOG_PACKAGE).joinpath("products.json").read_text(encoding="utf-8")
    return tuple(item["id"] for item in json.loads(text)["products"])


def wait_range(environ: Mapping[str, str]) -> tuple[float, float]:
    """Seconds between tasks from LOADGEN_WAIT_MIN / LOADGEN_WAIT_MAX (default 1 and 10)."""
    low = float(environ.get("LOADGEN_WAIT_MIN") or 1.0)
    high = float(environ.get("LOADGEN_WAIT_MAX") or 10.0)
    if not 0 <= low <= high:
        raise ValueError(f"LOADGEN_WAIT_MIN/MAX must satisfy 0 <= min <= max, not {low:g}-{high:g}")
    return low, high


def checkout_form() -> dict[str, str]:
    """The checkout form a shopper submits: a sample address and the valid test Visa card."""
    return {
        "email": SHOPPER_EMAIL,
        "street_address": "221 Harbour Road",
        "zip_code": "94107",
        "city": "San Francisco",
        "state": "CA",
        "country": "United States",
        "credit_card_number": TEST_CARD_NUMBER,
        "credit_card_expiration_month": "1",
        "credit_card_expiration_year": str(datetime.date.today().year + 1),
        "credit_card_cvv": TEST_CARD_CVV,
    }


class Shopper(HttpUser):
    """One shopper: mostly browses, sometimes changes currency, fills the cart and checks out."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wait_min, self.wait_max = wait_range(os.environ)
        self.calm_at = 0.0  # time.monotonic() before which the shop asked (Retry-After) not to come back

    def wait_time(self) -> float:
        """A random pause between tasks, within the configured range, and no shorter than a Retry-After."""
        return max(random.uniform(self.wait_min, self.wait_max), self.calm_at - time.monotonic())

    def on_start(self) -> None:
        """Land on the home page first, which hands out the session cookie."""
        self.index()

    def _send(self, method: str, path: str, name: str | None = None, **kwargs: Any) -> None:
        """One request in a CLIENT span of its own, carrying the trace headers."""
        route = name or path
        with tracer.start_as_current_span(
            f"{method} {route}",
            kind=trace.SpanKind.CLIENT,
            attributes={"http.request.method": method, "url.path": path, "http.route": route},
        ) as span:
            headers: dict[str, str] = {}
            propagate.inject(headers)
            with self.client.request(
                method, path, name=name, headers=headers, catch_response=True, **kwargs
            ) as response:
                span.set_attribute("http.response.status_code", response.status_code)
                pause = retry_after(response.status_code, response.headers)
                if pause is not None:
                    span.set_status(trace.StatusCode.ERROR, "shed: the shop is overloaded")
                    span.set_attribute("app.request.shed", True)
                    self.calm_at = max(self.calm_at, time.monotonic() + pause)
                    # Counted under its own type, apart from successes and failures.
                    cast(MutableMapping[str, Any], response.request_meta)["request_type"] = SHED
                    response.success()
                elif response.status_code >= 400 or response.error:
                    span.set_status(trace.StatusCode.ERROR, f"HTTP {response.status_code}")
                    response.failure(f"HTTP {response.status_code}")
                else:
                    response.success()

    @task(1)
    def index(self) -> None:
        """The home page."""
        with action("home"):
            self._send("GET", "/")

    @task(2)
    def set_currency(self) -> None:
        """Pick a display currency."""
        with action("set currency"):
            self._send("POST", "/setCurrency", data={"currency_code": random.choice(CURRENCIES)})

    @task(10)
    def browse_product(self) -> None:
        """Look at one product."""
        with action("browse product"):
            self._view_product(random.choice(catalog_ids()))

    @task(2)
    def add_to_cart(self) -> None:
        """Look at a product, then put 1-10 of it in the cart."""
        with action("add to cart"):
            self._add_to_cart()

    @task(3)
    def view_cart(self) -> None:
        """The cart page."""
        with action("view cart"):
            self._send("GET", "/cart")

    @task(1)
    def checkout(self) -> None:
        """Add something to the cart, then place the order."""
        with action("checkout"):
            self._add_to_cart()
            self._send("POST", "/cart/checkout", data=checkout_form())

    def _add_to_cart(self) -> None:
        product_id = random.choice(catalog_ids())
        self._view_product(product_id)
        self._send("POST", "/cart", data={"product_id": product_id, "quantity": str(random.randint(1, 10))})

    def _view_product(self, product_id: str) -> None:
        self._send("GET", f"/product/{product_id}", name=PRODUCT_ROUTE)


@events.init.add_listener
def _start_tracing(environment: Environment, **_kwargs: Any) -> None:
    """Export the shoppers' spans when an OTLP endpoint is configured (as `boutique up` does).

    Without one the shoppers send no trace headers and each request starts its trace at the frontend:
    a load run against some other shop has nowhere to send spans. OTLP goes over HTTP unless the
    protocol is set, since Locust runs under gevent.
    """
    if not any(
        os.environ.get(v) for v in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        return
    os.environ.setdefault("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    instance = instance_id()
    setup_tracing("loadgen", instance, __version__)


@events.init.add_listener
def _stop_when_orphaned(environment: Environment, **_kwargs: Any) -> None:
    """Quit if the `boutique load` process that started us goes away, even if it was killed hard."""
    expected = os.environ.get(PARENT_PID_VARIABLE)
    if not expected or environment.runner is None:
        return
    runner = environment.runner

    def watch() -> None:
        while str(os.getppid()) == expected:
            gevent.sleep(1.0)
        runner.quit()

    gevent.spawn(watch)


@events.init.add_listener
def _follow_flags(environment: Environment, **_kwargs: Any) -> None:
    """Read the flag file (when one is configured) and, once the test starts, steer the shoppers by it."""
    runner = environment.runner
    options = environment.parsed_options
    if runner is None or options is None:
        return
    try:
        settings = MeshSettings.from_env().flags
    except SettingsError as exc:
        log.error("load generator: flags not read (%s); the shoppers run as started", exc)
        return
    if not settings.configured:
        return
    instance = instance_id()
    install_flags(settings, "loadgen", instance)
    rate = float(options.spawn_rate or 1.0)
    control = ShopperControl(int(options.num_users or 1), lambda users: runner.start(users, rate))

    def follow() -> None:
        while True:
            gevent.sleep(POLL_SECONDS)
            try:
                control.apply(steering(flags().number(TRAFFIC, 1.0), flags().number(USERS, 0.0)))
            except Exception:
                log.exception("load generator: could not change the number of shoppers")

    started: list[gevent.Greenlet] = []

    def on_test_start(**_ignored: Any) -> None:
        if not started:  # the test starts once: the runner keeps running while paused (0 shoppers)
            started.append(gevent.spawn(follow))

    environment.events.test_start.add_listener(on_test_start)
