"""The service faults of the ad, email, recommendation and catalog services, switched by feature flags.

First each fault against its service's code with a flag file installed in this process, then each one
against a real `boutique up`: the flag is turned on, the shop is browsed (or ordered from), the evidence
is read back from the observatory (flagged spans, their attributes and durations, memory in /api/mesh),
and after the reset the shop is back to normal and no flagged span appears any more.
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import psutil
import pytest
from opentelemetry.sdk.trace import ReadableSpan

from boutique.flags import FlagFile
from boutique.mesh.flags import flags
from boutique.observatory.ui.mesh_wire import parse_memory
from boutique.shop.ad.faults import AD_FAILURE, AD_HIGH_CPU, AD_MANUAL_GC, AdFaults
from boutique.shop.ad.service import AdService
from boutique.shop.email.leak import EMAIL_MEMORY_LEAK, ConfirmationLeak, Hoard
from boutique.shop.errors import Reason, ShopError, Unavailable
from boutique.shop.productcatalog.faults import PRODUCT_CATALOG_DB_LOCK, PRODUCT_CATALOG_FAILURE
from boutique.shop.productcatalog.service import CatalogService, load_products
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.recommendation.cache import RECOMMENDATION_CACHE_FAILURE, GrowingCache
from boutique.shop.recommendation.service import RecommendationService
from tests.e2e.harness import Up, eventually
from tests.faults.orders import checkout_form
from tests.flags.support import (
    mesh_status,
    now_us,
    reset_flags,
    set_flag,
    spans_of,
    tag,
    traces,
)
from tests.ui.chrome import CHROMEDRIVER, CHROMIUM, MISSING, chrome_driver

FAILING_PRODUCT = "OLJCESPC7Z"
OTHER_PRODUCTS = ("66VCHSJNUP", "1YMWWN1N4O", "L9ECAV7KIM", "2ZYFJ3GM2N", "0PUK6V6EV0")


# ---- in this process: the service code with a flag file installed ------------------------------------


def switch_here(
    file: FlagFile, flag: str, variant: str, reads: Callable[[], object], expected: object
) -> None:
    """Set `flag` in the file and wait until this process's evaluation reads `expected`."""
    file.set(flag, variant, by="test")
    eventually(lambda: reads() == expected, f"{flag}={variant} to be read", timeout=10, every=0.05)


def test_ad_failure_fails_about_one_call_in_ten_with_a_reason(flag_file: FlagFile, spans: Any) -> None:
    import random

    tracer, exporter = spans
    service = AdService(faults=AdFaults(random.Random(7)))
    assert all(asyncio.run(service.get_ads(["kitchen"])) for _ in range(50)), "no failure while off"
    switch_here(flag_file, AD_FAILURE, "on", lambda: flags().boolean(AD_FAILURE), True)
    failures: list[Unavailable] = []
    for _ in range(400):
        with tracer.start_as_current_span("GetAds"):
            try:
                asyncio.run(service.get_ads(["kitchen"]))
            except Unavailable as exc:
                failures.append(exc)
    print(f"\nadFailure: {len(failures)} of 400 calls failed")
    assert 20 <= len(failures) <= 60  # one in ten, from a seeded generator
    failure = failures[0]
    assert failure.grpc_code is grpc.StatusCode.UNAVAILABLE
    assert failure.reason == Reason.FAULT_INJECTED and failure.failure.metadata == {"flag": AD_FAILURE}
    assert failure.public_message == "ads are unavailable right now"
    assert not failure.dependency_path, "the ad service's own failure, not a dependency's"
    recorded: list[ReadableSpan] = exporter.get_finished_spans()
    assert all(span.attributes["feature_flag.key"] == AD_FAILURE for span in recorded)


