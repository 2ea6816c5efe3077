"""The circuit breaker's state machine, permits, events, fallbacks and Hystrix-style statistics."""

from __future__ import annotations

import asyncio
import math
import threading

import pytest

from boutique.mesh.resilience import (
    BreakerConfig,
    BreakerOpenError,
    BreakerState,
    CircuitBreaker,
)
from tests.support import ManualClock

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def Clock(now: float = 1000.0) -> ManualClock:
    """A manual clock starting at 1000."""
    return ManualClock(now)


def make(clock: ManualClock, **settings: object) -> CircuitBreaker:
    """A breaker named 'dep' on the logical clock."""
    return CircuitBreaker("dep", BreakerConfig(**settings), group="grp", clock=clock)  # type: ignore[arg-type]


def record(breaker: CircuitBreaker, *outcomes: str, duration: float = 0.01) -> None:
    """Run calls through the breaker: 's' success, 'f' failure, 'i' ignored."""
    for outcome in outcomes:
        permit = breaker.acquire()
        if outcome == "s":
            permit.success(duration)
        elif outcome == "f":
            permit.failure(duration)
        else:
            permit.ignore()


def trip(breaker: CircuitBreaker) -> None:
    """Open a default-configured breaker by failures."""
    record(breaker, *"f" * breaker.config.minimum_calls)
    assert breaker.state is OPEN


# ---- closed -> open --------------------------------------------------------------------------


def test_opens_on_failure_rate_only_after_minimum_calls() -> None:
    breaker = make(Clock())
    record(breaker, *"f" * 9)
    assert breaker.state is CLOSED, "tripped before minimum_calls"
    record(breaker, "f")
    assert breaker.state is OPEN


def test_a_success_that_reaches_minimum_calls_trips_on_the_failures_before_it() -> None:
    breaker = make(Clock(), minimum_calls=10, failure_rate_threshold=0.5)
    record(breaker, *"fffff", *"ssss")
    assert breaker.state is CLOSED
    ticket = breaker.enter()  # the hot-path protocol the mesh uses
    breaker.leave(ticket, False, 0.01)
    assert breaker.state is OPEN  # 5 failures in 10 calls


def test_successes_alone_never_trip_however_many() -> None:
    breaker = make(Clock(), minimum_calls=5, slow_call_duration=1.0)
    for _ in range(50):
        breaker.leave(breaker.enter(), False, 0.01)
    assert breaker.state is CLOSED and breaker.snapshot()["errorPercentage"] == 0


def test_failure_rate_below_threshold_stays_closed() -> None:
    breaker = make(Clock())
    record(breaker, "s", *"sf" * 5)  # 4 of 10 failed, then 5 of 11: 45 %
    assert breaker.state is CLOSED
    record(breaker, "f")  # 6 of 12: 50 %
    assert breaker.state is OPEN


def test_opens_on_slow_call_rate() -> None:
    breaker = make(Clock(), slow_call_duration=1.0, slow_call_rate_threshold=0.5)
    record(breaker, *"s" * 20, duration=0.5)
    assert breaker.state is CLOSED, "fast successes must not trip"
    record(breaker, *"s" * 9, duration=2.0)
    assert breaker.state is CLOSED  # 9 slow of the last 20
    record(breaker, "s", duration=2.0)
    assert breaker.state is OPEN  # 10 slow of the last 20


def test_slow_calls_do_not_count_when_detection_is_off() -> None:
    breaker = make(Clock())
    record(breaker, *"s" * 30, duration=100.0)
    assert breaker.state is CLOSED


def test_count_window_slides_old_results_out() -> None:
    breaker = make(Clock(), window_size=10, minimum_calls=10)
    record(breaker, *"f" * 4, *"s" * 6)  # 40 %
    record(breaker, *"s" * 10)  # the four failures slide out
    record(breaker, *"f" * 4)  # window: 6 successes, 4 failures
    assert breaker.state is CLOSED, "old failures still counted"
    record(breaker, "f")  # 5 of the last 10
    assert breaker.state is OPEN


