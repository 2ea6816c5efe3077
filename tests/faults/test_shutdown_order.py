"""Stopping a whole shop the way a container platform does: SIGTERM to every process at the same instant,
or dependencies first. Every process exits within 5 s of its signal, however the others go away.

The shop runs as separate processes, each started on its own as in a container (no `boutique up`
stopping them in order), with shoppers placing orders so that calls are in flight when the signals
land. The registry, the observatory and Redis go away too, so deregistering, delivering the last
spans and the calls still in flight all meet a peer that is gone; in the frozen case those peers
take connections but never answer, as a vanished container's address does.
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from boutique.shop.services import BACKENDS
from tests.faults.orders import Checkouts
from tests.faults.process_shop import ProcessShop

BOUND = 5.0  # seconds from SIGTERM to exit the issue asks of every process
WAIT = 20.0  # how long the test waits for an exit before calling it hung (then kills the process)
INFRASTRUCTURE = ["redis", "registry", "observatory"]


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[ProcessShop]:
    """A running shop of separate processes with shoppers checking out; everything killed afterwards."""
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server (apt-get install redis-server)")
    running = ProcessShop(tmp_path)
    try:
        yield running.start()
    finally:
        for member in running.members.values():
            if member.process.poll() is None:
                member.process.send_signal(signal.SIGCONT)  # a frozen member takes its SIGKILL either way
        running.kill()


def busy(shop: ProcessShop) -> Checkouts:
    """Shoppers placing orders until at least one went through (so calls are in flight when stopping)."""
    buyers = Checkouts(shop.frontend_url, count=4, pause=0.05).start()
    deadline = time.monotonic() + 60
    while not any(a.shown == "placed" for a in buyers.attempts):
        assert time.monotonic() < deadline, f"no order placed: {buyers.attempts[-3:]} {buyers.errors[-3:]}"
        time.sleep(0.2)
    time.sleep(2)  # and a couple of seconds more of steady traffic
    return buyers


def check(shop: ProcessShop, times: dict[str, float], names: list[str], how: str) -> None:
    """Print every member's exit time; assert each exited cleanly (0) within BOUND of its SIGTERM."""
    print(f"\nexit after SIGTERM ({how}):")
    for name in names:
        seconds = times.get(name)
        code = shop.members[name].process.returncode
        shown = f"{seconds:5.2f} s" if seconds is not None else f"still running after {WAIT:.0f} s"
        print(f"  {name:15s} {shown}  exit code {code}")
    hung = [name for name in names if name not in times]
    assert not hung, f"still running {WAIT:.0f} s after SIGTERM: {hung}\n{shop.tails(hung)}"
    slow = {name: round(times[name], 2) for name in names if times[name] >= BOUND}
    assert not slow, f"exited more than {BOUND:.0f} s after SIGTERM: {slow}\n{shop.tails(list(slow))}"
    codes = {name: shop.members[name].process.returncode for name in names}
    failed = {name: code for name, code in codes.items() if code != 0}
    assert not failed, f"exit codes other than 0: {failed}\n{shop.tails(list(failed))}"


def test_every_process_stopped_at_once_exits_within_5_s(shop: ProcessShop) -> None:
    buyers = busy(shop)
    everyone = list(shop.members)
    times = shop.stop([everyone], bound=WAIT)
    buyers.stop()
    check(shop, times, everyone, "every process at the same instant")


def test_dependencies_stopped_first_each_exits_within_5_s(shop: ProcessShop) -> None:
    buyers = busy(shop)
    order = [INFRASTRUCTURE, list(BACKENDS), ["frontend"]]
    times = shop.stop(order, bound=WAIT, between=0.5)
    buyers.stop()
    check(shop, times, [name for group in order for name in group], "infrastructure, backends, frontend")


def test_services_stop_within_5_s_while_their_dependencies_no_longer_answer(shop: ProcessShop) -> None:
    buyers = busy(shop)
    for name in INFRASTRUCTURE:  # registry, observatory and Redis hold their sockets but never answer
        shop.members[name].process.send_signal(signal.SIGSTOP)
    services = [*BACKENDS, "frontend"]
    times = shop.stop([services], bound=WAIT)
    buyers.stop()
    check(shop, times, services, "registry, observatory and Redis frozen")
