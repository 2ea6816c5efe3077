"""Browser tests of the observatory UI: real headless Chromium driven by Selenium, against a real shop.

One `boutique up` with simulated shoppers serves every test of this folder; each test opens pages in
one shared browser, saves a screenshot under test-output/ui/ and fails on any browser console error.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.harness import Up, eventually, start_up
from tests.ui.chrome import CHROMEDRIVER, CHROMIUM, MISSING, chrome_driver

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "ui"

pytestmark = pytest.mark.e2e


def chromium() -> Iterator[Any]:
    """Headless Chromium, quit when the fixture ends; skipped with what to install when it is missing."""
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip(MISSING)
    driver = chrome_driver()
    try:
        yield driver
    finally:
        driver.quit()


browser = pytest.fixture(chromium, scope="session", name="browser")  # one for every test of this folder


def console_errors(driver: Any) -> list[str]:
    """Browser console errors since the last call (the log is drained by reading it)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def screenshot(driver: Any, name: str) -> Path:
    """Save what the browser shows as test-output/ui/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


@pytest.fixture(scope="session")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """The whole shop with fast simulated shoppers, once its checkouts are in the observatory."""
    up = start_up(
        tmp_path_factory.mktemp("ui-shop"),
        "--load",
        "--users",
        "4",
        "--spawn-rate",
        "4",
        env={"LOADGEN_WAIT_MIN": "0.1", "LOADGEN_WAIT_MAX": "0.5"},
    )
    try:
        observatory = up.state()["observatory_url"]

        def checkouts() -> bool:
            answer = httpx.get(
                f"{observatory}/api/traces",
                params={
                    "service": "checkout",
                    "operation": "hipstershop.CheckoutService/PlaceOrder",
                    "limit": 3,
                },
                timeout=10,
            )
            return answer.status_code == 200 and len(answer.json()["data"]) >= 3

        eventually(checkouts, "three checkouts in the observatory", timeout=120)
        time.sleep(3)  # the spans of those traces' last hops arrive in the next export batches
        yield up
    finally:
        up.stop()


@pytest.fixture(scope="session")
def observatory(shop: Up) -> str:
    """The observatory's base URL."""
    return str(shop.state()["observatory_url"])
