"""The traffic a scenario drives itself: a small pool of async shoppers, and a tally of what they got.

Each shopper is one HTTP client (its own cookies, so its own cart) that browses, adds to its cart and
checks out with the forms a browser sends. Every request starts a fresh sampled trace (a W3C
`traceparent`), so every page a shopper saw is in the observatory whatever the sampler says.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import ssl
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Literal

import httpx

Mix = Literal["browse", "checkout", "flood"]


@dataclass(frozen=True)
class Traffic:
    """The shoppers the scenario runs: how many, what they do, and how long each waits between rounds."""

    shoppers: int = 4
    mix: Mix = "browse"
    pause: float = 0.2


SHED_HEADER = "x-boutique-shed"
PRODUCT_LINK = re.compile(r'href="/product/([A-Za-z0-9]+)"')
ORDER_KEY = re.compile(r'name="order_key" value="([^"]+)"')
ORDER_ID = re.compile(r'class="order-id"')
UNKNOWN_OUTCOME = re.compile(r'data-outcome="(unknown|unreachable)"')
INPUT = re.compile(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"')
CURRENCIES = ("EUR", "GBP", "JPY", "CAD")  # each shopper picks one: prices are converted on every page
FALLBACK_PRODUCTS = ("OLJCESPC7Z", "66VCHSJNUP", "1YMWWN1N4O", "L9ECAV7KIM", "2ZYFJ3GM2N", "0PUK6V6EV0")


@dataclass
class Tally:
    """What every shopper got, counted by page: answers, errors, shed pages and checkout outcomes."""

    pages: Counter[str] = field(default_factory=Counter)  # "home 200", "product 503", ...
    orders: Counter[str] = field(default_factory=Counter)  # placed / failed / unknown
    shed: int = 0
    recent: deque[float] = field(default_factory=deque)  # monotonic times of the last seconds' answers
    began: float = field(default_factory=time.monotonic)

    def record(self, page: str, status: int, shed: bool = False) -> None:
        """Count one answer (status 0: none came)."""
        self.pages[f"{page} {status}"] += 1
        self.shed += shed
        self.recent.append(time.monotonic())

    @property
    def requests(self) -> int:
        """Answers (and failures to answer) so far."""
        return sum(self.pages.values())

    @property
    def errors(self) -> int:
        """Requests answered with a 5xx, or not at all."""
        return sum(count for key, count in self.pages.items() if _failed(int(key.rsplit(" ", 1)[1])))

    def of(self, page: str) -> tuple[int, int]:
        """(requests, errors) of one kind of page."""
        total = failed = 0
        for key, count in self.pages.items():
            name, status = key.rsplit(" ", 1)
            if name == page:
                total += count
                failed += count if _failed(int(status)) else 0
        return total, failed

    def rate(self, window: float = 2.0) -> float:
        """Requests per second over the last `window` seconds."""
        now = time.monotonic()
        while self.recent and self.recent[0] < now - window:
            self.recent.popleft()
        return len(self.recent) / min(window, max(now - self.began, 1e-3))

    def line(self) -> str:
        """One progress line: rate, errors, shed pages and orders."""
        errors = self.errors
        share = f" ({100 * errors / self.requests:.0f}%)" if self.requests else ""
        parts = [f"{self.rate():5.1f} req/s", f"{self.requests} requests", f"{errors} errors{share}"]
        if self.shed:
            parts.append(f"{self.shed} shed")
        if self.orders:
            parts.append(
                " / ".join(f"{n} {outcome}" for outcome, n in sorted(self.orders.items())) + " orders"
            )
        return ", ".join(parts)

    def summary(self) -> list[str]:
        """Answers by page and status, most frequent first."""
        return [f"{count:6d} x {key}" for key, count in self.pages.most_common()]


def _failed(status: int) -> bool:
    return status == 0 or status >= 500


def _seconds(text: str | None) -> float:
    """A Retry-After value in seconds (0 when absent or not a number)."""
    try:
        return max(0.0, float(text or 0))
    except ValueError:
        return 0.0


def traceparent() -> str:
    """A fresh sampled W3C traceparent: the request starts its own trace."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def checkout_form(page: str) -> dict[str, str] | None:
    """The cart page's checkout form as a browser sends it (prefilled values), or None without one."""
    if not ORDER_KEY.search(page):
        return None
    fields = dict(INPUT.findall(page))
    for name in ("credit_card_expiration_month", "credit_card_expiration_year"):
        chosen = re.search(rf'<select[^>]*name="{name}".*?<option value="([^"]+)"[^>]*selected', page, re.S)
        if chosen:
            fields[name] = chosen.group(1)
    return fields