def test_time_window_expires_old_buckets() -> None:
    clock = Clock(1000.0)
    breaker = make(clock, window_type="time", window_seconds=10.0, minimum_calls=10)
    record(breaker, *"f" * 9)
    clock.advance(11.5)  # those nine fall out of the window (into a different ring slot than now)
    record(breaker, "f")
    assert breaker.state is CLOSED, "expired failures still counted"
    record(breaker, *"s" * 9)  # 1 failure in 10
    assert breaker.state is CLOSED


def test_time_window_keeps_recent_buckets() -> None:
    clock = Clock(1000.0)
    breaker = make(clock, window_type="time", window_seconds=10.0, minimum_calls=10)
    record(breaker, *"f" * 9)
    clock.advance(9.5)  # still inside the window
    record(breaker, "f")
    assert breaker.state is OPEN


# ---- open ------------------------------------------------------------------------------------


async def test_open_rejects_without_calling_fn() -> None:
    clock = Clock()
    breaker = make(clock)
    trip(breaker)
    clock.advance(2.0)
    called: list[int] = []

    async def fn() -> str:
        called.append(1)
        return "real"

    with pytest.raises(BreakerOpenError) as info:
        await breaker.call(fn)
    assert called == []
    assert info.value.name == "dep"
    assert info.value.state is OPEN
    assert info.value.retry_after == pytest.approx(3.0)
    assert breaker.in_flight == 0


def test_open_moves_to_half_open_after_the_wait() -> None:
    clock = Clock()
    breaker = make(clock)
    trip(breaker)
    clock.advance(4.75)
    with pytest.raises(BreakerOpenError):
        breaker.acquire()
    assert breaker.state is OPEN
    clock.advance(0.25)
    permit = breaker.acquire()
    assert breaker.state is HALF_OPEN
    assert permit.half_open
    assert permit.transition is not None and (permit.transition.old, permit.transition.new) == (
        OPEN,
        HALF_OPEN,
    )


# ---- half-open -------------------------------------------------------------------------------


async def test_half_open_admits_at_most_k_concurrent_probes() -> None:
    clock = Clock()
    breaker = make(clock, half_open_max_calls=3)
    trip(breaker)
    clock.advance(5.0)
    release = asyncio.Event()
    running = 0
    peak = 0

    async def slow() -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1
        return "ok"

    tasks = [asyncio.create_task(breaker.call(slow)) for _ in range(20)]
    await asyncio.sleep(0)  # every task reaches its acquire; three are now waiting inside `slow`
    for _ in range(5):
        await asyncio.sleep(0)
    assert breaker.state is HALF_OPEN
    assert breaker.in_flight == 3
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert peak == 3
    assert sum(result == "ok" for result in results) == 3
    rejected = [r for r in results if isinstance(r, BreakerOpenError)]
    assert len(rejected) == 17
    assert all(r.state is HALF_OPEN for r in rejected)
    assert breaker.state is CLOSED, "three successful probes close the breaker"


def test_half_open_limit_holds_across_threads() -> None:
    clock = Clock()
    breaker = make(clock, half_open_max_calls=3)
    trip(breaker)
    clock.advance(5.0)
    guard = threading.Lock()
    holding = 0
    peak = 0
    admitted = 0

    def worker() -> None:
        nonlocal holding, peak, admitted
        for _ in range(2000):
            try:
                permit = breaker.acquire()
            except BreakerOpenError:
                continue
            with guard:
                holding += 1
                admitted += 1
                peak = max(peak, holding)
            with guard:
                holding -= 1
            permit.ignore()  # neither success nor failure: the breaker stays half-open

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert admitted > 0
    assert peak <= 3
    assert breaker.state is HALF_OPEN
    assert breaker.in_flight == 0


def test_half_open_closes_after_enough_successes_and_clears_the_window() -> None:
    clock = Clock()
    breaker = make(clock)
    trip(breaker)
    clock.advance(5.0)
    probes = [breaker.acquire() for _ in range(3)]
    probes[0].success()
    probes[1].success()
    assert breaker.state is HALF_OPEN
    change = probes[2].success()
    assert breaker.state is CLOSED
    assert change is not None and (change.old, change.new) == (HALF_OPEN, CLOSED)
    record(breaker, *"f" * 9)
    assert breaker.state is CLOSED, "failures from before the trip were not cleared"


