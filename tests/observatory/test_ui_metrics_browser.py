"""The Metrics page in real headless Chromium, over a real observatory process fed by OTLP/HTTP
(`POST /v1/metrics`, `POST /v1/traces`): choosing a service and an instrument draws what the metrics API
answers, group-by makes a line per label value, a window dragged on the chart opens the search page on
that service and window, and exemplar dots open their traces. Every test fails on a browser console error."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from boutique.observatory.ui.search import utc_field
from tests.observatory.process import ObservatoryProcess, start_observatory
from tests.observatory.test_ui_logs_browser import ROOT_SPAN, attributes, post, resource, span_payload
from tests.ui.conftest import chromium, console_errors, screenshot

pytestmark = pytest.mark.e2e

TRACE = uuid.uuid4().hex
WAIT = 30
STEP_S = 15
POINTS = 40  # ten minutes of points, 15 s apart, ending now
BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.1]
RATES = {"GetCart": 3, "AddItem": 1}  # requests per 15 s


def point_time(first_ns: int, k: int) -> int:
    """The time of the k-th point (ns) of a series whose counting began at `first_ns`."""
    return first_ns + (k + 1) * STEP_S * 1_000_000_000


def metrics_payload(first_ns: int) -> dict[str, Any]:
    """cart's request counter (a monotonic cumulative sum), its latency histogram with exemplars, a gauge."""
    requests, durations, depth = [], [], []
    for method, per_step in RATES.items():
        for k in range(POINTS):
            count = per_step * (k + 1)
            common = {
                "attributes": attributes({"rpc.method": method}),
                "startTimeUnixNano": str(first_ns),
                "timeUnixNano": str(point_time(first_ns, k)),
            }
            requests.append({**common, "asInt": str(count)})
            histogram = {
                **common,
                "count": str(count),
                "sum": 0.02 * count,
                "bucketCounts": [str(c) for c in (0, count, 0, 0, 0, 0)],  # every call 5-10 ms
                "explicitBounds": BOUNDS,
            }
            if method == "GetCart" and k == POINTS // 2:
                histogram["exemplars"] = [
                    {"timeUnixNano": str(point_time(first_ns, k) - 1_000_000_000), "asDouble": 0.0075,
                     "traceId": TRACE, "spanId": ROOT_SPAN, "filteredAttributes": []}
                ]  # fmt: skip
            durations.append(histogram)
    for k in range(POINTS):
        depth.append(
            {"timeUnixNano": str(point_time(first_ns, k)), "asDouble": float(k % 5), "attributes": []}
        )
    metrics = [
        {"name": "rpc_server_requests", "unit": "{request}", "description": "Requests served",
         "sum": {"aggregationTemporality": 2, "isMonotonic": True, "dataPoints": requests}},
        {"name": "rpc_server_duration", "unit": "s", "description": "Time to serve a request",
         "histogram": {"aggregationTemporality": 2, "dataPoints": durations}},
        {"name": "queue_depth", "unit": "1", "gauge": {"dataPoints": depth}},
    ]  # fmt: skip
    return {"resourceMetrics": [{"resource": resource("cart"), "scopeMetrics": [{"metrics": metrics}]}]}