async def test_the_burner_and_the_heap_go_away_when_their_flags_go_off(
    flag_file: FlagFile, spans: Any
) -> None:
    tracer, exporter = spans
    faults = AdFaults(heap_records=20_000)
    await asyncio.to_thread(
        switch_here, flag_file, AD_HIGH_CPU, "on", lambda: flags().boolean(AD_HIGH_CPU), True
    )
    await asyncio.to_thread(
        switch_here, flag_file, AD_MANUAL_GC, "on", lambda: flags().boolean(AD_MANUAL_GC), True
    )
    with tracer.start_as_current_span("GetAds"):
        faults.apply()
    attributes = exporter.get_finished_spans()[-1].attributes
    assert attributes["app.cpu.burn_ms"] > 0 and attributes["app.gc.pause_ms"] > 0
    assert faults.burner.running and faults.heap.holding
    flag_file.reset(by="test")
    # No call comes: the watches notice the flags are off on their own.
    for _ in range(100):
        if not faults.burner.running and not faults.heap.holding:
            break
        await asyncio.sleep(0.1)
    assert not faults.burner.running, "the burner thread still runs with adHighCpu off"
    assert not faults.heap.holding, "the heap is still held with adManualGc off"


def test_the_hoard_keeps_real_copies_up_to_its_limit_and_frees_them() -> None:
    hoard = Hoard(block_bytes=1024)
    assert hoard.keep(b"x" * 300, 10, limit=10_000) == 3000 and hoard.size == 3000
    assert hoard.keep(b"y" * 300, 100, limit=4000) == 1000 and hoard.size == 4000  # stops at the limit
    assert hoard.keep(b"z", 5, limit=4000) == 0
    assert hoard.release() == 4000 and hoard.size == 0


def test_the_email_leak_keeps_factor_copies_caps_and_lets_go(flag_file: FlagFile, spans: Any) -> None:
    tracer, exporter = spans
    leak = ConfirmationLeak(cap_bytes=500_000)
    html = "<p>your order</p>" * 100
    leak.confirmation_sent(html)
    assert leak.size == 0, "nothing kept while the flag is off"
    switch_here(flag_file, EMAIL_MEMORY_LEAK, "100x", ConfirmationLeak.factor, 100)
    with tracer.start_as_current_span("SendOrderConfirmation"):
        leak.confirmation_sent(html)
    assert leak.size == 100 * len(html)
    attributes = exporter.get_finished_spans()[-1].attributes
    assert attributes["feature_flag.key"] == EMAIL_MEMORY_LEAK
    assert attributes["app.email.leak_factor"] == 100 and attributes["app.email.leaked_bytes"] == leak.size
    for _ in range(5):
        leak.confirmation_sent(html)
    assert leak.size == 500_000, "the cap holds"
    flag_file.reset(by="test")
    eventually(lambda: ConfirmationLeak.factor() == 0, "the flag to be off", timeout=10, every=0.05)
    leak.confirmation_sent(html)
    assert leak.size == 0


class _Catalog:
    """A catalog of the shipped products that counts how often it is asked."""

    def __init__(self) -> None:
        self.calls = 0
        self.products = [pb.Product(id=p.id) for p in load_products()]

    async def list_products(self) -> list[pb.Product]:
        self.calls += 1
        return list(self.products)


def test_the_recommendation_cache_grows_on_misses_and_empties_when_off(
    flag_file: FlagFile, spans: Any
) -> None:
    import random

    tracer, exporter = spans
    catalog = _Catalog()
    service = RecommendationService(catalog, cache=GrowingCache(random.Random(3), max_entries=100_000))
    switch_here(
        flag_file,
        RECOMMENDATION_CACHE_FAILURE,
        "on",
        lambda: flags().boolean(RECOMMENDATION_CACHE_FAILURE),
        True,
    )
    sizes = []
    for _ in range(40):
        with tracer.start_as_current_span("ListRecommendations"):
            chosen = asyncio.run(service.list_recommendations("u", [FAILING_PRODUCT]))
        assert len(chosen) == 5 and len(set(chosen)) == 5 and FAILING_PRODUCT not in chosen
        sizes.append(exporter.get_finished_spans()[-1].attributes["app.recommendation.cache_size"])
    print(f"\ncache sizes: {sizes}")
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1] == 100_000, "grows on misses, up to the cap"
    assert catalog.calls < 40, "hits are answered from the cache"
    flag_file.reset(by="test")
    eventually(
        lambda: not flags().boolean(RECOMMENDATION_CACHE_FAILURE),
        "the flag to be off",
        timeout=10,
        every=0.05,
    )
    asyncio.run(service.list_recommendations("u", []))
    assert service.cache.ids == []


