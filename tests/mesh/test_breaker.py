"""The circuit breaker's state machine through its one call protocol (acquire, then success, failure or
ignore), its events, operators, counted fallbacks and the snapshot it publishes."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from boutique.mesh.resilience import (
    BreakerConfig,
    BreakerOpenError,
    BreakerState,
    CircuitBreaker,
    Permit,
)
from tests.support import ManualClock

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
T = TypeVar("T")


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


async def through(breaker: CircuitBreaker, fn: Callable[[], Awaitable[T]]) -> T:
    """Await `fn()` under a permit the way a caller does: failure on an error, ignore on cancellation."""
    permit = breaker.acquire()
    try:
        result = await fn()
    except Exception as exc:
        permit.failure(timeout=isinstance(exc, TimeoutError))
        raise
    except BaseException:
        permit.ignore()
        raise
    permit.success()
    return result


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
    breaker.acquire().success(0.01)  # the success path's window check still runs
    assert breaker.state is OPEN  # 5 failures in 10 calls


def test_successes_alone_never_trip_however_many() -> None:
    breaker = make(Clock(), minimum_calls=5, slow_call_duration=1.0)
    for _ in range(50):
        breaker.acquire().success(0.01)
    assert breaker.state is CLOSED and breaker.snapshot()["errorPercentage"] == 0
    assert breaker.snapshot()["rollingCountSuccess"] == 50


def test_time_window_successes_trip_on_the_failures_before_them() -> None:
    breaker = make(Clock(), window_type="time", minimum_calls=10, failure_rate_threshold=0.5)
    record(breaker, *"fffff", *"ssss")
    assert breaker.state is CLOSED
    record(breaker, "s")
    assert breaker.state is OPEN  # 5 failures in 10 calls


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


def test_open_refuses_a_permit_at_once() -> None:
    clock = Clock()
    breaker = make(clock)
    trip(breaker)
    clock.advance(2.0)
    with pytest.raises(BreakerOpenError) as info:
        breaker.acquire()
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

    tasks = [asyncio.create_task(through(breaker, slow)) for _ in range(20)]
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
    assert not hasattr(permit, "__dict__"), "a permit is allocated per call: it keeps to its slots"


def test_a_health_probe_ends_the_open_wait_once_until_the_breaker_closes() -> None:
    clock = Clock()
    breaker = make(clock, wait_open=5.0, wait_open_max=60.0)
    assert not breaker.probe_succeeded(), "a closed breaker has no wait to cut short"
    trip(breaker)
    clock.advance(1.0)
    assert breaker.probe_succeeded()
    probe = breaker.acquire()  # at once, four seconds before the wait would end
    assert probe.half_open and breaker.state is HALF_OPEN
    assert not breaker.probe_succeeded(), "half-open already lets probes in"
    probe.failure()  # answers health checks, still fails calls
    assert breaker.state is OPEN
    assert not breaker.probe_succeeded(), "a second early probe in the same trouble"
    clock.advance(9.75)
    with pytest.raises(BreakerOpenError) as info:
        breaker.acquire()
    assert info.value.retry_after == pytest.approx(0.25), "the doubled wait was not sat out"
    clock.advance(0.25)
    record(breaker, "s", "s", "s")
    assert breaker.state is CLOSED
    trip(breaker)
    assert breaker.probe_succeeded(), "a new open period gets its early probe again"


# ---- stale permits ---------------------------------------------------------------------------


def close_with(breaker: CircuitBreaker, probes: list[Permit]) -> None:
    """Finish the three current probes with successes: the breaker closes on the third, not before."""
    probes[0].success()
    probes[1].success()
    assert breaker.state is HALF_OPEN, "a stale answer counted towards closing"
    probes[2].success()
    assert breaker.state is CLOSED
    assert breaker.in_flight == 0


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
    close_with(breaker, probes)


def test_late_probes_from_an_earlier_half_open_period_do_not_count() -> None:
    clock = Clock()
    breaker = make(clock, wait_open=5.0)
    trip(breaker)
    clock.advance(5.0)
    late = [breaker.acquire() for _ in range(3)]
    late[0].failure()
    assert breaker.state is OPEN
    clock.advance(10.0)  # the doubled wait
    fresh = [breaker.acquire() for _ in range(3)]
    late[1].success()
    late[2].success()
    with pytest.raises(BreakerOpenError):
        breaker.acquire()  # the late probes freed no probe slot of this period
    close_with(breaker, fresh)


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


# ---- fallbacks, timeouts, ignored calls -------------------------------------------------------


def test_fallbacks_the_caller_serves_are_counted_beside_failures_and_refusals() -> None:
    clock = Clock()
    breaker = make(clock)
    for _ in range(10):
        breaker.acquire().failure()
        breaker.record_fallback(ok=True)
    assert breaker.state is OPEN
    with pytest.raises(BreakerOpenError):
        breaker.acquire()
    breaker.record_fallback(ok=True)
    with pytest.raises(BreakerOpenError):
        breaker.acquire()
    breaker.record_fallback(ok=False)
    snap = breaker.snapshot()
    assert snap["rollingCountFallbackSuccess"] == 11
    assert snap["rollingCountFallbackFailure"] == 1
    assert snap["rollingCountShortCircuited"] == 2
    assert snap["rollingCountFailure"] == 10


def test_a_success_without_a_duration_is_measured_from_acquire() -> None:
    clock = Clock()
    breaker = make(clock)
    permit = breaker.acquire()
    clock.advance(0.25)
    permit.success()
    snap = breaker.snapshot()
    assert snap["rollingCountSuccess"] == 1
    assert snap["latencyTotal_mean"] == pytest.approx(250.0)


async def test_ignored_and_cancelled_calls_never_count() -> None:
    breaker = make(Clock())
    for _ in range(20):
        breaker.acquire().ignore()  # e.g. INVALID_ARGUMENT: the request's own fault
    assert breaker.state is CLOSED

    started = asyncio.Event()

    async def hang() -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    task = asyncio.create_task(through(breaker, hang))
    await started.wait()
    assert breaker.in_flight == 1
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
            await through(breaker, times_out)
    breaker.acquire().failure(0.2, timeout=True)
    breaker.acquire().failure(0.2)  # a failure that is not a timeout
    snap = breaker.snapshot()
    assert snap["rollingCountTimeout"] == 4 and snap["rollingCountFailure"] == 5


# ---- statistics ------------------------------------------------------------------------------


def test_snapshot_counts_and_percentiles_match_a_known_sequence() -> None:
    clock = Clock(5000.0)
    breaker = make(clock, minimum_calls=20, slow_call_duration=0.075)
    for ms in (10, 20, 30, 40, 50, 60, 70, 80):
        breaker.acquire().success(ms / 1000)
    breaker.acquire().failure(0.090)
    breaker.acquire().failure(0.100, timeout=True)
    held = breaker.acquire()  # in flight while we look
    breaker.force_open()
    for _ in range(3):
        with pytest.raises(BreakerOpenError):
            breaker.acquire()
    breaker.reset()
    clock.advance(3.0)
    measured = breaker.acquire()
    clock.advance(0.5)  # the call takes half a second of logical time
    measured.success()

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
