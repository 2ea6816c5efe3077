"""The trace page in a real browser: a checkout trace of the running shop, and a 10,000-span trace."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.harness import Up, eventually
from tests.observatory.synthetic import synthetic_trace
from tests.ui.conftest import console_errors, screenshot

pytestmark = pytest.mark.e2e

ROW = 26  # px, the waterfall's row height


def open_trace(driver: Any, observatory: str, trace_id: str) -> None:
    """Open a trace's page and wait until its script has drawn the first rows."""
    driver.get(f"{observatory}/trace/{trace_id}")
    WebDriverWait(driver, 60).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#waterfall[data-ready] .wf-row")
    )


def visible_rows(driver: Any) -> int:
    """How many rows the waterfall shows (collapsed spans hide their descendants)."""
    return int(driver.find_element(By.ID, "waterfall").get_attribute("data-visible-rows"))


def page_data(driver: Any) -> dict[str, Any]:
    """The trace data embedded in the page."""
    return dict(json.loads(driver.find_element(By.ID, "trace-data").get_attribute("textContent")))


def row(driver: Any, span_id: str) -> list[WebElement]:
    """The span's row element, when it is in the DOM."""
    return list(driver.find_elements(By.CSS_SELECTOR, f'.wf-row[data-span-id="{span_id}"]'))


def complete_checkout(observatory: str) -> str | None:
    """A placed order's trace whose every span has arrived: one root, the shopper's action, and no orphan.

    The newest traces may still miss spans (each process exports in batches; a root ends, and so is
    exported, last), and the page then measures the critical path from whichever root is longest.
    """
    settled_us = int((time.time() - 10) * 1_000_000)
    found = httpx.get(
        f"{observatory}/api/traces",
        params={
            "service": "checkout",
            "operation": "hipstershop.CheckoutService/PlaceOrder",
            "end": settled_us,
            "limit": 10,
        },
        timeout=10,
    ).json()["data"]
    for trace in found:
        ids = {span["spanID"] for span in trace["spans"]}
        roots = [s for s in trace["spans"] if not any(r["spanID"] in ids for r in s["references"])]
        services = {process["serviceName"] for process in trace["processes"].values()}
        whole_order = {"payment", "email"} <= services  # an order that failed before charging is no use here
        if (
            len(roots) == 1
            and trace["processes"][roots[0]["processID"]]["serviceName"] == "loadgen"
            and whole_order
        ):
            return str(trace["traceID"])
    return None


def services_in_rows(driver: Any) -> set[str]:
    """Services of every row, scrolling the waterfall from top to bottom (only nearby rows are drawn)."""
    scroller = driver.find_element(By.ID, "waterfall-scroll")
    height = driver.execute_script("return arguments[0].scrollHeight", scroller)
    seen: set[str] = set()
    for top in range(0, height, 300):
        driver.execute_script("arguments[0].scrollTop = arguments[1]", scroller, top)
        wanted = f'.wf-row[aria-rowindex="{min(top // ROW, visible_rows(driver) - 1) + 2}"]'
        WebDriverWait(driver, 10).until(lambda d, css=wanted: d.find_elements(By.CSS_SELECTOR, css))
        seen |= {e.text for e in driver.find_elements(By.CSS_SELECTOR, ".wf-row .wf-service")}
    return seen


def show(driver: Any, index: int, span_id: str) -> WebElement:
    """Scroll the waterfall (all expanded) to the span at `index` in tree order and return its row."""
    scroller = driver.find_element(By.ID, "waterfall-scroll")
    driver.execute_script("arguments[0].scrollTop = Math.max(0, arguments[1] - 100)", scroller, index * ROW)
    WebDriverWait(driver, 10).until(lambda d: row(d, span_id))
    return row(driver, span_id)[0]


