"""How long the trace page takes to become interactive for a 10,000-span trace, against a 100-span one.

Starts a `boutique observatory` process on free ports in a temporary directory, sends it two synthetic
traces over OTLP/HTTP (100 and 10,000 spans, ten services, a tree several levels deep), waits until both
are stored, then loads each trace's page in headless Chromium `--runs` times, interleaved, after one
warm-up load each. "Interactive" is the moment the page's script has drawn the first waterfall rows
(it sets `data-ready` and records `performance.now()`, milliseconds since navigation started). Prints
the median per trace, the server's time to answer the page alone, the page size, and the ratio of the
medians 10,000 / 100.
Usage: python benchmarks/ui_large_trace.py [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for the test helpers below

from tests.observatory.process import start_observatory
from tests.observatory.synthetic import synthetic_trace
from tests.ui.chrome import chrome_driver

SIZES = {100: "100e" * 8, 10_000: "10e4" * 8}  # spans → trace id


def send_and_wait(otlp_url: str, query_url: str, spans: int, trace_id: str) -> None:
    """Send one synthetic trace and wait until the query API returns all of its spans."""
    start_us = time.time_ns() // 1000 - 60_000_000
    body = synthetic_trace(trace_id, spans, start_us).SerializeToString()
    answer = httpx.post(
        f"{otlp_url}/v1/traces", content=body, headers={"Content-Type": "application/x-protobuf"}, timeout=60
    )
    answer.raise_for_status()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = httpx.get(f"{query_url}/api/traces/{trace_id}", timeout=30)
        if found.status_code == 200 and len(found.json()["data"][0]["spans"]) == spans:
            return
        time.sleep(0.3)
    raise SystemExit(f"the {spans}-span trace was not stored in time")


def browser() -> Any:
    """Headless Chromium through Selenium (the same settings as the UI tests)."""
    try:
        return chrome_driver(page_load_timeout=120)
    except RuntimeError as exc:
        raise SystemExit(f"needs chromium: {exc}") from exc


def interactive_ms(driver: Any, url: str) -> float:
    """Load the page; milliseconds from navigation start until its first waterfall rows were drawn."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 120).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#waterfall[data-ready] .wf-row")
    )
    return float(driver.execute_script("return window.traceReadyAt"))


def main() -> None:
    """Run the benchmark and print the medians and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="page loads per trace (after one warm-up each)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ui-bench-") as folder:
        observatory = start_observatory(Path(folder) / "data")
        driver = None
        try:
            otlp = f"http://127.0.0.1:{observatory.ports['otlp_http']}"
            for spans, trace_id in SIZES.items():
                send_and_wait(otlp, observatory.query_url, spans, trace_id)
            server: dict[int, list[float]] = {spans: [] for spans in SIZES}
            size: dict[int, int] = {}
            for _ in range(args.runs):
                for spans, trace_id in SIZES.items():
                    began = time.perf_counter()
                    page = httpx.get(f"{observatory.query_url}/trace/{trace_id}", timeout=60)
                    server[spans].append((time.perf_counter() - began) * 1000)
                    size[spans] = len(page.content)
            driver = browser()
            times: dict[int, list[float]] = {spans: [] for spans in SIZES}
            for trace_id in SIZES.values():  # warm-up: static files cached, Chromium started
                interactive_ms(driver, f"{observatory.query_url}/trace/{trace_id}")
            for _ in range(args.runs):
                for spans, trace_id in SIZES.items():
                    times[spans].append(interactive_ms(driver, f"{observatory.query_url}/trace/{trace_id}"))
            errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        finally:
            if driver is not None:
                driver.quit()
            observatory.stop()
    print(f"trace page, navigation → interactive (first rows drawn), median of {args.runs} loads each:")
    for spans in SIZES:
        print(
            f"  {spans:>6} spans: {statistics.median(times[spans]):8.1f} ms in the browser"
            f"  (server alone {statistics.median(server[spans]):7.1f} ms, page {size[spans] / 1024:8.1f} KiB)"
            f"  runs: {', '.join(f'{t:.0f}' for t in times[spans])}"
        )
    small, large = (statistics.median(times[spans]) for spans in SIZES)
    print(f"  ratio 10,000 / 100: {large / small:.2f}")
    print(f"  browser console errors: {len(errors)}")
    for error in errors:
        print(f"    {error}")


if __name__ == "__main__":
    main()
