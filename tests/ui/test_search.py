"""The search page in a real browser against the live shop: find checkouts, see them plotted, open one."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from tests.ui.conftest import console_errors, screenshot

pytestmark = pytest.mark.e2e

OPERATION = "hipstershop.CheckoutService/PlaceOrder"
TRACE_PATH = re.compile(r"/trace/[0-9a-f]{1,32}")


def checkout_operations(observatory: str) -> set[str]:
    """The operation names the query API lists for the checkout service."""
    answer = httpx.get(f"{observatory}/api/operations", params={"service": "checkout"}, timeout=10)
    answer.raise_for_status()
    return {entry["name"] for entry in answer.json()["data"]}


def test_search_checkouts_and_open_one(browser: Any, observatory: str) -> None:
    """Choose checkout (by keyboard) and PlaceOrder, submit with Enter, see rows and dots, open a trace."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, 30)
    browser.get(f"{observatory}/search")
    service = wait.until(ec.element_to_be_clickable((By.ID, "f-service")))
    assert "checkout" in [o.get_attribute("value") for o in Select(service).options]
    assert console_errors(browser) == []

    # Keyboard: type the service's name into the focused dropdown; the operations reload for it.
    service.send_keys("checkout")
    assert Select(service).first_selected_option.get_attribute("value") == "checkout"

    def operations_reloaded(driver: Any) -> bool:
        """The operation dropdown lists only checkout's operations, PlaceOrder among them."""
        element = driver.find_element(By.ID, "f-operation")
        names = {o.get_attribute("value") for o in Select(element).options} - {""}
        return (
            element.get_attribute("aria-busy") is None
            and OPERATION in names
            and (names <= checkout_operations(observatory))
        )

    wait.until(operations_reloaded)
    Select(browser.find_element(By.ID, "f-operation")).select_by_value(OPERATION)

    # Keyboard: Enter in a text field submits the form.
    browser.find_element(By.ID, "f-limit").send_keys(Keys.ENTER)
    wait.until(lambda driver: "operation=" in driver.current_url)
    rows = wait.until(lambda driver: driver.find_elements(By.CSS_SELECTOR, "#traces a.trace-link"))

    query = parse_qs(urlparse(browser.current_url).query)
    assert query["service"] == ["checkout"] and query["operation"] == [OPERATION]
    assert Select(browser.find_element(By.ID, "f-service")).first_selected_option.text == "checkout"
    assert Select(browser.find_element(By.ID, "f-operation")).first_selected_option.text == OPERATION

    hrefs = [urlparse(row.get_attribute("href")).path for row in rows]
    assert all(TRACE_PATH.fullmatch(href) for href in hrefs), hrefs
    touched = browser.find_elements(By.CSS_SELECTOR, "#traces td.services")
    assert len(touched) == len(rows) and all("checkout" in cell.text.split() for cell in touched)
    dots = browser.find_elements(By.CSS_SELECTOR, "#scatter a")
    assert len(dots) == len(rows)
    assert sorted(dot.get_dom_attribute("href") for dot in dots) == sorted(hrefs)
    assert browser.find_elements(By.CSS_SELECTOR, "#scatter a title")
    swatch = browser.find_element(By.CSS_SELECTOR, "#traces .swatch")
    assert swatch.value_of_css_property("background-color") != "rgba(0, 0, 0, 0)"
    screenshot(browser, "search")
    assert console_errors(browser) == []

    rows[0].click()
    wait.until(lambda driver: urlparse(driver.current_url).path == hrefs[0])
    console_errors(browser)  # the trace page has its own tests; only its address and answer are checked here
    answer = httpx.get(browser.current_url, timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