def test_half_open_failure_reopens_with_a_doubled_capped_wait_reset_by_closing() -> None:
    clock = Clock()
    breaker = make(clock, wait_open=5.0, wait_open_max=30.0)
    trip(breaker)
    expected_waits = [10.0, 20.0, 30.0, 30.0]
    clock.advance(5.0)
    for wait in expected_waits:
        breaker.acquire().failure()
        assert breaker.state is OPEN
        clock.advance(wait - 0.25)
        with pytest.raises(BreakerOpenError) as info:
            breaker.acquire()
        assert info.value.retry_after == pytest.approx(0.25)
        clock.advance(0.25)
    record(breaker, "s", "s", "s")
    assert breaker.state is CLOSED
    trip(breaker)
    clock.advance(5.0)
    assert breaker.acquire().half_open, "the wait did not go back to wait_open after closing"


def test_slow_probe_counts_as_a_failed_probe() -> None:
    clock = Clock()
    breaker = make(clock, slow_call_duration=1.0)
    trip(breaker)
    clock.advance(5.0)
    breaker.acquire().success(2.0)
    assert breaker.state is OPEN


def test_ignored_calls_never_count() -> None:
    clock = Clock()
    breaker = make(clock)
    record(breaker, *"i" * 30)
    assert breaker.state is CLOSED
    assert breaker.snapshot()["requestCount"] == 0
    trip(breaker)
    clock.advance(5.0)
    for _ in range(10):
        breaker.acquire().ignore()  # frees the probe slot each time, counts for nothing
    assert breaker.state is HALF_OPEN


def test_a_permit_finishes_only_once() -> None:
    breaker = make(Clock())
    permit = breaker.acquire()
    permit.success()
    with pytest.raises(RuntimeError):
        permit.failure()
    assert breaker.in_flight == 0


# ---- stale permits ---------------------------------------------------------------------------


def test_stale_permits_do_not_touch_half_open_accounting() -> None:
    clock = Clock()
    breaker = make(clock)
    stale_ok = breaker.acquire()
    stale_bad = breaker.acquire()
    trip(breaker)
    clock.advance(5.0)
    probes = [breaker.acquire() for _ in range(3)]
    stale_ok.success()
    with pytest.raises(BreakerOpenError):
        breaker.acquire()  # the stale permit freed no probe slot
    stale_bad.failure()
    assert breaker.state is HALF_OPEN, "a failure from the closed era reopened the breaker"
    probes[0].success()
    probes[1].success()
    assert breaker.state is HALF_OPEN, "the stale success counted towards closing"
    probes[2].success()
    assert breaker.state is CLOSED
    assert breaker.in_flight == 0


def test_permits_from_before_a_reset_do_not_count() -> None:
    breaker = make(Clock())
    old = [breaker.acquire() for _ in range(10)]
    breaker.reset()
    for permit in old:
        permit.failure()
    assert breaker.state is CLOSED


# ---- operators -------------------------------------------------------------------------------


def test_forced_open_rejects_even_with_all_successes() -> None:
    clock = Clock()
    breaker = make(clock)
    record(breaker, *"s" * 20)
    breaker.force_open()
    clock.advance(3600)
    with pytest.raises(BreakerOpenError) as info:
        breaker.acquire()
    assert info.value.state is BreakerState.FORCED_OPEN and math.isinf(info.value.retry_after)
    snap = breaker.snapshot()
    assert snap["propertyValue_circuitBreakerForceOpen"] is True and snap["isCircuitBreakerOpen"] is True


def test_disabled_never_rejects_but_keeps_statistics() -> None:
    breaker = make(Clock())
    breaker.disable()
    record(breaker, *"f" * 100)
    assert breaker.state is BreakerState.DISABLED
    snap = breaker.snapshot()
    assert snap["rollingCountFailure"] == 100 and snap["rollingCountShortCircuited"] == 0
    assert snap["propertyValue_circuitBreakerForceClosed"] is True


def test_reset_closes_and_clears_the_window() -> None:
    clock = Clock()
    breaker = make(clock)
    trip(breaker)
    breaker.reset()
    assert breaker.state is CLOSED
    breaker.acquire().success()
    breaker.reset()
    record(breaker, *"f" * 9)
    breaker.reset()  # reset of a closed breaker also starts afresh
    record(breaker, *"f" * 9)
    assert breaker.state is CLOSED
    breaker.force_open()
    breaker.reset()
    assert breaker.state is CLOSED