def test_checkout_trace(browser: Any, observatory: str) -> None:
    trace_id = eventually(lambda: complete_checkout(observatory), "a complete checkout trace", timeout=90)
    open_trace(browser, observatory, trace_id)
    assert "hipstershop.CheckoutService/PlaceOrder" in browser.page_source

    listed = [e.text.split()[0] for e in browser.find_elements(By.CSS_SELECTOR, ".trace-services li")]
    assert len(listed) >= 8, listed
    assert len(services_in_rows(browser)) >= 8
    assert browser.find_elements(By.CSS_SELECTOR, ".wf-row[data-critical] .wf-cp")

    # Click the checkout server span: its details show its attributes.
    data = page_data(browser)
    fields = {name: i for i, name in enumerate(data["fields"])}
    spans = data["spans"]
    checkout = next(
        s
        for s in spans
        if data["services"][s[fields["service"]]] == "checkout"
        and s[fields["operation"]] == "hipstershop.CheckoutService/PlaceOrder"
        and s[fields["children"]] > 0
    )
    span_id, descendants = checkout[fields["id"]], checkout[fields["descendants"]]
    show(browser, spans.index(checkout), span_id).find_element(By.CSS_SELECTOR, ".wf-op").click()
    detail = browser.find_element(By.ID, "span-detail")
    WebDriverWait(browser, 10).until(lambda d: detail.is_displayed() and "rpc.method" in detail.text)
    assert span_id in detail.text and "checkout" in detail.text

    # Keyboard: Tab from the focused row to its toggle, Enter collapses, Enter expands again.
    assert browser.switch_to.active_element.get_attribute("data-span-id") == span_id
    shown = visible_rows(browser)
    below = [
        s[fields["id"]] for s in spans[spans.index(checkout) + 1 : spans.index(checkout) + 1 + descendants]
    ]
    ActionChains(browser).send_keys(Keys.TAB).perform()
    toggle = browser.switch_to.active_element
    assert "wf-toggle" in toggle.get_attribute("class") and toggle.get_attribute("aria-expanded") == "true"
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    WebDriverWait(browser, 10).until(lambda d: visible_rows(d) == shown - descendants)
    assert not any(row(browser, below_id) for below_id in below)
    toggle = browser.switch_to.active_element
    assert toggle.get_attribute("aria-expanded") == "false"
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    WebDriverWait(browser, 10).until(lambda d: visible_rows(d) == shown)
    assert row(browser, below[0])

    # Find in trace: "payment" matches; Enter jumps to the first match.
    find = browser.find_element(By.ID, "trace-find")
    find.send_keys("payment")
    count = browser.find_element(By.ID, "trace-find-count")
    WebDriverWait(browser, 10).until(lambda d: count.text.startswith("0 of "))
    find.send_keys(Keys.ENTER)
    WebDriverWait(browser, 10).until(lambda d: count.text.startswith("1 of "))
    current = browser.find_element(By.CSS_SELECTOR, ".wf-row.current")
    assert current.get_attribute("data-span-id") == detail.get_attribute("data-span-id")
    assert "payment" in (current.text + detail.text).lower()

    screenshot(browser, "trace")
    assert console_errors(browser) == []


def otlp_http_url(shop: Up) -> str:
    """The OTLP/HTTP receiver of the shop's observatory (the second of `--observatory-ports`)."""
    args = list(shop.process.args)
    ports = args[args.index("--observatory-ports") + 1].split(",")
    return f"http://127.0.0.1:{ports[1]}"


def test_ten_thousand_spans(browser: Any, shop: Up, observatory: str) -> None:
    trace_id = uuid.uuid4().hex
    start_us = time.time_ns() // 1000 - 2 * 3600 * 1_000_000  # outside the default search windows
    body = synthetic_trace(trace_id, 10_000, start_us).SerializeToString()
    answer = httpx.post(
        f"{otlp_http_url(shop)}/v1/traces",
        content=body,
        headers={"Content-Type": "application/x-protobuf"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text

    def stored() -> bool:
        """Whether the query API returns all the trace's spans yet."""
        response = httpx.get(f"{observatory}/api/traces/{trace_id}", timeout=30)
        return response.status_code == 200 and len(response.json()["data"][0]["spans"]) == 10_000

    eventually(stored, "the 10,000-span trace in the observatory", timeout=120, every=1)

    open_trace(browser, observatory, trace_id)
    drawn = browser.find_elements(By.CSS_SELECTOR, ".wf-row")
    assert 0 < len(drawn) < 150  # only the rows near the viewport exist
    assert visible_rows(browser) == 10_000

    # Collapse the second row's span (a child of the root), then expand it again.
    second = browser.find_element(By.CSS_SELECTOR, '.wf-row[aria-rowindex="3"]')
    hidden = int(browser.execute_script(
        "const d = JSON.parse(document.getElementById('trace-data').textContent);"
        "return d.spans[Number(arguments[0])][d.fields.indexOf('descendants')];",
        second.get_attribute("data-index"),
    ))  # fmt: skip
    assert hidden > 0
    second.find_element(By.CSS_SELECTOR, ".wf-toggle").click()
    WebDriverWait(browser, 10).until(lambda d: visible_rows(d) == 10_000 - hidden)
    browser.find_element(By.CSS_SELECTOR, '.wf-row[aria-rowindex="3"] .wf-toggle').click()
    WebDriverWait(browser, 10).until(lambda d: visible_rows(d) == 10_000)

    # Scrolling to the bottom draws the last span.
    scroller = browser.find_element(By.ID, "waterfall-scroll")
    browser.execute_script("arguments[0].scrollTop = arguments[0].scrollHeight", scroller)
    WebDriverWait(browser, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, '.wf-row[data-index="9999"]'))
    assert len(browser.find_elements(By.CSS_SELECTOR, ".wf-row")) < 150

    screenshot(browser, "trace-10000")
    assert console_errors(browser) == []
