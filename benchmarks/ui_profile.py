"""How long the Profiles page takes to draw the flame graph of a 100,000-sample profile, against a 1,000-sample one.

Builds a store in a temporary directory holding two services' CPU profiles, appended as `ProfileBatch`es
straight to a `DuckDBStore`: "large" with 100,000 samples and "small" with 1,000, both drawn from one
pool of distinct stacks 20 to 60 frames deep (a synthetic program of a few hundred functions calling one
another; some stacks far more often than others, as in a real profile). Starts a `boutique observatory`
process on the store, times the API alone (`GET /api/profiles` and `/api/profiles/top`, as the page asks
them), then loads each service's page in headless Chromium `--runs` times, interleaved, after one
warm-up load each. "Drawn" is the moment the page's script has painted the flame graph (it sets
`data-ready` and records `performance.now()`, milliseconds since navigation started). Prints the medians,
where the browser's time went, how many frames the canvas drew of how many, and the ratio 100,000 / 1,000.
Usage: python benchmarks/ui_profile.py [--runs 7] [--port 0]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for the test helpers below

from boutique.observatory.profiles.model import frame_label
from boutique.observatory.store.duckdb_store import DuckDBStore
from tests.observatory.process import start_observatory
from tests.observatory.profile_builders import BatchRow, profile_batch
from tests.ui.chrome import chrome_driver

SIZES = {"small": 1_000, "large": 100_000}  # service → samples
STACKS = 20_000  # distinct stacks in the pool the samples are drawn from
FUNCTIONS = 600
SAMPLE_NS = 10_000_000  # one sample at 100 Hz


class Program:
    """A synthetic program: functions in modules, each calling a few others at fixed lines.

    A stack is one of the program's entry paths (`main` → `serve` → `dispatch` → a handler's fixed chain
    of 15 to 45 calls, as a framework's frames are) and a tail of 2 to 12 calls that varies (what the
    handler happened to be running): 20 to 60 frames. With `branchy`, every call of every stack varies
    instead: the worst case, where nearly every sample adds frames of its own to the tree.
    """

    def __init__(self, rng: random.Random, branchy: bool) -> None:
        self.rng = rng
        self.branchy = branchy
        self.names = [f"mod{i % 60}.Worker{i % 7}.step_{i}" for i in range(FUNCTIONS)]
        self.files = [f"app/pkg{i % 12}/mod{i % 60}.py" for i in range(FUNCTIONS)]
        self.callees = [rng.sample(range(3, FUNCTIONS), rng.randint(2, 6)) for _ in range(FUNCTIONS)]
        self.lines = [[rng.randint(10, 900) for _ in callees] for callees in self.callees]
        self.entries = [
            [0, 1, 2, *self.walk(rng.randrange(3, FUNCTIONS), rng.randint(15, 45), 50.0)] for _ in range(40)
        ]

    def walk(self, function: int, calls: int, bias: float) -> list[int]:
        """`calls` functions from `function` down, each a callee of the one before (the first callees
        more often, the more so the larger `bias`)."""
        out = []
        for _ in range(calls):
            out.append(function)
            choices = self.callees[function]
            function = choices[min(int(self.rng.expovariate(bias)), len(choices) - 1)]
        return out

    def stack(self) -> tuple[str, ...]:
        """One stack's frame labels, root first."""
        if self.branchy:
            functions = self.walk(0, self.rng.randint(20, 60), 1.2)
        else:
            entry = self.rng.choice(self.entries)
            functions = [*entry, *self.walk(self.callees[entry[-1]][0], self.rng.randint(2, 12), 0.8)]
        frames = []
        for caller, callee in zip(functions, [*functions[1:], -1], strict=True):
            calls = self.callees[caller]  # the line a frame runs: where it calls the next, else its own
            line = self.lines[caller][calls.index(callee)] if callee in calls else 5 + caller % 40
            frames.append(frame_label(self.names[caller], self.files[caller], line))
        return tuple(frames)


def build_store(path: Path, now_us: int, branchy: bool) -> None:
    """The store with both services' profiles (30 minutes of samples ending a minute ago)."""
    rng = random.Random(18)
    program = Program(rng, branchy)
    pool = list(dict.fromkeys(program.stack() for _ in range(STACKS)))
    weights = [1 / (rank + 1) ** 0.7 for rank in range(len(pool))]
    store = DuckDBStore(path)
    try:
        for service, samples in SIZES.items():
            first_us = now_us - 31 * 60_000_000
            batch = profile_batch(
                BatchRow(
                    frames, SAMPLE_NS, first_us + index * 30 * 60_000_000 // samples, service, f"{service}-1"
                )
                for index, frames in enumerate(rng.choices(pool, weights, k=samples))
            )
            store.append(batch)
            print(f"  {service}: {samples:,} samples of {len(batch.stacks):,} distinct stacks stored")
    finally:
        store.close()


def browser() -> Any:
    """Headless Chromium through Selenium (the same settings as the UI tests)."""
    try:
        return chrome_driver(page_load_timeout=120)
    except RuntimeError as exc:
        raise SystemExit(f"needs chromium: {exc}") from exc