# ---- events ----------------------------------------------------------------------------------


def test_listeners_see_transitions_and_a_raising_listener_breaks_nothing() -> None:
    clock = Clock()
    breaker = make(clock)
    seen: list[tuple[str, BreakerState, BreakerState]] = []

    def broken(name: str, old: BreakerState, new: BreakerState) -> None:
        raise RuntimeError("listener bug")

    breaker.on_transition(broken)
    breaker.on_transition(lambda name, old, new: seen.append((name, old, new)))
    trip(breaker)
    clock.advance(5.0)
    record(breaker, "s", "s", "s")
    breaker.force_open()
    breaker.disable()
    breaker.reset()
    assert seen == [
        ("dep", CLOSED, OPEN),
        ("dep", OPEN, HALF_OPEN),
        ("dep", HALF_OPEN, CLOSED),
        ("dep", CLOSED, BreakerState.FORCED_OPEN),
        ("dep", BreakerState.FORCED_OPEN, BreakerState.DISABLED),
        ("dep", BreakerState.DISABLED, CLOSED),
    ]
    assert breaker.transitions[(CLOSED, OPEN)] == 1
    assert breaker.transitions[(HALF_OPEN, CLOSED)] == 1
    assert sum(breaker.transitions.values()) == 6


def test_listener_runs_outside_the_lock() -> None:
    breaker = make(Clock())
    states: list[dict[str, object]] = []
    breaker.on_transition(lambda *_: states.append(breaker.snapshot()))  # would deadlock under the lock
    trip(breaker)
    assert states and states[0]["state"] == "OPEN"


def test_unsubscribe_stops_notifications() -> None:
    breaker = make(Clock())
    seen: list[object] = []
    unsubscribe = breaker.on_transition(lambda *event: seen.append(event))
    unsubscribe()
    trip(breaker)
    assert seen == []


# ---- fallbacks -------------------------------------------------------------------------------


async def test_fallback_on_open_and_on_failure_is_counted() -> None:
    clock = Clock()
    breaker = make(clock)
    given: list[Exception] = []

    async def fallback(exc: Exception) -> str:
        given.append(exc)
        return "fallback"

    async def failing() -> str:
        raise ConnectionError("down")

    assert await breaker.call(failing, fallback=fallback) == "fallback"
    assert isinstance(given[-1], ConnectionError)
    for _ in range(9):
        await breaker.call(failing, fallback=fallback)
    assert breaker.state is OPEN

    async def never() -> str:
        raise AssertionError("called while open")

    assert await breaker.call(never, fallback=fallback) == "fallback"
    assert isinstance(given[-1], BreakerOpenError)

    async def broken_fallback(exc: Exception) -> str:
        raise LookupError("no fallback data")

    with pytest.raises(LookupError):
        await breaker.call(never, fallback=broken_fallback)
    snap = breaker.snapshot()
    assert snap["rollingCountFallbackSuccess"] == 11
    assert snap["rollingCountFallbackFailure"] == 1
    assert snap["rollingCountShortCircuited"] == 2
    assert snap["rollingCountFailure"] == 10


async def test_call_passes_arguments_and_records_success() -> None:
    breaker = make(Clock())

    async def add(a: int, b: int, *, scale: int) -> int:
        return (a + b) * scale

    assert await breaker.call(add, 1, 2, scale=10) == 30
    assert breaker.snapshot()["rollingCountSuccess"] == 1


async def test_non_failures_and_cancellation_are_ignored_and_propagate() -> None:
    breaker = make(Clock())

    async def invalid() -> str:
        raise ValueError("INVALID_ARGUMENT")

    async def fallback(exc: Exception) -> str:
        return "fallback"

    for _ in range(20):
        with pytest.raises(ValueError):
            await breaker.call(invalid, fallback=fallback, is_failure=lambda e: not isinstance(e, ValueError))
    assert breaker.state is CLOSED

    started = asyncio.Event()

    async def hang() -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    task = asyncio.create_task(breaker.call(hang))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    snap = breaker.snapshot()
    assert snap["requestCount"] == 0 and snap["rollingCountFallbackSuccess"] == 0
    assert breaker.in_flight == 0


