"""The Logs page and the trace page's logs in real headless Chromium, over a real observatory process fed
by OTLP/HTTP (`POST /v1/traces`, `POST /v1/logs`): filters, severity colours, a record's details, a line
opening its trace at its span, the span's logs in place, and the live tail. Every test fails on a browser
console error and saves a screenshot under test-output/ui/."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.e2e.harness import eventually
from tests.observatory.process import ObservatoryProcess, start_observatory
from tests.ui.conftest import chromium, console_errors, screenshot

pytestmark = pytest.mark.e2e

TRACE = uuid.uuid4().hex
ROOT_SPAN = "a1" * 8
CART_SPAN = "b2" * 8
OTHER_TRACE = uuid.uuid4().hex
WAIT = 30

# ---- OTLP/JSON payloads --------------------------------------------------------------------------


def attributes(values: dict[str, Any]) -> list[dict[str, Any]]:
    """OTLP/JSON key-values (strings and integers)."""
    out = []
    for key, value in values.items():
        typed = {"intValue": str(value)} if isinstance(value, int) else {"stringValue": str(value)}
        out.append({"key": key, "value": typed})
    return out


def resource(service: str) -> dict[str, Any]:
    """A resource naming a service and its instance."""
    return {"attributes": attributes({"service.name": service, "service.instance.id": f"{service}-1"})}


def span_payload(trace: str, start_ns: int) -> dict[str, Any]:
    """A two-span trace: frontend `GET /cart` calling cart `GetCart`."""

    def span(service: str, span_id: str, parent: str, name: str, offset_ms: int, ms: int) -> dict[str, Any]:
        body = {
            "traceId": trace,
            "spanId": span_id,
            "parentSpanId": parent,
            "name": name,
            "kind": 2,
            "startTimeUnixNano": str(start_ns + offset_ms * 1_000_000),
            "endTimeUnixNano": str(start_ns + (offset_ms + ms) * 1_000_000),
        }
        return {"resource": resource(service), "scopeSpans": [{"scope": {"name": "test"}, "spans": [body]}]}

    return {
        "resourceSpans": [
            span("frontend", ROOT_SPAN, "", "GET /cart", 0, 40),
            span("cart", CART_SPAN, ROOT_SPAN, "GetCart", 5, 30),
        ]
    }


def log_payload(*records: tuple[str, int, str, str, dict[str, Any], str, str, int]) -> dict[str, Any]:
    """OTLP/JSON logs: (service, severity number, severity text, body, attributes, trace, span, time ns)."""
    by_service: dict[str, list[dict[str, Any]]] = {}
    for service, number, text, body, attrs, trace, span, at_ns in records:
        record: dict[str, Any] = {
            "timeUnixNano": str(at_ns),
            "observedTimeUnixNano": str(at_ns + 1000),
            "severityNumber": number,
            "severityText": text,
            "body": {"stringValue": body},
            "attributes": attributes(attrs),
        }
        if trace:
            record.update(traceId=trace, spanId=span)
        by_service.setdefault(service, []).append(record)
    return {
        "resourceLogs": [
            {
                "resource": resource(service),
                "scopeLogs": [{"scope": {"name": "shop.logs"}, "logRecords": found}],
            }
            for service, found in by_service.items()
        ]
    }


def post(observatory: ObservatoryProcess, path: str, payload: dict[str, Any]) -> None:
    """Send an OTLP/JSON export and check it was taken whole."""
    url = f"http://127.0.0.1:{observatory.ports['otlp_http']}{path}"
    answer = httpx.post(url, json=payload, timeout=10)
    assert answer.status_code == 200, answer.text
    assert not answer.json().get("partialSuccess"), answer.text


# ---- fixtures ------------------------------------------------------------------------------------

RECORDS = [
    ("frontend", 13, "WARN", "slow request GET /cart", {"http.route": "/cart"}, TRACE, ROOT_SPAN, 1),
    ("cart", 9, "INFO", "cart read for user 42", {"user.id": 42}, TRACE, CART_SPAN, 10),
    ("cart", 17, "ERROR", "redis timeout while reading the cart", {"db.system": "redis"}, TRACE, CART_SPAN, 20),
    ("frontend", 5, "DEBUG", "rendering template cart.html", {}, "", "", 45),
    ("checkout", 9, "INFO", "order placed", {"order.id": "o-7"}, OTHER_TRACE, "c3" * 8, 60),
]  # fmt: skip


@pytest.fixture(scope="module")
def observatory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObservatoryProcess]:
    """An observatory holding the trace and the five records."""
    running = start_observatory(tmp_path_factory.mktemp("ui-logs"))
    start_ns = time.time_ns() - 20_000_000_000  # the trace began 20 s before the tests (not at import)
    try:
        post(running, "/v1/traces", span_payload(TRACE, start_ns))
        records = [(*r[:7], start_ns + r[7] * 1_000_000) for r in RECORDS]
        post(running, "/v1/logs", log_payload(*records))
        yield running
    finally:
        running.stop()


browser = pytest.fixture(chromium, scope="module", name="browser")  # one for this module's tests


# ---- helpers -------------------------------------------------------------------------------------


def open_logs(driver: Any, url: str) -> list[Any]:
    """Open the Logs page and wait for its records; the record elements, top first."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, WAIT).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#logs[data-ready]"))
    return list(driver.find_elements(By.CSS_SELECTOR, "#logs tbody.record"))


