"""The Mesh page in a real browser against the live shop: a breaker opens when its dependency hangs, then closes.

The recommendation process is frozen with SIGSTOP (it keeps accepting connections but never answers),
so the frontend's calls to it time out and its circuit breaker opens; SIGCONT brings it back. The shop
is shared with the other browser tests, so the process is always continued.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import httpx
import psutil
import pytest

from tests.e2e.harness import Up
from tests.ui.conftest import console_errors, screenshot

pytestmark = pytest.mark.e2e

CARD = 'article.breaker-card[data-caller="frontend"][data-dependency="recommendation"]'
PRODUCTS = ("1YMWWN1N4O", "L9ECAV7KIM", "OLJCESPC7Z", "66VCHSJNUP")


def process(shop: Up, service: str) -> dict[str, Any]:
    """The first process of a service in `boutique up`'s state file."""
    return next(p for p in shop.state()["processes"] if p["service"] == service)


@contextmanager
def shoppers(shop: Up, workers: int = 4) -> Iterator[None]:
    """Product pages fetched continuously in the background (each asks recommendation for suggestions)."""
    stop = threading.Event()

    def browse(offset: int) -> None:
        with httpx.Client(base_url=shop.url, timeout=20) as client:
            index = offset
            while not stop.is_set():
                with suppress(httpx.HTTPError):
                    client.get(f"/product/{PRODUCTS[index % len(PRODUCTS)]}")
                index += 1

    threads = [threading.Thread(target=browse, args=(i,), daemon=True) for i in range(workers)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)


def shown_state(driver: Any) -> str | None:
    """The state written on the frontend → recommendation card, as the reader sees it."""
    from selenium.webdriver.common.by import By

    cards = driver.find_elements(By.CSS_SELECTOR, CARD)
    if not cards:
        return None
    return str(cards[0].find_element(By.CSS_SELECTOR, ".state-pill").text)


def test_observatory_is_given_the_registry(shop: Up, observatory: str) -> None:
    """`boutique up` hands its registry to the observatory, whose /api/mesh then reads it."""
    environment = psutil.Process(process(shop, "observatory")["pid"]).environ()
    registry = environment.get("BOUTIQUE_REGISTRY_URL")
    assert registry, "the observatory process has no BOUTIQUE_REGISTRY_URL"
    answer = httpx.get(f"{observatory}/api/mesh", timeout=15)
    assert answer.status_code == 200
    body = answer.json()
    assert body["registry"]["url"] == registry.rstrip("/") and body["registry"]["ok"] is True
    assert {"frontend", "recommendation", "checkout"} <= set(body["services"])


def test_breaker_opens_when_recommendation_hangs(browser: Any, shop: Up, observatory: str) -> None:
    """CLOSED on the live page; OPEN within 20 s of freezing recommendation; CLOSED again after it resumes."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    def waiting(seconds: float) -> WebDriverWait:
        return WebDriverWait(
            browser, seconds, poll_frequency=0.25, ignored_exceptions=[StaleElementReferenceException]
        )

    browser.get(f"{observatory}/mesh")
    with shoppers(shop):
        waiting(60).until(lambda d: shown_state(d) == "CLOSED")
    assert browser.find_element(By.ID, "registry-state").text == "reachable"
    assert browser.find_element(By.ID, "stream-lost").is_displayed() is False
    rows = browser.find_elements(By.CSS_SELECTOR, 'section[data-service="recommendation"] tbody tr')
    assert rows and "recommendation-0" in rows[0].text
    card = browser.find_element(By.CSS_SELECTOR, CARD)
    label = card.get_attribute("aria-label") or ""
    assert "frontend to recommendation" in label and "CLOSED" in label
    assert browser.find_element(By.ID, "last-update").text.count(":") == 2
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", card)
    screenshot(browser, "mesh")
    assert console_errors(browser) == []

    # Updates land in place: the same card element survives the next snapshots.
    browser.execute_script("arguments[0].dataset.marker = 'kept'", card)
    before = browser.find_element(By.ID, "last-update").text
    waiting(10).until(lambda d: d.find_element(By.ID, "last-update").text != before)
    assert card.get_attribute("data-marker") == "kept"

    # Keyboard: Tab through the page to the card, then to its Details button, and open it with Enter.
    keys = ActionChains(browser)
    for _ in range(400):
        if browser.switch_to.active_element == card:
            break
        keys.send_keys(Keys.TAB).perform()
    assert browser.switch_to.active_element == card, "the breaker card is not reachable with Tab"
    keys.send_keys(Keys.TAB).perform()
    button = card.find_element(By.CSS_SELECTOR, "button.more")
    assert browser.switch_to.active_element == button
    keys.send_keys(Keys.ENTER).perform()
    assert button.get_attribute("aria-expanded") == "true"
    details = card.find_element(By.CSS_SELECTOR, ".details")
    assert (
        details.is_displayed() and "Timeouts" in details.text and "frontend->recommendation" in details.text
    )

    recommendation = process(shop, "recommendation")
    os.kill(recommendation["pid"], signal.SIGSTOP)  # accepts connections, never answers
    try:
        with shoppers(shop):
            waiting(20).until(lambda d: shown_state(d) == "OPEN")
        label = browser.find_element(By.CSS_SELECTOR, CARD).get_attribute("aria-label") or ""
        assert "OPEN" in label
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", card)
        screenshot(browser, "mesh-open")
        assert console_errors(browser) == []
    finally:
        os.kill(recommendation["pid"], signal.SIGCONT)
    with shoppers(shop):
        waiting(60).until(lambda d: shown_state(d) == "CLOSED")
    assert browser.find_element(By.CSS_SELECTOR, CARD).get_attribute("aria-expanded") is None
    assert card.find_element(By.CSS_SELECTOR, "button.more").get_attribute("aria-expanded") == "true"
    assert console_errors(browser) == []