@pytest.fixture(scope="module")
def observatory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObservatoryProcess]:
    """An observatory holding cart's metrics and one trace in the middle of their time range."""
    running = start_observatory(tmp_path_factory.mktemp("ui-metrics"))
    try:
        first_ns = time.time_ns() - POINTS * STEP_S * 1_000_000_000  # ending when the tests begin
        post(running, "/v1/metrics", metrics_payload(first_ns))
        post(running, "/v1/traces", span_payload(TRACE, point_time(first_ns, POINTS // 2) - 1_000_000_000))
        yield running
    finally:
        running.stop()


browser = pytest.fixture(chromium, scope="module", name="browser")  # one for this module's tests


def choose(driver: Any, select_id: str, value: str) -> None:
    """Pick a value in one of the pickers and wait for the page it loads."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    old = driver.find_element(By.ID, "charts-form")
    Select(driver.find_element(By.ID, select_id)).select_by_value(value)
    WebDriverWait(driver, WAIT).until(lambda d: old not in d.find_elements(By.ID, "charts-form"))


def drawn_series(driver: Any) -> dict[str, int]:
    """Each line of the chart by name, with how many points it has."""
    from selenium.webdriver.common.by import By

    return {
        group.get_attribute("data-series"): len(group.find_elements(By.CSS_SELECTOR, "circle.point"))
        for group in driver.find_elements(By.CSS_SELECTOR, "#chart-metric g.series")
    }


def api_points(observatory: ObservatoryProcess, driver: Any, **params: str) -> int:
    """How many non-empty points the metrics API answers for the page's window and these parameters."""
    from selenium.webdriver.common.by import By

    svg = driver.find_element(By.CSS_SELECTOR, "#chart-metric svg")
    window = {"start": svg.get_attribute("data-start-us"), "end": svg.get_attribute("data-end-us")}
    answer = httpx.get(f"{observatory.query_url}/api/metrics/query", params={**window, **params}, timeout=10)
    answer.raise_for_status()
    return sum(1 for s in answer.json()["data"]["series"] for _, v in s["points"] if v is not None)


def test_choose_an_instrument_and_group_it(browser: Any, observatory: ObservatoryProcess) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.get(f"{observatory.query_url}/charts")
    assert [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#metric-services a")] == ["cart"]
    choose(browser, "m-service", "cart")
    rows = browser.find_elements(By.CSS_SELECTOR, "#instruments tbody tr a")
    assert [a.text for a in rows] == ["queue_depth", "rpc_server_duration", "rpc_server_requests"]

    choose(browser, "m-name", "rpc_server_requests")
    assert Select(browser.find_element(By.ID, "m-fn")).first_selected_option.get_attribute("value") == "rate"
    lines = drawn_series(browser)
    assert list(lines) == ["rpc_server_requests"]  # one line: summed over the methods
    query = {"name": "rpc_server_requests", "service": "cart", "fn": "rate", "step": "30000000"}
    assert lines["rpc_server_requests"] == api_points(observatory, browser, **query) >= 5
    assert (
        browser.find_element(By.CSS_SELECTOR, "#chart-metric g.series path")
        .get_attribute("d")
        .startswith("M")
    )
    rates = browser.execute_script(
        "return [...document.querySelectorAll('#chart-metric circle.point title')].map((t) => t.textContent)"
    )
    assert all(text.endswith("/s") for text in rates), rates
    assert any(text.endswith(" 0.267/s") for text in rates), rates  # (3 + 1) requests per 15 s
    assert console_errors(browser) == []

    # One line per method; then only GetCart.
    browser.find_element(By.CSS_SELECTOR, '#m-group-by input[value="rpc.method"]').click()
    WebDriverWait(browser, WAIT).until(lambda d: "groupBy=rpc.method" in d.current_url)
    lines = drawn_series(browser)
    assert sorted(lines) == ["rpc.method=AddItem", "rpc.method=GetCart"], lines
    legend = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#chart-metric .legend-item")]
    assert sorted(legend) == sorted(lines)
    colours = {
        g.find_element(By.TAG_NAME, "path").get_attribute("stroke")
        for g in browser.find_elements(By.CSS_SELECTOR, "#chart-metric g.series")
    }
    assert len(colours) == 2
    Select(browser.find_element(By.CSS_SELECTOR, 'select[name="filter.rpc.method"]')).select_by_value(
        "GetCart"
    )
    WebDriverWait(browser, WAIT).until(lambda d: "filter.rpc.method=GetCart" in d.current_url)
    assert list(drawn_series(browser)) == ["rpc.method=GetCart"]
    screenshot(browser, "metrics")
    assert console_errors(browser) == []


def drag_across(driver: Any, start: float, end: float) -> None:
    """Drag over the chart's plot from `start` to `end` (fractions of the plot's width)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    svg = driver.find_element(By.CSS_SELECTOR, "#chart-metric svg")
    width = float(svg.get_attribute("width"))
    left, right = float(svg.get_attribute("data-left")), float(svg.get_attribute("data-right"))
    shown = svg.rect["width"]  # the chart is scaled to the page

    def offset(fraction: float) -> int:
        """Pixels from the svg's centre to a point of the plot."""
        return round((left + fraction * (right - left)) / width * shown - shown / 2)

    actions = ActionChains(driver)
    actions.move_to_element_with_offset(svg, offset(start), 0).click_and_hold()
    actions.move_by_offset(offset(end) - offset(start), 0).release().perform()


def test_a_window_on_the_chart_opens_its_traces(browser: Any, observatory: ObservatoryProcess) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{observatory.query_url}/charts?service=cart&name=rpc_server_requests&lookback=15m")
    svg = browser.find_element(By.CSS_SELECTOR, "#chart-metric svg")
    chart_start, chart_end = int(svg.get_attribute("data-start-us")), int(svg.get_attribute("data-end-us"))
    actions = browser.find_element(By.ID, "window-actions")
    assert not actions.is_displayed()

    drag_across(browser, 0.25, 0.75)
    WebDriverWait(browser, WAIT).until(lambda d: actions.is_displayed())
    box = browser.find_element(By.ID, "metric-chart")
    start, end = int(box.get_attribute("data-window-start")), int(box.get_attribute("data-window-end"))
    quarter = (chart_end - chart_start) / 4
    assert (
        abs(start - (chart_start + quarter)) < quarter / 10
        and abs(end - (chart_end - quarter)) < quarter / 10
    )
    assert browser.find_element(By.CSS_SELECTOR, "rect.selection").get_attribute("visibility") == "visible"
    link = browser.find_element(By.ID, "window-traces")
    target = urlsplit(link.get_dom_attribute("href"))
    assert target.path == "/search"
    assert parse_qs(target.query) == {"service": ["cart"], "start": [str(start)], "end": [str(end)]}
    screenshot(browser, "metrics-window")
    assert console_errors(browser) == []

    # The whole range holds the trace sent in the middle of the points; the search page finds it there.
    drag_across(browser, 0.0, 1.0)
    WebDriverWait(browser, WAIT).until(lambda d: int(box.get_attribute("data-window-start")) < start)
    start, end = int(box.get_attribute("data-window-start")), int(box.get_attribute("data-window-end"))
    browser.find_element(By.ID, "window-traces").click()
    WebDriverWait(browser, WAIT).until(lambda d: urlsplit(d.current_url).path == "/search")
    assert browser.find_element(By.ID, "f-from").get_attribute("value") == utc_field(start)
    assert browser.find_element(By.ID, "f-to").get_attribute("value") == utc_field(end)
    found = [
        a.get_dom_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#traces a.trace-link")
    ]
    assert found == [f"/trace/{TRACE}"]
    assert console_errors(browser) == []


def test_histogram_quantiles_and_exemplars(browser: Any, observatory: ObservatoryProcess) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{observatory.query_url}/charts?service=cart&name=rpc_server_duration")
    assert list(drawn_series(browser)) == ["p50", "p95", "p99"]
    labels = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#chart-metric .y-tick")]
    assert any(label.endswith("ms") for label in labels), labels  # seconds shown as durations
    dots = browser.find_elements(By.CSS_SELECTOR, "#chart-metric .exemplars a")
    assert [d.get_dom_attribute("href") for d in dots] == [f"/trace/{TRACE}?span={ROOT_SPAN}"]
    screenshot(browser, "metrics-histogram")
    dots[0].click()
    WebDriverWait(browser, WAIT).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#waterfall[data-ready]"))
    assert browser.find_element(By.ID, "span-detail").get_attribute("data-span-id") == ROOT_SPAN
    assert console_errors(browser) == []


def test_gauge_and_bad_parameters(browser: Any, observatory: ObservatoryProcess) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(f"{observatory.query_url}/charts?service=cart&name=queue_depth&fn=max")
    assert Select(browser.find_element(By.ID, "m-fn")).first_selected_option.get_attribute("value") == "max"
    assert drawn_series(browser)["queue_depth"] >= 5
    browser.get(f"{observatory.query_url}/charts?service=cart&lookback=2d")
    assert "Time range" in browser.find_element(By.ID, "charts-error").text
    console_errors(browser)  # the 400 page itself is logged by the browser; nothing else may be
    browser.get(f"{observatory.query_url}/charts?service=nobody")
    assert "nobody" in browser.find_element(By.ID, "charts-error").text
    console_errors(browser)
    browser.get(f"{observatory.query_url}/charts?service=cart")
    assert console_errors(browser) == []
