"""The Services pages in a real browser over the live shop: every service and call in the graph, then the
checkout page reached with the keyboard, with its three RED charts."""

from __future__ import annotations

from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from boutique.shop.services import SERVICES
from tests.ui.conftest import console_errors, screenshot

EXPECTED_EDGES = {(name, child) for name, spec in SERVICES.items() for child in spec.depends_on}


def drawn_edges(driver: Any) -> set[tuple[str, str]]:
    """(parent, child) of every edge drawn in the graph with a path and a label."""
    found: list[list[str]] = driver.execute_script(
        """
        return [...document.querySelectorAll('#dependency-graph g.edge')]
          .filter((g) => g.querySelector('path').getAttribute('d') && g.querySelector('text').textContent.includes('calls'))
          .map((g) => [g.dataset.parent, g.dataset.child]);
        """
    )
    return {(parent, child) for parent, child in found}


def test_dependency_graph_and_service_page(browser: Any, observatory: str) -> None:
    # Every call of the shop shows up once the shoppers have gone through each page; reload until then.
    browser.get(f"{observatory}/dependencies")

    def complete(driver: Any) -> bool:
        """Whether every expected edge is drawn; reloads the page when not."""
        if drawn_edges(driver) >= EXPECTED_EDGES:
            return True
        driver.refresh()
        return False

    WebDriverWait(browser, 90, poll_frequency=3).until(
        complete, f"edges {sorted(EXPECTED_EDGES)} in the graph"
    )
    nodes = browser.find_elements(By.CSS_SELECTOR, "#dependency-graph a.node")
    names = {node.get_attribute("data-service") for node in nodes}
    assert set(SERVICES) <= names, f"missing nodes: {set(SERVICES) - names}"
    for node in nodes:
        name = node.get_attribute("data-service")
        assert node.get_dom_attribute("href") == f"/services/{name}"
        assert node.get_dom_attribute("aria-label").startswith(f"{name}: ")
        box = node.find_element(By.CSS_SELECTOR, "rect:not(.stripe)")
        assert box.get_dom_attribute("stroke") == browser.execute_script(
            "return Observatory.colour(arguments[0])", name
        )
    # The table below the graph lists the same calls.
    rows = browser.find_elements(By.CSS_SELECTOR, "table.edges-table tbody tr")
    listed = {tuple(cell.text for cell in row.find_elements(By.TAG_NAME, "td")[:2]) for row in rows}
    assert listed >= EXPECTED_EDGES, EXPECTED_EDGES - listed
    screenshot(browser, "dependencies")
    assert console_errors(browser) == []

    # To the checkout node with Tab, then Enter.
    browser.execute_script("document.activeElement && document.activeElement.blur()")
    for _ in range(120):
        browser.switch_to.active_element.send_keys(Keys.TAB)
        if browser.switch_to.active_element.get_attribute("data-service") == "checkout":
            break
    else:
        raise AssertionError("Tab never reached the checkout node")
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    WebDriverWait(browser, 20).until(ec.url_contains("/services/checkout"))
    WebDriverWait(browser, 20).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "figure.chart")) == 3)

    charts = {
        figure.get_attribute("data-chart"): figure
        for figure in browser.find_elements(By.CSS_SELECTOR, "figure.chart")
    }
    assert list(charts) == ["rate", "errors", "latency"]
    for key, figure in charts.items():
        points = figure.find_elements(By.CSS_SELECTOR, "circle.point")
        assert points, f"the {key} chart has no data"
    rates = browser.execute_script(
        "return [...document.querySelectorAll('#chart-rate circle.point title')].map((t) => t.textContent)"
    )
    assert any(not text.endswith(" 0/s") for text in rates), "checkout never had a request"
    series = [
        s.get_attribute("data-series") for s in charts["latency"].find_elements(By.CSS_SELECTOR, "g.series")
    ]
    assert series == ["p50", "p95", "p99"]
    operations = [
        o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "select#operation option")
    ]
    assert operations[0] == "" and "hipstershop.CheckoutService/PlaceOrder" in operations
    screenshot(browser, "service")
    assert console_errors(browser) == []
