"""The concurrency limiter: sheds at once at the limit, and the gradient limit follows latency both ways."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from boutique.mesh.resilience.limiter import (
    ConcurrencyLimiter,
    FixedLimit,
    GradientLimit,
    LimiterSettings,
    Permit,
)
from boutique.mesh.settings import MeshSettings


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def serve(
    limiter: ConcurrencyLimiter,
    clock: Clock,
    offered: int,
    latency: float | Callable[[int], float],
    rounds: int,
) -> int:
    """`rounds` rounds of `offered` simultaneous requests; returns how many were shed.

    `latency` is the seconds each admitted request takes, or a function of how many were admitted.
    """
    shed = 0
    for _ in range(rounds):
        permits = [limiter.acquire() for _ in range(offered)]
        admitted = [p for p in permits if p is not None]
        shed += offered - len(admitted)
        clock.now += latency(len(admitted)) if callable(latency) else latency
        for permit in admitted:
            permit.release()
    return shed


def server(per_request: float, parallel: int) -> Callable[[int], float]:
    """A server that serves `parallel` requests at a time: past that, requests queue and latency climbs."""
    return lambda concurrency: per_request * max(1.0, concurrency / parallel)


def overload(
    limiter: ConcurrencyLimiter, clock: Clock, latency: Callable[[int], float], rounds: int
) -> list[int]:
    """`rounds` rounds of far more requests than the limit; the limit after each."""
    limits = []
    for _ in range(rounds):
        serve(limiter, clock, offered=300, latency=latency, rounds=1)
        limits.append(limiter.current_limit)
    return limits


def test_a_fixed_limit_sheds_at_once_and_frees_a_slot_on_release() -> None:
    limiter = ConcurrencyLimiter(FixedLimit(2), "fixed")
    first, second = limiter.acquire(), limiter.acquire()
    assert isinstance(first, Permit) and isinstance(second, Permit)
    assert limiter.acquire() is None  # refused on the spot, nothing waits
    assert (limiter.in_flight, limiter.shed_count, limiter.admitted_count) == (2, 1, 2)
    first.release()
    first.release()  # a second release is a no-op, not a second free slot
    assert limiter.in_flight == 1
    third = limiter.acquire()
    assert third is not None and limiter.acquire() is None
    assert limiter.shed_count == 2


def test_the_limit_shrinks_when_latency_rises_under_load() -> None:
    clock = Clock()
    limit = GradientLimit(initial=50, min_limit=4, max_limit=200, window=0.1, min_samples=5)
    limiter = ConcurrencyLimiter(limit, "grpc", clock)
    serve(limiter, clock, offered=5, latency=0.02, rounds=20)  # unloaded: 5 at a time, 20 ms each
    assert limit.baseline == pytest.approx(0.02)
    assert limit.limit > 50  # latency is fine: the limit floats up, room for bursts
    # Overload: 300 at a time on a server that does 8 at once; latency climbs with concurrency.
    latency = server(0.02, parallel=8)
    limits = overload(limiter, clock, latency, rounds=60)
    print("limit under overload:", limits)
    assert limits[-1] < 25  # far below the initial 50: the queue is gone
    assert latency(limits[-1]) < 3 * 0.02  # admitted requests see near-unloaded latency
    assert limiter.shed_count > 0


def test_the_limit_never_goes_below_its_minimum() -> None:
    clock = Clock()
    limit = GradientLimit(initial=30, min_limit=6, max_limit=100, window=0.05, min_samples=3)
    limiter = ConcurrencyLimiter(limit, "grpc", clock)
    serve(limiter, clock, offered=1, latency=0.01, rounds=10)
    limits = overload(limiter, clock, server(0.01, parallel=1), rounds=300)  # queueing from the second
    print("limit under overload:", limits[::10])
    assert min(limits) == 6  # held there while the baseline was measured, and never lower


def test_a_long_overload_does_not_loosen_the_limit() -> None:
    """Every window of a long overload is loaded; re-measuring the baseline keeps it from creeping up."""
    clock = Clock()
    limit = GradientLimit(initial=20, min_limit=2, max_limit=200, window=0.1, min_samples=5, horizon=5.0)
    limiter = ConcurrencyLimiter(limit, "grpc", clock)
    serve(limiter, clock, offered=2, latency=0.01, rounds=20)
    latency = server(0.01, parallel=4)
    limits = overload(limiter, clock, latency, rounds=3000)  # about 3 minutes, 36 horizons
    print(f"limit over a long overload: {limits[::300]}; {limit.probes} baseline measurements")
    assert limit.probes >= 3
    assert max(limits[-500:]) < 16
    assert limit.baseline < 0.02


def test_the_limit_grows_back_when_latency_returns_to_normal() -> None:
    clock = Clock()
    limit = GradientLimit(initial=40, min_limit=4, max_limit=200, window=0.1, min_samples=5)
    limiter = ConcurrencyLimiter(limit, "grpc", clock)
    serve(limiter, clock, offered=5, latency=0.02, rounds=20)
    overload(limiter, clock, server(0.02, parallel=6), rounds=80)
    low = limit.limit
    # Whatever held the server back is gone (it now does 60 at once) while demand stays high.
    grown = overload(limiter, clock, server(0.02, parallel=60), rounds=150)
    print(f"limit {low} while overloaded, then {grown[::10]}")
    assert low < 20
    assert grown[-1] > 3 * low


def test_latency_that_concurrency_does_not_cause_is_not_shed_for_long() -> None:
    """A dependency turns slow: cutting concurrency would not help, and the re-measured baseline says so."""
    clock = Clock()
    limit = GradientLimit(initial=20, min_limit=4, max_limit=200, window=0.1, min_samples=5)
    limiter = ConcurrencyLimiter(limit, "grpc", clock)
    serve(limiter, clock, offered=10, latency=0.01, rounds=20)
    limits = overload(limiter, clock, lambda _: 0.2, rounds=100)  # 200 ms whatever the concurrency
    print("limit with a slow dependency:", limits[::5])
    assert limit.baseline == pytest.approx(0.2)
    assert limits[-1] > 20


def test_a_healthy_server_admits_bursts() -> None:
    clock = Clock()
    limit = GradientLimit(initial=20, min_limit=2, max_limit=100, window=0.1, min_samples=5)
    limiter = ConcurrencyLimiter(limit, "http", clock)
    serve(limiter, clock, offered=3, latency=0.02, rounds=200)  # 4 s of light load, latency fine
    assert limit.limit == 100  # floated up to the maximum
    assert serve(limiter, clock, offered=80, latency=0.02, rounds=1) == 0  # a burst of 80: none shed


def test_slowness_at_low_concurrency_does_not_shrink_the_limit() -> None:
    """Few requests in flight, each slow for reasons of its own: a lower limit would change nothing."""
    clock = Clock()
    limit = GradientLimit(initial=20, min_limit=2, max_limit=100, window=0.1, min_samples=5)
    limiter = ConcurrencyLimiter(limit, "http", clock)
    serve(limiter, clock, offered=3, latency=0.005, rounds=100)
    before = limit.limit
    shed = serve(limiter, clock, offered=3, latency=0.5, rounds=40)  # 100x slower, 3 in flight
    assert limit.gradient == 0.5  # far beyond tolerance...
    assert limit.limit >= before and shed == 0  # ...yet not cut: the limit was not what held them


def test_cheap_calls_are_not_shed_for_a_little_queueing() -> None:
    """16 calls in flight that take 2 ms instead of 0.15 ms: below the slack, so nothing is cut."""
    clock = Clock()
    limit = GradientLimit(initial=20, min_limit=4, max_limit=200, window=0.05, min_samples=5)
    limiter = ConcurrencyLimiter(limit, "grpc", clock)
    serve(limiter, clock, offered=1, latency=0.00015, rounds=400)
    shed = serve(limiter, clock, offered=16, latency=0.002, rounds=400)
    assert shed == 0
    assert limit.limit >= 20


def test_the_baseline_follows_a_lasting_change_within_the_horizon() -> None:
    clock = Clock()
    limit = GradientLimit(initial=20, min_limit=4, max_limit=200, window=0.1, min_samples=5, horizon=5.0)
    limiter = ConcurrencyLimiter(limit, "grpc", clock)
    serve(limiter, clock, offered=10, latency=0.01, rounds=20)
    assert limit.baseline == pytest.approx(0.01)
    serve(limiter, clock, offered=10, latency=0.05, rounds=200)  # 10 s at 50 ms: the new normal
    assert limit.baseline == pytest.approx(0.05)


async def test_concurrent_tasks_never_exceed_the_limit_and_the_excess_is_refused_at_once() -> None:
    limiter = ConcurrencyLimiter(FixedLimit(5), "fixed")
    running, peak, refused = 0, 0, 0
    gate = asyncio.Event()

    async def request() -> None:
        nonlocal running, peak, refused
        permit = limiter.acquire()
        if permit is None:
            refused += 1
            return
        running += 1
        peak = max(peak, running)
        try:
            await gate.wait()
        finally:
            running -= 1
            permit.release()

    tasks = [asyncio.create_task(request()) for _ in range(50)]
    await asyncio.sleep(0.01)
    assert refused == 45  # answered while the admitted five still wait: no queue
    gate.set()
    await asyncio.gather(*tasks)
    assert (peak, limiter.in_flight, limiter.shed_count) == (5, 0, 45)


def test_threads_share_one_limiter_safely() -> None:
    limiter = ConcurrencyLimiter(FixedLimit(3), "fixed")
    lock, state = threading.Lock(), {"running": 0, "peak": 0}

    def work() -> None:
        for _ in range(2000):
            permit = limiter.acquire()
            if permit is None:
                continue
            with lock:
                state["running"] += 1
                state["peak"] = max(state["peak"], state["running"])
            with lock:
                state["running"] -= 1
            permit.release()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert limiter.in_flight == 0
    assert state["peak"] <= 3
    assert limiter.admitted_count + limiter.shed_count == 16000


def limiter_settings(environ: dict[str, str]) -> LimiterSettings:
    """The limiter's part of the settings `environ` gives."""
    return MeshSettings.from_env(environ).limiter