def order_outcome(response: httpx.Response) -> str:
    """placed, failed or unknown: what the checkout answer told the shopper."""
    if response.status_code == 200 and ORDER_ID.search(response.text):
        return "placed"
    if UNKNOWN_OUTCOME.search(response.text) or response.status_code == 504:
        return "unknown"
    return "failed"


class Shoppers:
    """`traffic.shoppers` async shoppers against `base_url` until stopped, all counted in one tally."""

    def __init__(self, base_url: str, traffic: Traffic, timeout: float = 15.0) -> None:
        self.base_url = base_url
        self.traffic = traffic
        self.timeout = timeout
        self.tally = Tally()
        self.products: list[str] = list(FALLBACK_PRODUCTS)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Each shopper has its own small pool (one shared pool costs time in the number of connections per
        # request) and its own cookies, so its own cart; one TLS context serves them all, since making one
        # per client costs ~50 ms, which would stall a flood's start.
        self._tls = ssl.create_default_context()

    def start(self) -> None:
        """Start every shopper."""
        self._tasks = [
            asyncio.create_task(self._shopper(number), name=f"shopper {number}")
            for number in range(self.traffic.shoppers)
        ]

    async def stop(self) -> None:
        """Stop every shopper; a request in flight is abandoned."""
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _get(self, client: httpx.AsyncClient, page: str, method: str, path: str, **kw: object) -> str:
        """One traced request, counted; the body ('' when none came)."""
        try:
            response = await client.request(method, path, headers={"traceparent": traceparent()}, **kw)  # type: ignore[arg-type]
        except httpx.HTTPError:
            self.tally.record(page, 0)
            return ""
        shed = response.status_code == 503 and SHED_HEADER in response.headers
        self.tally.record(page, response.status_code, shed)
        if shed:  # a polite client waits as told (at most a second here) before it asks again
            await asyncio.sleep(min(1.0, _seconds(response.headers.get("retry-after"))))
        if page == "checkout":
            self.tally.orders[order_outcome(response)] += 1
        return response.text if response.status_code < 400 else ""

    async def _shopper(self, number: int) -> None:
        limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)
        async with httpx.AsyncClient(
            base_url=self.base_url, timeout=self.timeout, limits=limits, verify=self._tls, trust_env=False
        ) as client:
            round_ = 0
            while not self._stop.is_set():
                await self._round(client, number, round_)
                round_ += 1
                if self.traffic.pause:
                    await asyncio.sleep(self.traffic.pause)

    async def _round(self, client: httpx.AsyncClient, number: int, round_: int) -> None:
        """One round of the traffic's mix: flood (the home page), browse (home and a product page) or
        checkout (a product into the cart, then the order; home and product page on the first round)."""
        mix = self.traffic.mix
        product = self.products[(number + round_) % len(self.products)]
        if mix == "flood":
            await self._get(client, "home", "GET", "/")
            return
        if round_ == 0:
            currency = CURRENCIES[number % len(CURRENCIES)]
            await self._get(client, "set currency", "POST", "/setCurrency", data={"currency_code": currency})
        if mix == "browse" or round_ == 0:
            home = await self._get(client, "home", "GET", "/")
            found = list(dict.fromkeys(PRODUCT_LINK.findall(home)))
            if found:
                self.products = found
            await self._get(client, "product", "GET", f"/product/{product}")
        if mix == "browse":
            return
        await self._get(client, "add to cart", "POST", "/cart", data={"product_id": product, "quantity": "1"})
        cart = await self._get(client, "cart", "GET", "/cart")
        form = checkout_form(cart)
        if form is not None:
            await self._get(client, "checkout", "POST", "/cart/checkout", data=form)
