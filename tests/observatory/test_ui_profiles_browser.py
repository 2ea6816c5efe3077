"""The Profiles page and the trace page's link to it in real headless Chromium, over a real observatory
process fed over OTLP/HTTP (`POST /v1/traces`, `POST /v1development/profiles`): the flame graph drawn on
its canvas, the top functions, hover, frame search with its share, a comparison with a legend, a
frame's traces opening the trace page at the span, and "Profile of this span" opening that span's
samples. Every test fails on a browser console error and saves a screenshot under test-output/ui/."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.observatory.process import ObservatoryProcess, start_observatory
from tests.observatory.profile_builders import Dictionary, Frame, export_request
from tests.observatory.test_ui_logs_browser import post, span_payload
from tests.ui.conftest import chromium, console_errors, screenshot

pytestmark = pytest.mark.e2e

TRACE = uuid.uuid4().hex
ROOT_SPAN = "a1" * 8  # frontend GET /cart (as test_ui_logs_browser's trace has it)
CART_SPAN = "b2" * 8  # cart GetCart
WAIT = 30
ROW = 18  # px per level of the flame graph (profiles.js)
MS = 10_000_000  # one sample at 100 Hz, in ns
READY = "#profile[data-ready][data-top]"  # the flame graph is drawn and the top functions listed

MAIN: list[Frame] = [("main", "boutique/run/main.py", 10), ("serve", "boutique/mesh/server.py", 88)]
HANDLE: list[Frame] = [
    *MAIN,
    ("handle_request", "boutique/mesh/server.py", 120),
    ("GetCart", "boutique/shop/cart/server.py", 31),
]
HOT: list[Frame] = [*HANDLE, ("hot_loop", "boutique/shop/cart/hot.py", 12)]
REDIS: list[Frame] = [*HANDLE, ("read_redis", "boutique/shop/cart/store.py", 40)]
IDLE: list[Frame] = [*MAIN, ("idle", "boutique/mesh/server.py", 200), ("select", "selectors.py", 468)]
# (stack, samples now, samples an hour and a half ago): hot_loop grew from 10 % to 60 %, read_redis shrank.
CART_STACKS = [(HOT, 600, 100), (REDIS, 200, 500), (IDLE, 200, 400)]


def profile_request(service: str, rows: Sequence[tuple[Sequence[Frame], int, int, str, str]]) -> bytes:
    """An OTLP profiles export from one process: cpu and wall profiles of the rows (frames root first,
    samples, time in ns, trace id and span id in hex or ""), all on the main thread."""
    d = Dictionary()
    profiles = []
    for kind in ("cpu", "wall"):
        samples = [
            d.sample(frames, [count * MS], [at_ns + i * MS for i in range(count)], "MainThread", trace, span)
            for frames, count, at_ns, trace, span in rows
        ]
        profiles.append(d.profile(kind, samples, min(row[2] for row in rows)))
    return export_request(d, profiles, service, f"{service}-1").SerializeToString()


def send_profiles(observatory: ObservatoryProcess, body: bytes) -> None:
    """Send an OTLP/HTTP profiles export and check it was taken whole."""
    url = f"http://127.0.0.1:{observatory.ports['otlp_http']}/v1development/profiles"
    answer = httpx.post(url, content=body, headers={"Content-Type": "application/x-protobuf"}, timeout=10)
    assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")
def observatory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObservatoryProcess]:
    """An observatory holding the trace and the cart's and frontend's profiles, now and 90 minutes ago."""
    running = start_observatory(tmp_path_factory.mktemp("ui-profiles"))
    now_ns = time.time_ns()
    try:
        post(running, "/v1/traces", span_payload(TRACE, now_ns - 20_000_000_000))
        recent, earlier = now_ns - 60_000_000_000, now_ns - 90 * 60_000_000_000
        rows = [(frames, now, recent, TRACE, CART_SPAN) for frames, now, _ in CART_STACKS[:2]]
        rows.append((IDLE, CART_STACKS[2][1], recent, "", ""))
        rows += [(frames, before, earlier, "", "") for frames, _, before in CART_STACKS]
        send_profiles(running, profile_request("cart", rows))
        render = [*MAIN, ("render_page", "boutique/shop/frontend/pages.py", 77)]
        send_profiles(running, profile_request("frontend", [(render, 50, recent, TRACE, ROOT_SPAN)]))
        yield running
    finally:
        running.stop()


browser = pytest.fixture(chromium, scope="module", name="browser")  # one for this module's tests


# ---- helpers -------------------------------------------------------------------------------------


def open_profile(driver: Any, url: str) -> Any:
    """Open a Profiles page and wait until its flame graph and top functions are shown; the `#profile`
    section."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    return WebDriverWait(driver, WAIT).until(lambda d: d.find_element(By.CSS_SELECTOR, READY))