def drawn_ms(driver: Any, url: str) -> dict[str, float]:
    """Load the page; milliseconds from navigation start until the flame graph was painted, and the
    script's own timings (fetch, flatten, paint) and counts (nodes, frames drawn)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#profile[data-ready]"))
    found = driver.execute_script(
        "return {drawn: window.profileDrawnAt, frames: Number(document.getElementById('profile').dataset.frames),"
        " ...window.profileTimings}"
    )
    if not found.get("frames"):
        raise SystemExit(f"no flame graph was drawn at {url}")
    return {key: float(value) for key, value in found.items()}


def api_ms(query_url: str, path: str, params: dict[str, str]) -> tuple[float, int]:
    """One API call: milliseconds until its whole answer was read, and the answer's size in bytes."""
    began = time.perf_counter()
    answer = httpx.get(f"{query_url}{path}", params=params, timeout=120)
    elapsed = (time.perf_counter() - began) * 1000
    answer.raise_for_status()
    return elapsed, len(answer.content)


def main() -> None:
    """Run the benchmark and print the medians and their ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="page loads per profile (after one warm-up each)")
    parser.add_argument(
        "--port", type=int, default=0, help="first of four ports for the observatory (0: free)"
    )
    parser.add_argument(
        "--branchy", action="store_true", help="the worst case: every call of every stack varies"
    )
    args = parser.parse_args()
    ports = [str(args.port + i if args.port else 0) for i in range(4)]
    options = ("--port", "--otlp-grpc-port", "--otlp-http-port", "--zipkin-port")
    api: dict[str, dict[str, list[float]]] = {s: {"tree": [], "top": []} for s in SIZES}
    size: dict[str, int] = {}
    runs: dict[str, list[dict[str, float]]] = {s: [] for s in SIZES}
    with tempfile.TemporaryDirectory(prefix="ui-profile-bench-") as folder:
        data = Path(folder) / "data"
        data.mkdir()
        now_us = time.time_ns() // 1000
        print("building the store:")
        build_store(data / "observatory.duckdb", now_us, args.branchy)
        observatory = start_observatory(data, *(x for pair in zip(options, ports, strict=True) for x in pair))
        driver = None
        try:
            window = {"start": str(now_us - 3_600_000_000), "end": str(now_us)}
            for _ in range(args.runs):
                for service in SIZES:
                    params = {"service": service, "type": "cpu", **window}
                    took, size[service] = api_ms(observatory.query_url, "/api/profiles", params)
                    api[service]["tree"].append(took)
                    took, _ = api_ms(observatory.query_url, "/api/profiles/top", {**params, "limit": "50"})
                    api[service]["top"].append(took)
            pages = {
                s: f"{observatory.query_url}/profiles?{urlencode({'service': s, **window})}" for s in SIZES
            }
            driver = browser()
            for url in pages.values():  # warm-up: static files cached, Chromium started
                drawn_ms(driver, url)
            for _ in range(args.runs):
                for service, url in pages.items():
                    runs[service].append(drawn_ms(driver, url))
            errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        finally:
            if driver is not None:
                driver.quit()
            observatory.stop()

    def median(service: str, key: str) -> float:
        """The median over the page loads of one of the page's numbers."""
        if key == "own":  # the page's own time: navigation to drawn, less waiting for the API
            return statistics.median(run["drawn"] - run["fetch"] for run in runs[service])
        return statistics.median(run[key] for run in runs[service])

    print(f"Profiles page, navigation → flame graph drawn, median of {args.runs} loads each:")
    for service, samples in SIZES.items():
        tree, top = (statistics.median(api[service][key]) for key in ("tree", "top"))
        loads = ", ".join(f"{run['drawn']:.0f}" for run in runs[service])
        print(
            f"  {samples:>7,} samples: {median(service, 'drawn'):7.1f} ms in the browser, of which"
            f" {median(service, 'fetch'):7.1f} waiting for the API and {median(service, 'own'):6.1f} the page's own"
            f" (flatten {median(service, 'flatten'):5.1f}, paint {median(service, 'paint'):5.1f});"
            f" {median(service, 'frames'):,.0f} of {median(service, 'nodes'):,.0f} frames drawn"
        )
        print(
            f"{'':19}API alone: tree {tree:7.1f} ms ({size[service] / 1024:,.0f} KiB of JSON), top {top:6.1f} ms;"
            f" loads: {loads} ms"
        )
    small, large = SIZES
    ratio = {key: median(large, key) / median(small, key) for key in ("drawn", "own", "paint")}
    trees = [statistics.median(api[service]["tree"]) for service in SIZES]
    print(
        f"  ratio 100,000 / 1,000: {ratio['drawn']:.2f} in the browser (the page's own work {ratio['own']:.2f},"
        f" the paint {ratio['paint']:.2f}), {trees[1] / trees[0]:.2f} for the tree API alone"
    )
    print(f"  browser console errors: {len(errors)}")
    for error in errors:
        print(f"    {error}")


if __name__ == "__main__":
    main()
