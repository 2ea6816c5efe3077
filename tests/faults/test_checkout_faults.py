"""Checkout under faults, with real processes and shoppers placing orders all along: a stopped checkout,
a stopped payment, a checkout killed mid-order. Every charge belongs to exactly one order, every order
was charged and mailed once, and no shopper who was shown a failure was charged."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.e2e.harness import Up, eventually, start_up
from tests.faults.orders import Books, Checkouts, check_invariants, settle, status_pages


def pid_of(up: Up, service: str) -> int:
    found = next(p for p in up.state()["processes"] if p["service"] == service)
    assert found["pid"], f"{service} is not running"
    return int(found["pid"])


def resolved(base_url: str, attempts: list, timeout: float = 60.0) -> dict[str, str]:  # type: ignore[type-arg]
    """The status page of every order whose outcome was unknown, once each says placed or not placed."""
    deadline = time.monotonic() + timeout
    while True:
        found = status_pages(base_url, attempts)
        if all(v in ("placed", "not_placed") for v in found.values()):
            return found
        assert time.monotonic() < deadline, f"unknown outcomes never resolved: {found}"
        time.sleep(0.5)


def run_fault(tmp_path: Path, fault, shoppers: int = 4) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Shoppers check out; `fault(up)` happens meanwhile; then the books are settled and checked."""
    up = start_up(tmp_path)
    try:
        checkouts = Checkouts(up.url, count=shoppers).start()
        time.sleep(3)
        fault(up)
        time.sleep(3)
        attempts = checkouts.stop()
        assert attempts, f"no checkout was attempted: {checkouts.errors[:5]}"
        settle(tmp_path)
        statuses = resolved(up.url, attempts) if any(a.shown == "unknown" for a in attempts) else {}
        figures = check_invariants(Books.read(tmp_path), attempts, statuses)
        print(figures)
        return figures
    finally:
        up.stop()


def restarted(up: Up, service: str, before: int) -> bool:
    """The service runs again under a new pid and serves."""
    found = next(p for p in up.state()["processes"] if p["service"] == service)
    return found["pid"] not in (None, before) and found["state"] == "SERVING"


def test_checkout_stopped_for_17_seconds(tmp_path: Path) -> None:
    def freeze(up: Up) -> None:
        pid = pid_of(up, "checkout")
        os.kill(pid, signal.SIGSTOP)
        time.sleep(17)  # longer than the frontend's deadline for placing an order
        os.kill(pid, signal.SIGCONT)

    figures = run_fault(tmp_path, freeze)
    assert figures["shown_unknown"] > 0, "no shopper was waiting on the stopped checkout"


def test_payment_stopped_for_15_seconds(tmp_path: Path) -> None:
    def freeze(up: Up) -> None:
        pid = pid_of(up, "payment")
        os.kill(pid, signal.SIGSTOP)
        time.sleep(15)
        os.kill(pid, signal.SIGCONT)

    figures = run_fault(tmp_path, freeze)
    assert figures["shown_failed"] > 0, "no checkout met the stopped payment"


def test_checkout_killed_mid_order_three_times(tmp_path: Path) -> None:
    def kill(up: Up) -> None:
        for _ in range(3):
            before = pid_of(up, "checkout")
            os.kill(before, signal.SIGKILL)
            eventually(lambda: restarted(up, "checkout", before), "checkout restarted", timeout=60)  # noqa: B023
            time.sleep(2)

    figures = run_fault(tmp_path, kill)
    assert figures["orders_placed"] > 0