async def test_timeouts_count_as_failures_and_timeouts() -> None:
    breaker = make(Clock())

    async def times_out() -> str:
        raise TimeoutError

    for _ in range(3):
        with pytest.raises(TimeoutError):
            await breaker.call(times_out)
    breaker.acquire().failure(0.2, timeout=True)
    snap = breaker.snapshot()
    assert snap["rollingCountTimeout"] == 4 and snap["rollingCountFailure"] == 4


# ---- statistics ------------------------------------------------------------------------------


async def test_snapshot_counts_and_percentiles_match_a_known_sequence() -> None:
    clock = Clock(5000.0)
    breaker = make(clock, minimum_calls=20, slow_call_duration=0.075)
    for ms in (10, 20, 30, 40, 50, 60, 70, 80):
        breaker.acquire().success(ms / 1000)
    breaker.acquire().failure(0.090)
    breaker.acquire().failure(0.100, timeout=True)
    held = breaker.acquire()  # in flight while we look

    async def measured() -> str:
        clock.advance(0.5)  # the call "takes" half a second of logical time
        return "ok"

    breaker.force_open()
    for _ in range(3):
        with pytest.raises(BreakerOpenError):
            breaker.acquire()
    breaker.reset()
    clock.advance(3.0)
    assert await breaker.call(measured) == "ok"

    snap = breaker.snapshot()
    assert snap["name"] == "dep" and snap["group"] == "grp" and snap["type"] == "HystrixCommand"
    assert snap["state"] == "CLOSED" and snap["isCircuitBreakerOpen"] is False
    assert snap["rollingCountSuccess"] == 9
    assert snap["rollingCountFailure"] == 2
    assert snap["rollingCountTimeout"] == 1
    assert snap["rollingCountShortCircuited"] == 3
    assert snap["rollingCountSlow"] == 4  # 80, 90, 100 and 500 ms are above 75 ms
    assert snap["requestCount"] == 14 and snap["errorCount"] == 5
    assert snap["errorPercentage"] == 35  # 5 / 14 = 35.7 %
    assert snap["currentConcurrentExecutionCount"] == 1
    # latencies: 10 20 30 40 50 60 70 80 90 100 500 (ms), nearest rank
    assert snap["latencyTotal_mean"] == pytest.approx(1050 / 11, abs=0.001)
    assert snap["latencyTotal"] == pytest.approx(
        {"0": 10, "25": 30, "50": 60, "75": 90, "90": 100, "95": 500, "99": 500, "99.5": 500, "100": 500}
    )
    assert snap["propertyValue_circuitBreakerErrorThresholdPercentage"] == 50
    assert snap["propertyValue_circuitBreakerRequestVolumeThreshold"] == 20
    assert snap["propertyValue_circuitBreakerSleepWindowInMilliseconds"] == 5000
    assert snap["propertyValue_circuitBreakerForceOpen"] is False
    assert snap["propertyValue_circuitBreakerForceClosed"] is False
    assert snap["reportingHosts"] == 1

    clock.advance(7.0)  # the first ten calls are now 10.5 s old, the measured one 7 s
    later = breaker.snapshot()
    assert later["rollingCountSuccess"] == 1 and later["rollingCountFailure"] == 0
    assert later["rollingCountShortCircuited"] == 0
    assert later["latencyTotal"]["50"] == pytest.approx(500)
    clock.advance(4.0)
    empty = breaker.snapshot()
    assert empty["requestCount"] == 0 and empty["latencyTotal_mean"] == 0.0
    assert empty["currentConcurrentExecutionCount"] == 1
    held.ignore()
    assert breaker.snapshot()["currentConcurrentExecutionCount"] == 0


def test_config_rejects_nonsense() -> None:
    for bad in (
        {"window_type": "sliding"},
        {"window_size": 5, "minimum_calls": 10},
        {"failure_rate_threshold": 0.0},
        {"slow_call_rate_threshold": 1.5},
        {"slow_call_duration": 0.0},
        {"wait_open": 10.0, "wait_open_max": 5.0},
        {"half_open_max_calls": 0},
    ):
        with pytest.raises(ValueError):
            BreakerConfig(**bad)  # type: ignore[arg-type]
