"""The Flags page in a real browser over the live shop: a fault switched on in the page breaks the shop's page
of one product (and no other), switched off it works again; a change made outside shows up by itself."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from boutique.flags import FlagFile
from tests.e2e.harness import Up, eventually
from tests.ui.conftest import console_errors, screenshot

FAILING = "OLJCESPC7Z"  # the product productCatalogFailure targets
WORKING = "66VCHSJNUP"
FLAG = "productCatalogFailure"
ROW = f'tr[data-flag="{FLAG}"]'


@pytest.fixture
def flags(shop: Up) -> Iterator[FlagFile]:
    """The shop's flag file, every flag as shipped before and after the test."""
    file = FlagFile(shop.data_dir / "flags.json")
    file.reset(by="test")
    try:
        yield file
    finally:
        file.reset(by="test")


def product_status(shop: Up, product: str) -> int:
    """The HTTP status of the shop's page of a product."""
    return httpx.get(f"{shop.url}/product/{product}", timeout=15).status_code


def toggle(browser: Any) -> Any:
    """The on/off button of the flag under test."""
    return browser.find_element(By.CSS_SELECTOR, f'{ROW} [data-role="toggle"]')


def switched(browser: Any, on: bool) -> bool:
    """Whether the page shows the flag on (or off), with its row highlighted as not shipped (or not)."""
    row = browser.find_element(By.CSS_SELECTOR, ROW)
    return (
        toggle(browser).get_attribute("aria-pressed") == str(on).lower()
        and ("changed" in (row.get_attribute("class") or "")) == on
    )


def open_product(browser: Any, shop: Up, product: str) -> str:
    """Open a product's page in the browser; its main heading."""
    browser.get(f"{shop.url}/product/{product}")
    return str(browser.find_element(By.TAG_NAME, "h1").text)


def test_switch_a_fault_in_the_page(browser: Any, shop: Up, observatory: str, flags: FlagFile) -> None:
    assert product_status(shop, FAILING) == 200 and product_status(shop, WORKING) == 200
    browser.get(f"{observatory}/flags")
    WebDriverWait(browser, 20).until(lambda d: switched(d, on=False), "the flag shown off")
    assert toggle(browser).text == "Turn on"

    toggle(browser).click()
    WebDriverWait(browser, 20).until(lambda d: switched(d, on=True), "the flag shown on")
    status = browser.find_element(By.ID, "flags-status").text
    assert status == f"{FLAG} is now on.", status
    assert toggle(browser).text == "Turn off"
    view = flags.view(FLAG)
    assert view.variant == "on" and view.last_change is not None
    assert view.last_change.by == f"local user {getpass.getuser()}"
    row = browser.find_element(By.CSS_SELECTOR, ROW).text
    assert "by local user" in row and "on" in row
    browser.execute_script("window.scrollTo(0, 0)")
    screenshot(browser, "flags")
    assert console_errors(browser) == []

    # Every process reads the file within a second: the shop's page of that product fails, others work.
    eventually(lambda: product_status(shop, FAILING) >= 500, f"the page of {FAILING} failing", timeout=20)
    heading = open_product(browser, shop, FAILING)
    error = browser.find_element(By.CSS_SELECTOR, ".error-status").get_attribute("textContent")
    print(f"{FAILING} with the flag on: {error} {heading!r}")
    assert (
        error.startswith("Error 5") and f"product {FAILING} cannot be shown right now" in browser.page_source
    )
    assert product_status(shop, WORKING) == 200
    assert open_product(browser, shop, WORKING) == "Harbour Tank Top"
    assert browser.find_elements(By.CSS_SELECTOR, "form.add-to-cart")
    screenshot(browser, "flags-product-failing")
    shop_errors = console_errors(browser)
    assert all(f"/product/{FAILING}" in message for message in shop_errors), shop_errors

    browser.get(f"{observatory}/flags")
    WebDriverWait(browser, 20).until(lambda d: switched(d, on=True), "the flag still shown on")
    toggle(browser).click()
    WebDriverWait(browser, 20).until(lambda d: switched(d, on=False), "the flag shown off again")
    assert flags.view(FLAG).variant == "off"
    eventually(
        lambda: product_status(shop, FAILING) == 200, f"the page of {FAILING} working again", timeout=20
    )

    # Both changes are markers on the catalog's charts, where their errors show.
    browser.get(f"{observatory}/services/productcatalog?lookback=15m")
    labels = browser.execute_script(
        "return [...document.querySelectorAll('#chart-errors g.marker text')].map((t) => t.textContent)"
    )
    assert labels[-2:] == [f"{FLAG} → on", f"{FLAG} → off"], labels
    browser.execute_script("document.getElementById('chart-errors').scrollIntoView()")
    screenshot(browser, "flags-markers")
    assert console_errors(browser) == []


def test_changes_made_elsewhere_show_up_and_reset_all(
    browser: Any, shop: Up, observatory: str, flags: FlagFile
) -> None:
    browser.get(f"{observatory}/flags")
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, 'tr[data-flag="adFailure"]'))
    # As `boutique flags set` would: the page shows it within its refresh, without a reload.
    flags.set("adFailure", "on", by="someone at a terminal")
    flags.set("meshCallFault", "delay500ms", by="someone at a terminal", when={"callee": "ad"}, percent=10)

    def shown(driver: Any) -> bool:
        ad = driver.find_element(By.CSS_SELECTOR, 'tr[data-flag="adFailure"]')
        mesh = driver.find_element(By.CSS_SELECTOR, 'tr[data-flag="meshCallFault"]')
        return (
            "by someone at a terminal" in ad.text
            and "changed" in (ad.get_attribute("class") or "")
            and "delay500ms when callee=ad, 10%" in mesh.text
        )

    WebDriverWait(browser, 20).until(shown, "changes made outside the page")
    select = browser.find_element(By.CSS_SELECTOR, 'tr[data-flag="meshCallFault"] [data-role="variant"]')
    assert select.get_attribute("value") == "delay500ms"

    # Another variant through the select and Apply.
    browser.execute_script("arguments[0].value = 'abortUnavailable'", select)
    browser.find_element(By.CSS_SELECTOR, 'tr[data-flag="meshCallFault"] [data-role="apply"]').click()
    WebDriverWait(browser, 20).until(
        lambda d: "meshCallFault is now abortUnavailable." in d.find_element(By.ID, "flags-status").text
    )
    assert (
        flags.view("meshCallFault").variant == "abortUnavailable" and flags.view("meshCallFault").rule == ""
    )

    browser.find_element(By.ID, "reset-all").click()
    WebDriverWait(browser, 20).until(
        lambda d: not d.find_elements(By.CSS_SELECTOR, "#flags tr.changed"), "every row as shipped"
    )
    assert "Reset 2 flags" in browser.find_element(By.ID, "flags-status").text
    assert all(view.is_default for view in flags.views())
    assert console_errors(browser) == []
