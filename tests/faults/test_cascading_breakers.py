"""A stopped payment opens checkout's payment breaker only: the frontend does not count checkout's
"payment failed" answers against checkout, and checkouts work again soon after payment returns."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx

from tests.e2e.harness import Up, eventually, start_up
from tests.faults.orders import Checkouts


def breaker_states(up: Up, service: str) -> dict[str, str]:
    """Each breaker of one process (caller->dependency) and its state, from its /mesh/status."""
    process = next(p for p in up.state()["processes"] if p["service"] == service)
    status = httpx.get(f"http://{process['metrics']}/mesh/status", timeout=2).json()
    return {d["breaker"]["name"]: d["breaker"]["state"] for d in status["dependencies"] if d.get("breaker")}


def test_a_stopped_payment_opens_checkouts_breaker_but_not_the_frontends(tmp_path: Path) -> None:
    up = start_up(tmp_path)
    seen: dict[str, set[str]] = {}
    watching = threading.Event()

    def watch() -> None:
        while not watching.is_set():
            for service in ("frontend", "checkout"):
                try:
                    for name, state in breaker_states(up, service).items():
                        seen.setdefault(name, set()).add(state)
                except (httpx.HTTPError, KeyError, StopIteration):
                    pass
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        checkouts = Checkouts(up.url, count=8, pause=0.05).start()
        watcher.start()
        time.sleep(3)
        payment = next(p for p in up.state()["processes"] if p["service"] == "payment")["pid"]
        os.kill(payment, signal.SIGSTOP)
        eventually(
            lambda: breaker_states(up, "checkout").get("checkout->payment") == "OPEN",
            "checkout's payment breaker open",
            timeout=30,
        )
        time.sleep(2)
        resumed_at = time.time()
        os.kill(payment, signal.SIGCONT)
        eventually(
            lambda: any(a.shown == "placed" and a.at > resumed_at for a in checkouts.attempts),
            "an order placed after payment returned",
            timeout=30,
        )
        time.sleep(2)
        attempts = checkouts.stop()
        watching.set()
        watcher.join(5)
        first = min(a.done for a in attempts if a.shown == "placed" and a.at > resumed_at)
        during = [a for a in attempts if a.at <= resumed_at and a.shown == "failed"]
        print(f"first order placed {first - resumed_at:.2f} s after payment returned; breakers seen: {seen}")
        print(f"{len(during)} checkouts failed while payment was stopped")
        assert "OPEN" in seen["checkout->payment"]
        assert seen["frontend->checkout"] == {"CLOSED"}, (
            "the frontend counted payment's failure against checkout"
        )
        # Each failed checkout blamed payment, or said checkout was busy (its own limiter shed the call
        # while payment's slowness kept its requests in flight); none said checkout was unreachable.
        assert all("payment service" in a.page or "busy" in a.page for a in during), {a.page for a in during}
        eventually(
            lambda: breaker_states(up, "checkout").get("checkout->payment") == "CLOSED",
            "breaker closed again",
        )
    finally:
        watching.set()
        up.stop()