def bodies(records: list[Any]) -> list[str]:
    """The body shown on each record's line."""
    from selenium.webdriver.common.by import By

    return [r.find_element(By.CSS_SELECTOR, "td.l-body").text for r in records]


def submit(driver: Any, **fields: str) -> list[Any]:
    """Set the form's fields (select by value, text typed) and submit it; the records found."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    form = driver.find_element(By.ID, "logs-form")
    for name, value in fields.items():
        element = form.find_element(By.NAME, name)
        if element.tag_name == "select":
            Select(element).select_by_value(value)
        else:
            element.clear()
            element.send_keys(value)
    old = driver.find_element(By.ID, "logs")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(driver, WAIT).until(lambda d: old not in d.find_elements(By.ID, "logs"))
    WebDriverWait(driver, WAIT).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#logs[data-ready]"))
    return list(driver.find_elements(By.CSS_SELECTOR, "#logs tbody.record"))


# ---- tests ---------------------------------------------------------------------------------------


def test_filters_severity_colours_and_details(browser: Any, observatory: ObservatoryProcess) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    records = open_logs(browser, f"{observatory.query_url}/logs")
    newest_first = [r[3] for r in sorted(RECORDS, key=lambda r: -r[7])]
    assert bodies(records) == newest_first
    services = [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#l-service option")]
    assert services == ["", "cart", "checkout", "frontend"]

    # Service, then a minimum severity, then text: each narrows what the page shows, as the URL says.
    records = submit(browser, service="cart")
    assert bodies(records) == ["redis timeout while reading the cart", "cart read for user 42"]
    assert parse_qs(urlsplit(browser.current_url).query)["service"] == ["cart"]
    records = submit(browser, minSeverity="WARN")
    assert bodies(records) == ["redis timeout while reading the cart"]
    records = submit(browser, service="", minSeverity="WARN")
    assert bodies(records) == ["redis timeout while reading the cart", "slow request GET /cart"]
    records = submit(browser, minSeverity="", q="TEMPLATE")  # any case
    assert bodies(records) == ["rendering template cart.html"]
    records = submit(browser, q="", tags="user.id=42")
    assert bodies(records) == ["cart read for user 42"]
    records = submit(browser, tags="", lookback="5m", service="checkout")
    assert bodies(records) == ["order placed"]

    # Each severity has its colour.
    records = submit(browser, service="", lookback="1h")
    colours = {
        r.find_element(By.CSS_SELECTOR, ".sev").text: r.find_element(
            By.CSS_SELECTOR, ".sev"
        ).value_of_css_property("background-color")
        for r in records
    }
    assert set(colours) == {"WARN", "INFO", "ERROR", "DEBUG"}
    assert len(set(colours.values())) == 4, colours
    assert colours["ERROR"] == "rgba(198, 40, 40, 1)"

    # A record opens to its attributes and resource.
    cart_read = next(r for r in records if "user 42" in r.text)
    cart_read.find_element(By.CSS_SELECTOR, "button.expand").click()
    detail = cart_read.find_element(By.CSS_SELECTOR, "tr.log-detail")
    WebDriverWait(browser, WAIT).until(lambda d: detail.is_displayed())
    assert cart_read.find_element(By.CSS_SELECTOR, "button.expand").get_attribute("aria-expanded") == "true"
    cells = [c.text for c in detail.find_elements(By.CSS_SELECTOR, "table.kv td")]
    assert cells[:2] == ["user.id", "42"]
    assert "service.instance.id" in cells and "cart-1" in cells and "service.name" in cells
    assert TRACE in detail.text and CART_SPAN in detail.text
    screenshot(browser, "logs")
    assert console_errors(browser) == []


def test_bad_filter_is_explained(browser: Any, observatory: ObservatoryProcess) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{observatory.query_url}/logs?tags=justakey")
    assert "is not key=value" in browser.find_element(By.ID, "logs-error").text
    # A filter the page passes on and the API refuses: its reason is shown.
    browser.get(f"{observatory.query_url}/logs?minSeverity=LOUD")
    error = WebDriverWait(browser, WAIT).until(lambda d: d.find_element(By.ID, "logs-api-error"))
    WebDriverWait(browser, WAIT).until(lambda d: error.is_displayed())
    assert "LOUD" in error.text
    console_errors(browser)  # the refused request (400) is logged by the browser; nothing else may be
    browser.get(f"{observatory.query_url}/logs")
    assert console_errors(browser) == []


def test_a_line_opens_its_trace_at_its_span(browser: Any, observatory: ObservatoryProcess) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    records = open_logs(browser, f"{observatory.query_url}/logs?traceID={TRACE}")
    assert sorted(bodies(records)) == sorted(r[3] for r in RECORDS if r[5] == TRACE)
    untraced = open_logs(browser, f"{observatory.query_url}/logs?q=template")
    assert not untraced[0].find_elements(By.CSS_SELECTOR, "a.trace-link")  # no trace, no link

    records = open_logs(browser, f"{observatory.query_url}/logs?q=redis")
    link = records[0].find_element(By.CSS_SELECTOR, "a.trace-link")
    assert link.get_dom_attribute("href") == f"/trace/{TRACE}?span={CART_SPAN}"
    link.click()
    WebDriverWait(browser, WAIT).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#waterfall[data-ready]"))
    detail = WebDriverWait(browser, WAIT).until(lambda d: d.find_element(By.CSS_SELECTOR, "#span-detail"))
    assert detail.get_attribute("data-span-id") == CART_SPAN and detail.is_displayed()
    WebDriverWait(browser, WAIT).until(lambda d: "redis timeout" in detail.text)
    assert console_errors(browser) == []


def test_trace_page_shows_each_spans_logs(browser: Any, observatory: ObservatoryProcess) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{observatory.query_url}/trace/{TRACE}")
    waterfall = WebDriverWait(browser, WAIT).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#waterfall[data-ready][data-logs]")
    )
    assert waterfall.get_attribute("data-logs") == "3"
    assert browser.find_element(By.ID, "trace-log-count").text == "3"

    browser.find_element(By.CSS_SELECTOR, f'.wf-row[data-span-id="{CART_SPAN}"]').click()
    section = WebDriverWait(browser, WAIT).until(lambda d: d.find_element(By.ID, "span-logs"))
    assert section.find_element(By.TAG_NAME, "h3").text == "Logs (2)"
    items = section.find_elements(By.CSS_SELECTOR, "li")
    shown = [
        (i.find_element(By.CSS_SELECTOR, ".sev").text, i.find_element(By.CSS_SELECTOR, ".body").text)
        for i in items
    ]
    assert shown == [("INFO", "cart read for user 42"), ("ERROR", "redis timeout while reading the cart")]
    # Offsets from the span's start: the span began 5 ms into the trace; the records at 10 and 20 ms.
    assert [i.find_element(By.CSS_SELECTOR, ".at").text for i in items] == ["+5.00ms", "+15.0ms"]

    browser.find_element(By.CSS_SELECTOR, f'.wf-row[data-span-id="{ROOT_SPAN}"]').click()
    WebDriverWait(browser, WAIT).until(lambda d: "slow request" in d.find_element(By.ID, "span-logs").text)
    screenshot(browser, "trace-logs")

    browser.find_element(By.ID, "trace-logs-link").click()
    WebDriverWait(browser, WAIT).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#logs[data-ready]"))
    assert urlsplit(browser.current_url).path == "/logs"
    assert parse_qs(urlsplit(browser.current_url).query) == {"traceID": [TRACE]}
    assert len(browser.find_elements(By.CSS_SELECTOR, "#logs tbody.record")) == 3
    assert console_errors(browser) == []


def test_live_tail_shows_new_records_at_the_top(browser: Any, observatory: ObservatoryProcess) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    records = open_logs(browser, f"{observatory.query_url}/logs?service=cart")
    assert len(records) == 2
    browser.find_element(By.ID, "live-tail").click()
    WebDriverWait(browser, WAIT).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#logs[data-tailing]"))
    assert parse_qs(urlsplit(browser.current_url).query)["tail"] == ["1"]  # a reload keeps tailing

    marker = uuid.uuid4().hex
    now = time.time_ns()
    post(observatory, "/v1/logs", log_payload(
        ("frontend", 17, "ERROR", f"elsewhere {marker}", {}, "", "", now),
        ("cart", 13, "WARN", f"first new {marker}", {}, "", "", now + 1000),
    ))  # fmt: skip
    post(
        observatory,
        "/v1/logs",
        log_payload(("cart", 9, "INFO", f"second new {marker}", {}, "", "", now + 2000)),
    )

    def top_two(driver: Any) -> list[str] | None:
        """The two newest bodies, once both new records are shown."""
        shown = bodies(list(driver.find_elements(By.CSS_SELECTOR, "#logs tbody.record")))
        return shown[:2] if sum(marker in text for text in shown) >= 2 else None

    top = eventually(lambda: top_two(browser), "the new records on the page", timeout=WAIT)
    assert top == [f"second new {marker}", f"first new {marker}"]
    shown = bodies(list(browser.find_elements(By.CSS_SELECTOR, "#logs tbody.record")))
    assert not any("elsewhere" in text for text in shown)  # the tail keeps the page's filters
    assert len(shown) == 4
    assert "2 from the live tail" in browser.find_element(By.ID, "logs-heading").text
    screenshot(browser, "logs-tail")

    browser.find_element(By.ID, "live-tail").click()
    WebDriverWait(browser, WAIT).until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#logs[data-tailing]"))
    assert console_errors(browser) == []