def test_settings_come_from_the_environment() -> None:
    assert limiter_settings({}) == LimiterSettings()
    settings = limiter_settings(
        {"BOUTIQUE_LIMITER": "fixed", "BOUTIQUE_LIMITER_INITIAL": "7", "BOUTIQUE_LIMITER_MIN": "2"}
    )
    limiter = settings.build("http")
    assert limiter is not None and isinstance(limiter.limit, FixedLimit) and limiter.current_limit == 7
    assert limiter_settings({"BOUTIQUE_LIMITER": "off"}).build("grpc") is None
    adaptive = limiter_settings({"BOUTIQUE_LIMITER_MAX": "64"}).build("grpc")
    assert adaptive is not None and isinstance(adaptive.limit, GradientLimit)
    assert adaptive.limit.max_limit == 64
    with pytest.raises(ValueError, match="BOUTIQUE_LIMITER must be one of"):
        limiter_settings({"BOUTIQUE_LIMITER": "maybe"})
    with pytest.raises(ValueError, match="BOUTIQUE_LIMITER_MIN"):
        limiter_settings({"BOUTIQUE_LIMITER_MIN": "50", "BOUTIQUE_LIMITER_INITIAL": "20"})
    with pytest.raises(ValueError, match="whole number"):
        limiter_settings({"BOUTIQUE_LIMITER_MAX": "lots"})