async def test_the_catalog_fails_only_the_targeted_product_and_queues_calls_on_its_lock(
    flag_file: FlagFile, spans: Any
) -> None:
    tracer, exporter = spans
    catalog = CatalogService(load_products())
    await asyncio.to_thread(
        switch_here,
        flag_file,
        PRODUCT_CATALOG_FAILURE,
        "on",
        lambda: flags().boolean(PRODUCT_CATALOG_FAILURE, product_id=FAILING_PRODUCT),
        True,
    )
    with pytest.raises(ShopError) as failed:
        await catalog.get_product(FAILING_PRODUCT)
    assert failed.value.grpc_code is grpc.StatusCode.INTERNAL and failed.value.reason == Reason.FAULT_INJECTED
    assert FAILING_PRODUCT in failed.value.public_message
    assert all([(await catalog.get_product(p)).id == p for p in OTHER_PRODUCTS])

    await asyncio.to_thread(
        switch_here,
        flag_file,
        PRODUCT_CATALOG_DB_LOCK,
        "50ms",
        lambda: flags().number(PRODUCT_CATALOG_DB_LOCK),
        50,
    )

    async def call(number: int) -> None:
        with tracer.start_as_current_span(f"GetProduct {number}"):
            await catalog.get_product(OTHER_PRODUCTS[number % len(OTHER_PRODUCTS)])

    await asyncio.gather(*(call(n) for n in range(5)))
    recorded = sorted(exporter.get_finished_spans(), key=lambda s: s.attributes["app.lock.waited_behind"])
    assert [s.attributes["app.lock.waited_behind"] for s in recorded] == [0, 1, 2, 3, 4]
    waits = [s.attributes["app.lock.wait_ms"] for s in recorded]
    print(f"\nwaits behind the lock (ms): {[round(w) for w in waits]}")
    assert waits == sorted(waits) and waits[-1] > waits[0], "a staircase: each waits for those ahead"


def test_the_mesh_page_reads_process_memory_from_the_status_document() -> None:
    assert parse_memory({"process": {"pid": 1, "rss_bytes": 123456}}) == 123456
    assert parse_memory({"dependencies": []}) is None
    assert parse_memory({"process": {"rss_bytes": "lots"}}) is None
    assert parse_memory({"process": {"rss_bytes": -1}}) is None


# ---- against a real `boutique up` ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def up(shop: Up) -> Iterator[Up]:
    """The flag modules' shared shop, with every flag as shipped before and after this module."""
    reset_flags(shop)
    yield shop
    reset_flags(shop)