def pixels(driver: Any) -> dict[str, int]:
    """How many of the canvas's pixels are drawn at all, in the search colour, reddish and greenish."""
    script = """
      const canvas = document.getElementById("flame");
      const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
      const out = {drawn: 0, match: 0, red: 0, green: 0};
      for (let k = 0; k < data.length; k += 4) {
        const [r, g, b, a] = [data[k], data[k + 1], data[k + 2], data[k + 3]];
        if (a === 0) continue;
        out.drawn += 1;
        if (r === 192 && g === 38 && b === 211) out.match += 1;
        if (r > g + 60 && r > b + 60) out.red += 1;
        if (g > r + 40 && g > b + 40) out.green += 1;
      }
      return out;
    """
    return dict(driver.execute_script(script))


def frame_point(level: int) -> tuple[int, int]:
    """Where the leftmost frame of a level is, from the canvas's top-left corner (children are sorted by
    total, largest first, so the leftmost frames are the hot path)."""
    return 6, level * ROW + ROW // 2


def at_frame(driver: Any, level: int) -> Any:
    """Move the pointer over the leftmost frame of a level; the action chain, to click with."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    canvas = driver.find_element(By.ID, "flame")
    x, y = frame_point(level)
    size = canvas.size
    actions = ActionChains(driver).move_to_element_with_offset(
        canvas, x - size["width"] // 2, y - size["height"] // 2
    )
    actions.perform()
    return actions


def top_names(driver: Any) -> list[str]:
    """The top functions table's names, top first."""
    from selenium.webdriver.common.by import By

    return [b.text for b in driver.find_elements(By.CSS_SELECTOR, "#top-functions .top-name")]


# ---- tests ---------------------------------------------------------------------------------------


def test_flame_graph_top_functions_and_hover(browser: Any, observatory: ObservatoryProcess) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.get(f"{observatory.query_url}/search")
    nav = browser.find_element(By.CSS_SELECTOR, 'nav a[href="/profiles"]')
    assert nav.text == "Profiles"
    nav.click()
    services = WebDriverWait(browser, WAIT).until(lambda d: d.find_element(By.ID, "profile-services"))
    assert [a.text for a in services.find_elements(By.TAG_NAME, "a")] == ["cart", "frontend"]
    services.find_element(By.LINK_TEXT, "cart").click()
    section = WebDriverWait(browser, WAIT).until(lambda d: d.find_element(By.CSS_SELECTOR, READY))
    assert browser.find_element(By.ID, "profile-heading").text == "10.0 s of on-CPU time sampled"
    drawn = pixels(browser)
    assert drawn["drawn"] > 10_000, drawn  # the canvas is not blank
    assert int(section.get_attribute("data-frames")) == 9  # total and the 8 functions of the 3 stacks
    names = top_names(browser)
    assert names[0] == "hot_loop (boutique/shop/cart/hot.py)"
    assert names[1:3] == ["read_redis (boutique/shop/cart/store.py)", "select (selectors.py)"]
    cells = browser.find_element(By.CSS_SELECTOR, "#top-functions tbody tr").find_elements(By.TAG_NAME, "td")
    assert [c.text for c in cells[1:]] == ["6.00 s", "60.00 %", "6.00 s", "60.00 %"]

    # Hover: the root, then the hot function five levels down.
    at_frame(browser, 0)
    tip = browser.find_element(By.ID, "flame-tip")
    WebDriverWait(browser, WAIT).until(lambda d: tip.is_displayed())
    assert tip.text.startswith("total") and "100.00 % of all" in tip.text
    at_frame(browser, 5)
    WebDriverWait(browser, WAIT).until(lambda d: "hot_loop" in tip.text)
    assert "Total\n6.00 s (60.00 % of all)" in tip.text and "Self\n6.00 s (60.00 % of all)" in tip.text

    # The pprof download link carries the same filters.
    pprof = browser.find_element(By.ID, "profile-pprof").get_dom_attribute("href")
    assert urlsplit(pprof).path == "/api/profiles/pprof"
    assert parse_qs(urlsplit(pprof).query)["service"] == ["cart"]
    answer = httpx.get(f"{observatory.query_url}{pprof}", timeout=10)
    assert answer.status_code == 200 and answer.content[:2] == b"\x1f\x8b"  # gzip
    screenshot(browser, "profiles")

    # Choosing another service shows its profile at once.
    Select(browser.find_element(By.ID, "p-service")).select_by_value("frontend")
    WebDriverWait(browser, WAIT).until(lambda d: "service=frontend" in d.current_url)
    WebDriverWait(browser, WAIT).until(lambda d: d.find_element(By.CSS_SELECTOR, READY))
    assert top_names(browser)[0] == "render_page (boutique/shop/frontend/pages.py)"
    assert console_errors(browser) == []


