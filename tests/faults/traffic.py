"""Shoppers for the fault tests: threads of real HTTP clients against the frontend, each request traced
under a trace id the test chose, every answer recorded."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

PRODUCTS = ("OLJCESPC7Z", "66VCHSJNUP", "1YMWWN1N4O", "L9ECAV7KIM", "2ZYFJ3GM2N", "0PUK6V6EV0")


@dataclass(frozen=True)
class Visit:
    """One request a shopper made: when, what, the answer, and the trace it started."""

    at: float  # time.time() when sent
    path: str
    status: int  # 0 when no answer came (connection error, timeout)
    trace_id: str
    root_span: str
    body: str = ""


def traceparent() -> tuple[str, str, str]:
    """A fresh sampled W3C traceparent, with its trace id and the (never exported) parent span id."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def visit(client: httpx.Client, method: str, path: str, keep_body: bool = False, **kwargs: object) -> Visit:
    """Make one traced request and record it (never raises on a failed request)."""
    header, trace_id, root = traceparent()
    at = time.time()
    try:
        response = client.request(method, path, headers={"traceparent": header}, **kwargs)  # type: ignore[arg-type]
    except httpx.HTTPError:
        return Visit(at, path, 0, trace_id, root)
    return Visit(at, path, response.status_code, trace_id, root, response.text if keep_body else "")


@dataclass
class Shoppers:
    """`count` threads each running `scenario(client, shopper_number, round)` until stopped."""

    base_url: str
    scenario: Callable[[httpx.Client, int, int], list[Visit]]
    count: int = 4
    pause: float = 0.2
    timeout: float = 20.0
    visits: list[Visit] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self, number: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=self.timeout, follow_redirects=False) as client:
            round_ = 0
            while not self._stop.is_set():
                made = self.scenario(client, number, round_)
                with self._lock:
                    self.visits.extend(made)
                round_ += 1
                self._stop.wait(self.pause)

    def start(self) -> Shoppers:
        for number in range(self.count):
            thread = threading.Thread(target=self._run, args=(number,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> list[Visit]:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        with self._lock:
            return list(self.visits)


def browsing(client: httpx.Client, number: int, round_: int) -> list[Visit]:
    """Home page and a product page: every hop of both reads from several services."""
    product = PRODUCTS[(number + round_) % len(PRODUCTS)]
    path = "/" if round_ % 2 == 0 else f"/product/{product}"
    return [visit(client, "GET", path)]