def changes_taken(up: Up, service: str, flag: str) -> int:
    """How many changes of `flag` the service's process has logged taking."""
    path = up.data_dir / "logs" / f"{service}-0.log"
    count = 0
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{") and "flags: changed" in line:
            event = json.loads(line).get("event", "")
            count += flag in event.removeprefix("flags: changed ").split(", ")
    return count


def switch(up: Up, service: str, flag: str, variant: str | None) -> int:
    """Set `flag` (None: reset every flag) and wait until `service` took it; the time (µs) it did."""
    before = changes_taken(up, service, flag)
    if variant is None:
        reset_flags(up)
    else:
        set_flag(up, flag, variant)
    eventually(lambda: changes_taken(up, service, flag) > before, f"{service} to take {flag}", timeout=20)
    return now_us()


def browse(up: Up, paths: list[str], workers: int = 3) -> list[int]:
    """GET each path (spread over `workers` shoppers); the status codes."""
    codes: list[int] = []
    lock = threading.Lock()

    def shopper(mine: list[str]) -> None:
        with httpx.Client(base_url=up.url, timeout=30) as client:
            for path in mine:
                code = client.get(path).status_code
                with lock:
                    codes.append(code)

    threads = [threading.Thread(target=shopper, args=(paths[n::workers],)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return codes


def product_pages(count: int) -> list[str]:
    """Product pages of every product but the failing one, round-robin."""
    return [f"/product/{OTHER_PRODUCTS[n % len(OTHER_PRODUCTS)]}" for n in range(count)]


def server_spans(up: Up, service: str, operation: str, since_us: int, limit: int = 200) -> list[dict]:
    """The service's server spans of `operation` since `since_us` (Jaeger JSON)."""
    found = []
    for trace in traces(up, service, since_us=since_us, limit=limit):
        found += [s for s in spans_of(trace, service) if s["operationName"].endswith(operation)]
    return found


def flagged(up: Up, service: str, flag: str, since_us: int, attribute: str = "") -> list[dict]:
    """Spans of `service` that recorded `flag` since `since_us` (and carry `attribute`, when given)."""
    found = []
    for trace in traces(up, service, {"feature_flag.key": flag}, since_us, limit=500):
        found += [s for s in spans_of(trace, service) if tag(s, "feature_flag.key") == flag]
    return [s for s in found if not attribute or tag(s, attribute) is not None]


def is_error(span: dict) -> bool:
    """Whether the span's status is ERROR."""
    return tag(span, "error") is True or tag(span, "otel.status_code") == "ERROR"


def median_ms(spans: list[dict]) -> float:
    """The median duration of these spans in ms."""
    return statistics.median(s["duration"] for s in spans) / 1000


def rss(up: Up, service: str) -> int:
    """The service's resident memory as the observatory's /api/mesh reports it (0 when not yet)."""
    for process in mesh_status(up)["processes"]:
        if process["service"] == service:
            return int(process.get("rss_bytes") or 0)
    return 0


def pid(up: Up, service: str) -> int:
    """The pid of the service's only process."""
    return int(next(p["pid"] for p in up.state()["processes"] if p["service"] == service))


def assert_quiet_after_reset(
    up: Up, service: str, flag: str, reset_at: int, drive: Callable[[], Any]
) -> None:
    """After the reset, new calls reach the observatory and none of them recorded the flag."""
    operation_spans: list[dict] = []

    def fresh_spans() -> list[dict]:
        drive()
        operation_spans[:] = [s for t in traces(up, service, since_us=reset_at) for s in spans_of(t, service)]
        return operation_spans

    eventually(fresh_spans, f"{service} spans after the reset", timeout=30, every=0.5)
    assert flagged(up, service, flag, reset_at) == [], f"{service} still records {flag} after the reset"


@pytest.mark.e2e
def test_mesh_status_and_the_observatory_report_each_process_memory(up: Up) -> None:
    process = next(p for p in up.state()["processes"] if p["service"] == "email")
    status = httpx.get(f"http://{process['metrics']}/mesh/status", timeout=5).json()
    assert status["process"]["pid"] == process["pid"]
    assert status["process"]["rss_bytes"] == pytest.approx(
        psutil.Process(process["pid"]).memory_info().rss, rel=0.2
    )
    snapshot = eventually(
        lambda: (
            (s := mesh_status(up)) and all(p.get("rss_bytes") for p in s["processes"] if p["metrics"]) and s
        ),
        "every process's memory in /api/mesh",
    )
    listed = {p["service"]: p["rss_bytes"] for p in snapshot["processes"]}
    print("\nRSS (MB): " + ", ".join(f"{k} {v / 2**20:.0f}" for k, v in sorted(listed.items())))
    assert {"ad", "email", "recommendation", "productcatalog", "frontend"} <= set(listed)


@pytest.mark.e2e
def test_the_mesh_page_shows_each_instance_memory(up: Up) -> None:
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip(MISSING)
    from selenium.webdriver.common.by import By

    driver = chrome_driver()
    try:
        driver.get(f"{up.state()['observatory_url']}/mesh")

        def shown() -> dict[str, str]:
            """Each service's first instance's Memory cell, once every one reads like "75 MB"."""
            cells = {}
            for section in driver.find_elements(By.CSS_SELECTOR, "section.mesh-service"):
                headers = [th.text.upper() for th in section.find_elements(By.CSS_SELECTOR, "thead th")]
                row = section.find_elements(By.CSS_SELECTOR, "tbody tr td")
                if row and "MEMORY (RSS)" in headers:
                    cells[section.get_attribute("data-service")] = row[headers.index("MEMORY (RSS)")].text
            readable = all(re.fullmatch(r"\d+(\.\d+)? (MB|GB)", text) for text in cells.values())
            return cells if len(cells) >= 10 and readable else {}

        cells = eventually(shown, "the memory of every instance on the Mesh page", timeout=30)
        print("\nMesh page memory: " + ", ".join(f"{k} {v}" for k, v in sorted(cells.items())))
        assert float(cells["email"].split()[0]) == pytest.approx(rss(up, "email") / 2**20, rel=0.25)
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
    finally:
        driver.quit()


@pytest.mark.e2e
def test_ad_failure_fails_some_ad_calls_with_error_spans_then_stops(up: Up) -> None:
    on_at = switch(up, "ad", AD_FAILURE, "on")

    def failed_spans() -> list[dict]:
        codes = browse(up, ["/"] * 10)
        assert set(codes) == {200}, "the home page does without ads (the house ad answers)"
        return [s for s in flagged(up, "ad", AD_FAILURE, on_at) if is_error(s)]

    failed = eventually(failed_spans, "an error span of GetAds carrying adFailure", timeout=60, every=0.5)
    everything = flagged(up, "ad", AD_FAILURE, on_at)
    print(f"\nadFailure: {len(failed)} error spans among {len(everything)} flagged GetAds spans")
    assert len(failed) < len(everything), "only some calls fail"
    assert all(s["operationName"].endswith("GetAds") for s in failed)
    assert all(tag(s, "rpc.grpc.status_code") == grpc.StatusCode.UNAVAILABLE.value[0] for s in failed)
    reset_at = switch(up, "ad", AD_FAILURE, None)
    assert_quiet_after_reset(up, "ad", AD_FAILURE, reset_at, lambda: browse(up, ["/"] * 6))


def cpu_seconds(process: psutil.Process, window: float = 1.0) -> float:
    """CPU seconds the process used over `window` seconds."""
    before = sum(process.cpu_times()[:2])
    time.sleep(window)
    return sum(process.cpu_times()[:2]) - before


@pytest.mark.e2e
def test_ad_high_cpu_burns_cpu_and_slows_ad_calls_until_off(up: Up) -> None:
    ad = psutil.Process(pid(up, "ad"))
    before_at = now_us()
    browse(up, ["/"] * 12)
    baseline = eventually(lambda: server_spans(up, "ad", "GetAds", before_at), "GetAds spans before the flag")
    idle_cpu = cpu_seconds(ad)
    on_at = switch(up, "ad", AD_HIGH_CPU, "on")
    hot = eventually(
        lambda: browse(up, ["/"] * 12) and flagged(up, "ad", AD_HIGH_CPU, on_at, "app.cpu.burn_ms"),
        "GetAds spans that burnt CPU",
    )
    burning_cpu = cpu_seconds(ad)
    ratio = median_ms(hot) / median_ms(baseline)
    print(
        f"\nadHighCpu: GetAds median {median_ms(baseline):.1f} ms -> {median_ms(hot):.1f} ms (x{ratio:.0f}); "
        f"ad CPU over 1 s idle {idle_cpu:.2f} s -> {burning_cpu:.2f} s"
    )
    assert median_ms(hot) > median_ms(baseline), "ad calls are slower while it burns CPU"
    assert burning_cpu > 3 * idle_cpu + 0.05, "the burner thread keeps the ad process busy between calls"
    switch(up, "ad", AD_HIGH_CPU, None)
    # Nothing is called now: the burner must stop on its own.
    after = eventually(lambda: (used := cpu_seconds(ad)) < burning_cpu / 3 and [used], "the burner to stop")
    print(f"adHighCpu off: ad CPU over 1 s idle {after[0]:.2f} s")
    reset_at = now_us()
    assert_quiet_after_reset(up, "ad", AD_HIGH_CPU, reset_at, lambda: browse(up, ["/"] * 6))


@pytest.mark.e2e
def test_ad_manual_gc_pauses_every_ad_call_and_records_the_pause(up: Up) -> None:
    before_at = now_us()
    browse(up, ["/"] * 12)
    baseline = eventually(lambda: server_spans(up, "ad", "GetAds", before_at), "GetAds spans before the flag")
    rss_before = rss(up, "ad")
    on_at = switch(up, "ad", AD_MANUAL_GC, "on")
    paused = eventually(
        lambda: (
            browse(up, ["/"] * 12)
            and len(found := flagged(up, "ad", AD_MANUAL_GC, on_at, "app.gc.pause_ms")) >= 5
            and found
        ),
        "GetAds spans with a collection's pause",
    )
    pauses = [float(tag(s, "app.gc.pause_ms")) for s in paused]
    rss_on = eventually(lambda: (value := rss(up, "ad")) > rss_before and value, "the ad heap in /api/mesh")
    print(
        f"\nadManualGc: pauses {statistics.median(pauses):.0f} ms median (max {max(pauses):.0f}); GetAds median "
        f"{median_ms(baseline):.1f} -> {median_ms(paused):.1f} ms; ad RSS {rss_before / 2**20:.0f} -> "
        f"{rss_on / 2**20:.0f} MB"
    )
    assert all(p > 0 for p in pauses)
    assert all(s["duration"] / 1000 >= float(tag(s, "app.gc.pause_ms")) for s in paused), (
        "the pause is in the call"
    )
    assert median_ms(paused) > median_ms(baseline)
    reset_at = switch(up, "ad", AD_MANUAL_GC, None)
    assert_quiet_after_reset(up, "ad", AD_MANUAL_GC, reset_at, lambda: browse(up, ["/"] * 6))


ORDER_ID = re.compile(r'<code class="order-id">([^<]+)</code>')


def place_order(up: Up, product: str) -> str:
    """Add a product to a fresh cart and check out; the order id."""
    with httpx.Client(base_url=up.url, timeout=30) as client:
        assert client.post("/cart", data={"product_id": product, "quantity": "1"}).status_code == 302
        cart = client.get("/cart")
        assert cart.status_code == 200
        order = client.post("/cart/checkout", data=checkout_form(cart.text))
        found = ORDER_ID.search(order.text)
        assert order.status_code == 200 and found, order.text[-1500:]
        return found.group(1)


@pytest.mark.e2e
def test_email_memory_leak_grows_the_email_process_until_the_flag_is_off(up: Up) -> None:
    rss_before = eventually(lambda: rss(up, "email"), "the email process's memory in /api/mesh")
    on_at = switch(up, "email", EMAIL_MEMORY_LEAK, "10000x")
    for product in OTHER_PRODUCTS[:3]:
        place_order(up, product)
    leaking = eventually(
        lambda: (
            len(found := flagged(up, "email", EMAIL_MEMORY_LEAK, on_at, "app.email.leaked_bytes")) >= 3
            and found
        ),
        "three confirmations kept in memory",
    )
    kept = max(int(tag(s, "app.email.leaked_bytes")) for s in leaking)
    assert all(tag(s, "app.email.leak_factor") == 10000 for s in leaking)
    grown = eventually(
        lambda: (value := rss(up, "email")) - rss_before >= kept * 0.8 and value,
        "the email process's memory to grow by what it keeps",
    )
    print(
        f"\nemailMemoryLeak 10000x: {kept / 2**20:.0f} MB kept after 3 orders; email RSS "
        f"{rss_before / 2**20:.0f} -> {grown / 2**20:.0f} MB (/api/mesh)"
    )
    switch(up, "email", EMAIL_MEMORY_LEAK, None)
    released = eventually(
        lambda: (value := rss(up, "email")) < grown - kept * 0.8 and value,
        "the email process to give the memory back (no order needed)",
    )
    print(f"emailMemoryLeak off: email RSS {released / 2**20:.0f} MB")
    reset_at = now_us()
    assert_quiet_after_reset(
        up, "email", EMAIL_MEMORY_LEAK, reset_at, lambda: place_order(up, OTHER_PRODUCTS[0])
    )


@pytest.mark.e2e
def test_recommendation_cache_failure_grows_the_cache_and_the_latency(up: Up) -> None:
    on_at = switch(up, "recommendation", RECOMMENDATION_CACHE_FAILURE, "on")

    def grown_cache() -> list[dict]:
        browse(up, product_pages(12), workers=2)
        found = flagged(
            up, "recommendation", RECOMMENDATION_CACHE_FAILURE, on_at, "app.recommendation.cache_size"
        )
        largest = max((int(tag(s, "app.recommendation.cache_size")) for s in found), default=0)
        return found if largest >= 1_000_000 else []

    cached = sorted(
        eventually(grown_cache, "the cache to pass a million ids", timeout=90, every=0.1),
        key=lambda s: int(tag(s, "app.recommendation.cache_size")),
    )
    small = [s for s in cached if int(tag(s, "app.recommendation.cache_size")) < 10_000]
    large = [s for s in cached if int(tag(s, "app.recommendation.cache_size")) >= 1_000_000]
    sizes = [int(tag(s, "app.recommendation.cache_size")) for s in cached]
    print(
        f"\nrecommendationCacheFailure: cache {sizes[0]} -> {sizes[-1]} ids over {len(cached)} calls; "
        f"ListRecommendations median {median_ms(small):.1f} ms (< 10k ids) -> {median_ms(large):.1f} ms (>= 1M); "
        f"recommendation RSS {rss(up, 'recommendation') / 2**20:.0f} MB"
    )
    assert small and large and median_ms(large) > median_ms(small), "scanning a larger cache takes longer"
    reset_at = switch(up, "recommendation", RECOMMENDATION_CACHE_FAILURE, None)
    assert_quiet_after_reset(
        up, "recommendation", RECOMMENDATION_CACHE_FAILURE, reset_at, lambda: browse(up, product_pages(4))
    )
    after = [
        s for t in traces(up, "recommendation", since_us=reset_at) for s in spans_of(t, "recommendation")
    ]
    assert all(tag(s, "app.recommendation.cache_size") is None for s in after)


@pytest.mark.e2e
def test_product_catalog_failure_fails_only_its_product_page(up: Up) -> None:
    on_at = switch(up, "productcatalog", PRODUCT_CATALOG_FAILURE, "on")
    with httpx.Client(base_url=up.url, timeout=30) as client:
        failing = client.get(f"/product/{FAILING_PRODUCT}")
        others = [client.get(f"/product/{p}").status_code for p in OTHER_PRODUCTS]
    assert failing.status_code == 502, failing.text[-1500:]
    assert "productcatalog" in failing.text and f"product {FAILING_PRODUCT} cannot be shown" in failing.text
    assert others == [200] * len(OTHER_PRODUCTS)
    failed = eventually(
        lambda: flagged(up, "productcatalog", PRODUCT_CATALOG_FAILURE, on_at), "the failed GetProduct span"
    )
    assert all(is_error(s) and s["operationName"].endswith("GetProduct") for s in failed)
    reset_at = switch(up, "productcatalog", PRODUCT_CATALOG_FAILURE, None)
    assert httpx.get(f"{up.url}/product/{FAILING_PRODUCT}", timeout=30).status_code == 200
    assert_quiet_after_reset(
        up,
        "productcatalog",
        PRODUCT_CATALOG_FAILURE,
        reset_at,
        lambda: browse(up, [f"/product/{FAILING_PRODUCT}"]),
    )


@pytest.mark.e2e
def test_product_catalog_db_lock_queues_concurrent_calls_behind_one_lock(up: Up) -> None:
    on_at = switch(up, "productcatalog", PRODUCT_CATALOG_DB_LOCK, "50ms")

    def queued() -> list[dict]:
        browse(up, product_pages(6), workers=3)
        found = flagged(up, "productcatalog", PRODUCT_CATALOG_DB_LOCK, on_at, "app.lock.waited_behind")
        return found if max((int(tag(s, "app.lock.waited_behind")) for s in found), default=0) >= 3 else []

    locked = eventually(queued, "calls queued three deep behind the lock")
    by_depth: dict[int, list[float]] = {}
    for span in locked:
        by_depth.setdefault(int(tag(span, "app.lock.waited_behind")), []).append(
            float(tag(span, "app.lock.wait_ms"))
        )
    waits = {depth: statistics.median(values) for depth, values in sorted(by_depth.items())}
    print(
        "\nproductCatalogDbLock 50ms: median wait by calls ahead: "
        + ", ".join(f"{d}: {w:.0f} ms" for d, w in waits.items())
    )
    deep = [w for d, w in waits.items() if d >= 2]
    assert waits.get(0, 0.0) < min(deep), "a call waits longer the more calls are ahead of it"
    queries = [
        s
        for t in traces(up, "productcatalog", since_us=on_at)
        for s in spans_of(t, "productcatalog")
        if s["operationName"] == "db.query"
    ]
    assert queries and {tag(s, "db.operation.name") for s in queries} >= {"GetProduct", "ListProducts"}
    reset_at = switch(up, "productcatalog", PRODUCT_CATALOG_DB_LOCK, None)
    assert_quiet_after_reset(
        up, "productcatalog", PRODUCT_CATALOG_DB_LOCK, reset_at, lambda: browse(up, product_pages(3))
    )