def test_search_highlights_frames_and_shows_their_share(
    browser: Any, observatory: ObservatoryProcess
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    section = open_profile(browser, f"{observatory.query_url}/profiles?service=cart")
    assert pixels(browser)["match"] == 0
    box = browser.find_element(By.ID, "profile-search")
    box.send_keys("READ_redis")  # any case
    WebDriverWait(browser, WAIT).until(lambda d: section.get_attribute("data-matches") == "1")
    assert browser.find_element(By.ID, "profile-search-share").text == "1 frame, 20.00 % of all samples"
    assert pixels(browser)["match"] > 100
    assert parse_qs(urlsplit(browser.current_url).query)["q"] == ["READ_redis"]  # a reload keeps it

    # serve, handle_request and idle: the samples under serve are counted once, not once per frame.
    box.clear()
    box.send_keys("boutique/mesh/server.py")
    WebDriverWait(browser, WAIT).until(lambda d: section.get_attribute("data-matches") == "3")
    assert browser.find_element(By.ID, "profile-search-share").text == "3 frames, 100.00 % of all samples"

    # A top function's name searches for it.
    browser.find_element(By.CSS_SELECTOR, "#top-functions .top-name").click()
    assert box.get_attribute("value") == "hot_loop (boutique/shop/cart/hot.py)"
    WebDriverWait(browser, WAIT).until(
        lambda d: "60.00 %" in d.find_element(By.ID, "profile-search-share").text
    )
    screenshot(browser, "profiles-search")

    # The search comes with the URL.
    section = open_profile(browser, f"{observatory.query_url}/profiles?service=cart&q=select")
    assert section.get_attribute("data-matches") == "1"
    assert browser.find_element(By.ID, "profile-search-share").text == "1 frame, 20.00 % of all samples"
    assert console_errors(browser) == []


def test_diff_colours_frames_with_a_legend(browser: Any, observatory: ObservatoryProcess) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    open_profile(browser, f"{observatory.query_url}/profiles?service=cart")
    assert not browser.find_element(By.ID, "diff-legend").is_displayed()
    Select(browser.find_element(By.ID, "p-compare")).select_by_value("previous")
    browser.find_element(By.CSS_SELECTOR, "#profiles-form button[type=submit]").click()
    WebDriverWait(browser, WAIT).until(lambda d: "compare=previous" in d.current_url)
    WebDriverWait(browser, WAIT).until(lambda d: d.find_element(By.CSS_SELECTOR, READY))
    legend = browser.find_element(By.ID, "diff-legend")
    assert legend.is_displayed()
    # hot_loop: 60 % of the samples now, 10 % in the hour before; read_redis 20 % now, 50 % before.
    assert browser.find_element(By.ID, "diff-legend-more").text == "+50.00 pp"
    assert browser.find_element(By.ID, "diff-legend-less").text == "\u221250.00 pp"  # a minus sign
    assert "against 10.0 s in the base window" in browser.find_element(By.ID, "profile-heading").text
    colours = pixels(browser)
    assert colours["red"] > 500 and colours["green"] > 500, colours
    at_frame(browser, 5)
    tip = browser.find_element(By.ID, "flame-tip")
    WebDriverWait(browser, WAIT).until(lambda d: "hot_loop" in tip.text)
    assert "Change\n+50.00 pp of all samples" in tip.text
    screenshot(browser, "profiles-diff")
    assert console_errors(browser) == []


def test_a_frames_traces_open_the_trace_at_the_span(browser: Any, observatory: ObservatoryProcess) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    section = open_profile(browser, f"{observatory.query_url}/profiles?service=cart")
    assert not browser.find_element(By.ID, "frame-traces").is_displayed()
    at_frame(browser, 5).click().perform()  # hot_loop: zoom in, and its traces
    WebDriverWait(browser, WAIT).until(lambda d: section.get_attribute("data-traces") == "1")
    assert section.get_attribute("data-zoom") == "hot_loop (boutique/shop/cart/hot.py)"
    assert browser.find_element(By.ID, "frame-traces-frame").text == "hot_loop (boutique/shop/cart/hot.py)"
    assert browser.find_element(By.ID, "profile-reset").is_enabled()
    assert pixels(browser)["drawn"] > 10_000
    screenshot(browser, "profiles-frame-traces")

    # The root zooms back out; idle's frame has no span, so no traces.
    at_frame(browser, 0).click().perform()
    WebDriverWait(browser, WAIT).until(lambda d: section.get_attribute("data-zoom") == "")
    assert not browser.find_element(By.ID, "frame-traces").is_displayed()
    at_frame(browser, 5).click().perform()
    WebDriverWait(browser, WAIT).until(lambda d: section.get_attribute("data-traces") == "1")
    link = browser.find_element(By.CSS_SELECTOR, "#frame-traces-list a.frame-trace")
    assert link.text == "cart: GetCart"
    assert link.get_dom_attribute("href") == f"/trace/{TRACE}?span={CART_SPAN}"
    link.click()
    WebDriverWait(browser, WAIT).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#waterfall[data-ready]"))
    detail = browser.find_element(By.ID, "span-detail")
    assert detail.get_attribute("data-span-id") == CART_SPAN and detail.is_displayed()
    assert console_errors(browser) == []


def test_profile_of_a_span_from_the_trace_page(browser: Any, observatory: ObservatoryProcess) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{observatory.query_url}/trace/{TRACE}")
    WebDriverWait(browser, WAIT).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#waterfall[data-ready]"))
    browser.find_element(By.CSS_SELECTOR, f'.wf-row[data-span-id="{CART_SPAN}"]').click()
    link = WebDriverWait(browser, WAIT).until(lambda d: d.find_element(By.ID, "span-profile-link"))
    assert link.text == "Profile of this span"
    wanted = {"traceID": [TRACE], "spanID": [CART_SPAN], "service": ["cart"]}
    assert parse_qs(urlsplit(link.get_dom_attribute("href")).query) == wanted
    link.click()
    section = WebDriverWait(browser, WAIT).until(lambda d: d.find_element(By.CSS_SELECTOR, READY))
    note = browser.find_element(By.ID, "span-note").text
    assert note.startswith("Samples taken while span GetCart (cart, b2b2b2b2b2b2b2b2) ran"), note
    # Only the samples taken in the span: hot_loop and read_redis, not the idle thread's.
    names = top_names(browser)
    assert names[:2] == ["hot_loop (boutique/shop/cart/hot.py)", "read_redis (boutique/shop/cart/store.py)"]
    assert "select (selectors.py)" not in names
    assert browser.find_element(By.ID, "profile-heading").text == "8.00 s of on-CPU time sampled"
    assert pixels(browser)["drawn"] > 10_000
    assert int(section.get_attribute("data-frames")) == 7
    screenshot(browser, "profiles-span")
    back = browser.find_element(By.ID, "back-to-trace")
    assert back.get_dom_attribute("href") == f"/trace/{TRACE}?span={CART_SPAN}"
    back.click()
    detail = WebDriverWait(browser, WAIT).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#span-detail[data-span-id]")
    )
    assert detail.get_attribute("data-span-id") == CART_SPAN

    # The root span is the frontend's: its own samples.
    browser.find_element(By.CSS_SELECTOR, f'.wf-row[data-span-id="{ROOT_SPAN}"]').click()
    WebDriverWait(browser, WAIT).until(lambda d: d.find_element(By.ID, "span-profile-link")).click()
    WebDriverWait(browser, WAIT).until(lambda d: d.find_element(By.CSS_SELECTOR, READY))
    assert top_names(browser)[0] == "render_page (boutique/shop/frontend/pages.py)"
    assert console_errors(browser) == []
