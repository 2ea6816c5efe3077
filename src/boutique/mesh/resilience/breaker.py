"""Circuit breaker: fail fast while a dependency is failing or slow, probe it, and close again once it recovers.

The breaker never holds its lock across the wrapped call: `acquire()` takes a permit under a short lock,
the caller makes the call, and the permit records the outcome under another short lock. That keeps it
correct from asyncio tasks and from threads alike. Permits remember the state generation they were
issued in, so a late answer from an earlier state cannot disturb the accounting of the current one.
"""

from __future__ import annotations

import enum
import logging
import math
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
Clock = Callable[[], float]

STATS_WINDOW_SECONDS = 10
PERCENTILES = ("0", "25", "50", "75", "90", "95", "99", "99.5", "100")
_SAMPLES_PER_SECOND = 1024  # latency samples kept per one-second stats bucket (reservoir beyond that)


class BreakerState(enum.Enum):
    """Where the breaker stands; FORCED_OPEN and DISABLED are set only by operators."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


TransitionListener = Callable[[str, BreakerState, BreakerState], None]


@dataclass(frozen=True)
class BreakerConfig:
    """When the breaker trips, how long it stays open and how it probes; defaults follow MESH.md."""

    window_type: Literal["count", "time"] = "count"
    window_size: int = 20
    window_seconds: float = 10.0
    minimum_calls: int = 10
    failure_rate_threshold: float = 0.5
    slow_call_duration: float | None = None
    slow_call_rate_threshold: float = 1.0
    wait_open: float = 5.0
    wait_open_max: float = 60.0
    half_open_max_calls: int = 3
    half_open_successes_to_close: int = 3

    def __post_init__(self) -> None:
        """Reject settings that would make the breaker meaningless."""
        if self.window_type not in ("count", "time"):
            raise ValueError(f"window_type must be 'count' or 'time', got {self.window_type!r}")
        if self.window_size < 1 or self.window_seconds <= 0:
            raise ValueError("window_size must be >= 1 and window_seconds > 0")
        if self.minimum_calls < 1:
            raise ValueError("minimum_calls must be >= 1")
        if self.window_type == "count" and self.minimum_calls > self.window_size:
            raise ValueError("minimum_calls cannot exceed window_size: the breaker could never trip")
        for rate in (self.failure_rate_threshold, self.slow_call_rate_threshold):
            if not 0 < rate <= 1:
                raise ValueError(f"rate thresholds must be in (0, 1], got {rate}")
        if self.slow_call_duration is not None and self.slow_call_duration <= 0:
            raise ValueError("slow_call_duration must be > 0 (or None to turn slow-call detection off)")
        if self.wait_open <= 0 or self.wait_open_max < self.wait_open:
            raise ValueError("wait_open must be > 0 and wait_open_max >= wait_open")
        if self.half_open_max_calls < 1 or self.half_open_successes_to_close < 1:
            raise ValueError("half_open_max_calls and half_open_successes_to_close must be >= 1")


class BreakerOpenError(Exception):
    """The breaker refused the call without touching the network; `retry_after` is seconds to the next probe."""

    def __init__(self, name: str, state: BreakerState, retry_after: float) -> None:
        when = "until reset" if math.isinf(retry_after) else f"next probe in {retry_after:.3f}s"
        super().__init__(f"circuit breaker {name!r} is {state.value} ({when})")
        self.name = name
        self.state = state
        self.retry_after = retry_after


@dataclass(frozen=True)
class Transition:
    """One state change of a named breaker."""

    name: str
    old: BreakerState
    new: BreakerState


class _Outcome(enum.Enum):
    """How a finished call counts."""

    SUCCESS = "success"
    FAILURE = "failure"
    IGNORED = "ignored"


class Permit:
    """Leave to make one call; finish it with exactly one of success(), failure() or ignore()."""

    __slots__ = ("_breaker", "_done", "generation", "half_open", "started", "transition")

    def __init__(self, breaker: CircuitBreaker, generation: int, half_open: bool, started: float) -> None:
        self._breaker = breaker
        self._done = False
        self.generation = generation
        self.half_open = half_open
        self.started = started
        self.transition: Transition | None = None  # the state change taking this permit caused, if any

    def success(self, duration: float | None = None) -> Transition | None:
        """The call worked; `duration` in seconds (measured since acquire when omitted)."""
        return self._breaker._complete(self, _Outcome.SUCCESS, duration, timeout=False)

    def failure(self, duration: float | None = None, timeout: bool = False) -> Transition | None:
        """The call failed (`timeout=True` also counts it as a timeout in the statistics)."""
        return self._breaker._complete(self, _Outcome.FAILURE, duration, timeout=timeout)

    def ignore(self) -> Transition | None:
        """The call must not count either way (the caller cancelled, or the request itself was invalid)."""
        return self._breaker._complete(self, _Outcome.IGNORED, None, timeout=False)

    @property
    def done(self) -> bool:
        """Whether an outcome was recorded already."""
        return self._done


class OutcomeWindow(Protocol):
    """The sliding window of recent outcomes the closed breaker judges failure and slow-call rates on."""

    def record(self, failed: bool, slow: bool, now: float) -> None:
        """Add one finished call."""
        ...

    def totals(self, now: float) -> tuple[int, int, int]:
        """Calls, failures and slow calls currently in the window."""
        ...

    def clear(self) -> None:
        """Forget everything."""
        ...


class CountWindow:
    """The outcomes of the last `size` calls."""

    def __init__(self, size: int) -> None:
        """Create an empty window of `size` calls."""
        self._size = size
        self._outcomes: deque[tuple[bool, bool]] = deque()
        self.failures = 0  # failures among them
        self.slow = 0  # slow calls among them

    def record(self, failed: bool, slow: bool, now: float) -> None:
        """Add one call, pushing the oldest out once the window is full."""
        if len(self._outcomes) == self._size:
            old_failed, old_slow = self._outcomes.popleft()
            self.failures -= old_failed
            self.slow -= old_slow
        self._outcomes.append((failed, slow))
        self.failures += failed
        self.slow += slow

    def totals(self, now: float) -> tuple[int, int, int]:
        """Calls, failures and slow calls among the last `size`."""
        return len(self._outcomes), self.failures, self.slow

    def clear(self) -> None:
        """Forget everything."""
        self._outcomes.clear()
        self.failures = self.slow = 0


@dataclass
class _OutcomeBucket:
    """Outcomes of the calls that finished during one second."""

    second: int = -1
    calls: int = 0
    failures: int = 0
    slow: int = 0


class TimeWindow:
    """The outcomes of the calls that finished in the last `seconds`, kept in one-second buckets."""

    def __init__(self, seconds: float) -> None:
        """Create an empty window spanning `seconds` (rounded up to whole seconds)."""
        self._span = max(1, math.ceil(seconds))
        self._buckets = [_OutcomeBucket() for _ in range(self._span)]

    def record(self, failed: bool, slow: bool, now: float) -> None:
        """Add one call to the bucket of the current second."""
        second = math.floor(now)
        bucket = self._buckets[second % self._span]
        if bucket.second != second:
            bucket.second, bucket.calls, bucket.failures, bucket.slow = second, 0, 0, 0
        bucket.calls += 1
        bucket.failures += failed
        bucket.slow += slow

    def totals(self, now: float) -> tuple[int, int, int]:
        """Calls, failures and slow calls over the buckets still inside the window."""
        oldest = math.floor(now) - self._span
        live = [b for b in self._buckets if b.second > oldest]
        return sum(b.calls for b in live), sum(b.failures for b in live), sum(b.slow for b in live)

    def clear(self) -> None:
        """Forget everything."""
        for bucket in self._buckets:
            bucket.second = -1


@dataclass
class _StatsBucket:
    """What happened during one second, for the Hystrix-style status stream."""

    second: int = -1
    success: int = 0
    failure: int = 0
    timeout: int = 0
    short_circuited: int = 0
    fallback_success: int = 0
    fallback_failure: int = 0
    slow: int = 0
    latency_count: int = 0
    latency_sum_ms: float = 0.0
    samples_ms: list[float] = field(default_factory=list)


class _RollingStats:
    """Ten one-second buckets of counts and latency samples."""

    def __init__(self) -> None:
        """Create empty buckets."""
        self._buckets = [_StatsBucket() for _ in range(STATS_WINDOW_SECONDS)]
        self._random = random.Random()

    def bucket(self, now: float) -> _StatsBucket:
        """The bucket of the current second, emptied first if it still holds an expired second."""
        second = math.floor(now)
        index = second % STATS_WINDOW_SECONDS
        if self._buckets[index].second != second:
            self._buckets[index] = _StatsBucket(second=second)
        return self._buckets[index]

    def live(self, now: float) -> list[_StatsBucket]:
        """The buckets of the last ten seconds."""
        oldest = math.floor(now) - STATS_WINDOW_SECONDS
        return [b for b in self._buckets if b.second > oldest]

    def record(self, now: float, failed: bool, timeout: bool, slow: bool, seconds: float) -> None:
        """Count one finished call and its latency in the bucket of `now` (one bucket lookup)."""
        second = math.floor(now)
        bucket = self._buckets[second % STATS_WINDOW_SECONDS]
        if bucket.second != second:
            bucket = self._buckets[second % STATS_WINDOW_SECONDS] = _StatsBucket(second=second)
        if failed:
            bucket.failure += 1
            bucket.timeout += timeout
        else:
            bucket.success += 1
        bucket.slow += slow
        value = seconds * 1000.0
        bucket.latency_count += 1
        bucket.latency_sum_ms += value
        samples = bucket.samples_ms
        if len(samples) < _SAMPLES_PER_SECOND:
            samples.append(value)
        else:
            slot = int(self._random.random() * bucket.latency_count)
            if slot < _SAMPLES_PER_SECOND:
                samples[slot] = value

    def latency(self, now: float, seconds: float) -> None:
        """Record one call's latency, keeping a bounded uniform sample per second."""
        self._sample(self.bucket(now), seconds)

    def _sample(self, bucket: _StatsBucket, seconds: float) -> None:
        """Add a latency to a bucket's total and to its bounded uniform sample."""
        value = seconds * 1000.0
        bucket.latency_count += 1
        bucket.latency_sum_ms += value
        if len(bucket.samples_ms) < _SAMPLES_PER_SECOND:
            bucket.samples_ms.append(value)
        else:
            slot = int(self._random.random() * bucket.latency_count)
            if slot < _SAMPLES_PER_SECOND:
                bucket.samples_ms[slot] = value


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (0 gives the minimum, 100 the maximum, empty gives 0)."""
    if not sorted_values:
        return 0.0
    rank = math.ceil(p * len(sorted_values) / 100)
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


def _always(exc: BaseException) -> bool:
    """Default failure predicate: every exception counts against the dependency."""
    return True


class CircuitBreaker:
    """A circuit breaker for one (caller, dependency[, method]); see the module docstring for the protocol."""

    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        *,
        group: str | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        """Create a closed breaker; `clock` returns seconds and is injectable for tests."""
        self.name = name
        self.group = group or name
        self.config = config or BreakerConfig()
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._window: OutcomeWindow = (
            CountWindow(self.config.window_size)
            if self.config.window_type == "count"
            else TimeWindow(self.config.window_seconds)
        )
        self._count_window = self._window if isinstance(self._window, CountWindow) else None
        self._wait = self.config.wait_open
        self._open_until = 0.0
        self._early_probe_used = False
        self._half_open_in_flight = 0
        self._half_open_successes = 0
        self._in_flight = 0
        self._stats = _RollingStats()
        self._listeners: list[TransitionListener] = []
        self._transitions: Counter[tuple[BreakerState, BreakerState]] = Counter()

    # ---- reading -----------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The current state (OPEN turns HALF_OPEN lazily, on the first acquire after the wait)."""
        return self._state

    @property
    def in_flight(self) -> int:
        """Permits handed out and not yet finished, in any state."""
        return self._in_flight

    @property
    def current_wait(self) -> float:
        """How long the next (or current) open period lasts, in seconds."""
        return self._wait

    @property
    def transitions(self) -> dict[tuple[BreakerState, BreakerState], int]:
        """How many times each (from, to) state change happened."""
        with self._lock:
            return dict(self._transitions)

    # ---- events ------------------------------------------------------------------------------

    def on_transition(self, listener: TransitionListener) -> Callable[[], None]:
        """Call `listener(name, old, new)` on every state change; returns a function that unsubscribes."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def _notify(self, change: Transition | None) -> None:
        """Log a state change and tell every listener, outside the lock; a failing listener is only logged."""
        if change is None:
            return
        level = (
            logging.WARNING if change.new in (BreakerState.OPEN, BreakerState.FORCED_OPEN) else logging.INFO
        )
        log.log(level, "circuit breaker %s: %s -> %s", change.name, change.old.name, change.new.name)
        for listener in tuple(self._listeners):
            try:
                listener(change.name, change.old, change.new)
            except Exception:
                log.exception("circuit breaker %s: a transition listener failed", self.name)

    # ---- the call protocol -------------------------------------------------------------------

    def acquire(self) -> Permit:
        """A permit for one call, or `BreakerOpenError` at once when the breaker refuses it."""
        with self._lock:
            now = self._clock()
            ticket, change, refusal = self._admit(now)
        self._notify(change)
        if refusal is not None:
            raise refusal
        permit = Permit(self, ticket >> 1, bool(ticket & 1), now)
        permit.transition = change
        return permit

    def enter(self) -> int:
        """Admit one call and return its ticket, or raise `BreakerOpenError` at once.

        The allocation-free form of `acquire()` for hot call paths: the ticket (an int encoding the
        generation and whether the call is a half-open probe) must be passed to `leave` exactly once.
        """
        with self._lock:
            if self._state is BreakerState.CLOSED:
                self._in_flight += 1
                return self._generation << 1
            ticket, change, refusal = self._admit(self._clock())
        self._notify(change)
        if refusal is not None:
            raise refusal
        return ticket

    def leave(self, ticket: int, failed: bool | None, took: float, timeout: bool = False) -> None:
        """Finish the call of an `enter` ticket: `failed` True or False, or None when it must not count.

        `took` is the call's duration in seconds; `timeout` counts a failure as a timeout too.
        """
        if took < 0.0:
            took = 0.0
        with self._lock:
            now = self._clock()
            if failed is False and ticket == self._generation << 1 and self._state is BreakerState.CLOSED:
                # The common case, a success while closed, without the general path's indirections.
                self._in_flight -= 1
                slow_after = self.config.slow_call_duration
                slow = slow_after is not None and took > slow_after
                self._stats.record(now, False, False, slow, took)
                window = self._window
                window.record(False, slow, now)
                # A success cannot raise the failure or slow-call rate of a count window holding none.
                if window is self._count_window and not (window.failures or window.slow):
                    return
                if not self._should_trip(now):
                    return
                change: Transition | None = self._move(BreakerState.OPEN, now)
            else:
                outcome = (
                    _Outcome.IGNORED if failed is None else _Outcome.FAILURE if failed else _Outcome.SUCCESS
                )
                change = self._finish(ticket >> 1, bool(ticket & 1), outcome, took, timeout, now)
        if change is not None:
            self._notify(change)

    def _admit(self, now: float) -> tuple[int, Transition | None, BreakerOpenError | None]:
        """Let one call in or refuse it (lock held): its ticket, the state change made, the refusal."""
        change = None
        if self._state is BreakerState.OPEN and now >= self._open_until:
            change = self._move(BreakerState.HALF_OPEN, now)
        refusal = self._refusal(now)
        if refusal is not None:
            self._stats.bucket(now).short_circuited += 1
            return -1, change, refusal
        half_open = self._state is BreakerState.HALF_OPEN
        self._half_open_in_flight += half_open
        self._in_flight += 1
        return (self._generation << 1) | half_open, change, None

    def _refusal(self, now: float) -> BreakerOpenError | None:
        """The error to refuse a call with in the current state, or None to admit it (lock held)."""
        state = self._state
        if state is BreakerState.OPEN:
            return BreakerOpenError(self.name, state, max(0.0, self._open_until - now))
        if state is BreakerState.FORCED_OPEN:
            return BreakerOpenError(self.name, state, math.inf)
        if state is BreakerState.HALF_OPEN and self._half_open_in_flight >= self.config.half_open_max_calls:
            return BreakerOpenError(self.name, state, 0.0)
        return None

    def _complete(
        self, permit: Permit, outcome: _Outcome, duration: float | None, timeout: bool
    ) -> Transition | None:
        """Record a finished call: statistics always, state accounting only for its own generation."""
        with self._lock:
            if permit._done:
                raise RuntimeError("this permit was finished already")
            permit._done = True
            now = self._clock()
            took = max(0.0, now - permit.started) if duration is None else max(0.0, duration)
            change = self._finish(permit.generation, permit.half_open, outcome, took, timeout, now)
        self._notify(change)
        return change

    def _finish(
        self, generation: int, half_open: bool, outcome: _Outcome, took: float, timeout: bool, now: float
    ) -> Transition | None:
        """Record a finished call (lock held): statistics always, state accounting only for its generation."""
        self._in_flight -= 1
        slow_after = self.config.slow_call_duration
        slow = slow_after is not None and took > slow_after
        if outcome is not _Outcome.IGNORED:
            self._stats.record(now, outcome is _Outcome.FAILURE, timeout, slow, took)
        if generation != self._generation:
            return None
        return self._judge(half_open, outcome, slow, now)

    def _judge(self, half_open: bool, outcome: _Outcome, slow: bool, now: float) -> Transition | None:
        """Apply a current-generation outcome to the state machine (lock held).

        A slow probe in half-open counts as a failed probe: the dependency has not recovered.
        """
        if half_open:
            self._half_open_in_flight -= 1
            if outcome is _Outcome.IGNORED:
                return None
            if outcome is _Outcome.FAILURE or slow:
                return self._move(BreakerState.OPEN, now)
            self._half_open_successes += 1
            if self._half_open_successes >= self.config.half_open_successes_to_close:
                return self._move(BreakerState.CLOSED, now)
            return None
        if self._state is not BreakerState.CLOSED or outcome is _Outcome.IGNORED:
            return None
        self._window.record(outcome is _Outcome.FAILURE, slow, now)
        return self._move(BreakerState.OPEN, now) if self._should_trip(now) else None

    def _should_trip(self, now: float) -> bool:
        """Whether the closed window has enough calls and too many failures or slow calls (lock held)."""
        calls, failures, slow = self._window.totals(now)
        if calls < self.config.minimum_calls:
            return False
        if failures / calls >= self.config.failure_rate_threshold:
            return True
        return (
            self.config.slow_call_duration is not None
            and slow / calls >= self.config.slow_call_rate_threshold
        )

    def _move(self, new: BreakerState, now: float) -> Transition:
        """Change state and start a new generation (lock held); the caller notifies after unlocking."""
        old = self._state
        if new is BreakerState.OPEN:
            if old is BreakerState.HALF_OPEN:
                self._wait = min(self._wait * 2, self.config.wait_open_max)
            self._open_until = now + self._wait
            self._early_probe_used = old is BreakerState.HALF_OPEN and self._early_probe_used
        if new is BreakerState.CLOSED:
            self._wait = self.config.wait_open
        self._window.clear()
        self._state = new
        self._generation += 1
        self._half_open_in_flight = 0
        self._half_open_successes = 0
        self._transitions[(old, new)] += 1
        return Transition(self.name, old, new)

    def probe_succeeded(self) -> bool:
        """An out-of-band health probe found the dependency answering again: end the open wait now.

        An OPEN breaker lets its half-open probe calls in at once instead of after the rest of its
        wait, so a dependency that comes back is used again within a probe interval. Only once per
        open period: a dependency that answers health checks but still fails calls (or is slow)
        opens again and then sits out its whole, growing wait. True when the wait was cut short.
        """
        with self._lock:
            if self._state is not BreakerState.OPEN or self._early_probe_used:
                return False
            self._early_probe_used = True
            self._open_until = min(self._open_until, self._clock())
            return True

    # ---- operators ---------------------------------------------------------------------------

    def force_open(self) -> None:
        """Refuse every call until `reset()`."""
        self._set(BreakerState.FORCED_OPEN)

    def disable(self) -> None:
        """Admit every call and never trip, until `reset()`; statistics are still kept."""
        self._set(BreakerState.DISABLED)

    def reset(self) -> None:
        """Back to CLOSED with an empty window and the initial wait; earlier permits no longer count."""
        self._set(BreakerState.CLOSED)

    def _set(self, state: BreakerState) -> None:
        """Operator-driven state change (a reset of a closed breaker still starts afresh, silently)."""
        with self._lock:
            now = self._clock()
            if self._state is state:
                if state is BreakerState.CLOSED:
                    self._window.clear()
                    self._wait = self.config.wait_open
                    self._generation += 1
                change = None
            else:
                change = self._move(state, now)
        self._notify(change)

    # ---- convenience wrapper -----------------------------------------------------------------

    async def call(
        self,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        fallback: Callable[[Exception], Awaitable[T]] | None = None,
        is_failure: Callable[[Exception], bool] = _always,
        **kwargs: Any,
    ) -> T:
        """Await `fn(*args, **kwargs)` through the breaker, answering with `await fallback(exc)` when given.

        The fallback runs when the breaker refuses the call or the call fails. Exceptions for which
        `is_failure` is false (the request's own fault) and cancellation are not counted and propagate.
        A `TimeoutError` from `fn` counts as a timeout; put the call's timeout inside `fn` so the breaker
        sees it (a cancellation from outside is the caller's and is ignored).
        """
        try:
            permit = self.acquire()
        except BreakerOpenError as refused:
            if fallback is None:
                raise
            return await self._fallback(fallback, refused)
        try:
            result = await fn(*args, **kwargs)
        except Exception as exc:
            if not self._is_failure(is_failure, exc):
                permit.ignore()
                raise
            permit.failure(timeout=isinstance(exc, TimeoutError))
            if fallback is None:
                raise
            return await self._fallback(fallback, exc)
        except BaseException:
            permit.ignore()
            raise
        permit.success()
        return result

    def _is_failure(self, predicate: Callable[[Exception], bool], exc: Exception) -> bool:
        """Ask the failure predicate; if it raises, count the call as failed rather than leak the permit."""
        try:
            return bool(predicate(exc))
        except Exception:
            log.exception("circuit breaker %s: is_failure raised; counting the call as failed", self.name)
            return True

    async def _fallback(self, fallback: Callable[[Exception], Awaitable[T]], exc: Exception) -> T:
        """Run the fallback and count whether it worked."""
        try:
            value = await fallback(exc)
        except Exception:
            self._count_fallback(ok=False)
            raise
        self._count_fallback(ok=True)
        return value

    def record_fallback(self, ok: bool) -> None:
        """Count a fallback served by a caller that runs its own fallbacks (the mesh's dependency client)."""
        self._count_fallback(ok)

    def _count_fallback(self, ok: bool) -> None:
        """Add one fallback outcome to the rolling statistics."""
        with self._lock:
            bucket = self._stats.bucket(self._clock())
            if ok:
                bucket.fallback_success += 1
            else:
                bucket.fallback_failure += 1

    # ---- status stream -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The last ten seconds in the fields of Hystrix's `hystrix.stream` (latencies in milliseconds).

        rollingCountFailure includes timeouts (rollingCountTimeout is the subset that timed out);
        requestCount = successes + failures + short-circuited; errorCount = failures + short-circuited.
        Percentiles are nearest-rank over the recorded latencies.
        """
        with self._lock:
            now = self._clock()
            buckets = self._stats.live(now)
            state = self._state
            in_flight = self._in_flight
            samples = sorted(value for bucket in buckets for value in bucket.samples_ms)
            latency_count = sum(b.latency_count for b in buckets)
            latency_sum = sum(b.latency_sum_ms for b in buckets)

            def total(field_name: str) -> int:
                return sum(getattr(b, field_name) for b in buckets)

            counts = {
                name: total(name)
                for name in (
                    "success",
                    "failure",
                    "timeout",
                    "short_circuited",
                    "fallback_success",
                    "fallback_failure",
                    "slow",
                )
            }
        errors = counts["failure"] + counts["short_circuited"]
        requests = counts["success"] + errors
        config = self.config
        return {
            "type": "HystrixCommand",
            "name": self.name,
            "group": self.group,
            "state": state.name,
            "isCircuitBreakerOpen": state
            in (BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.FORCED_OPEN),
            "errorPercentage": int(errors * 100 / requests) if requests else 0,
            "requestCount": requests,
            "errorCount": errors,
            "rollingCountSuccess": counts["success"],
            "rollingCountFailure": counts["failure"],
            "rollingCountTimeout": counts["timeout"],
            "rollingCountShortCircuited": counts["short_circuited"],
            "rollingCountFallbackSuccess": counts["fallback_success"],
            "rollingCountFallbackFailure": counts["fallback_failure"],
            "rollingCountSlow": counts["slow"],
            "latencyTotal_mean": round(latency_sum / latency_count, 3) if latency_count else 0.0,
            "latencyTotal": {p: round(percentile(samples, float(p)), 3) for p in PERCENTILES},
            "currentConcurrentExecutionCount": in_flight,
            "propertyValue_circuitBreakerErrorThresholdPercentage": round(
                config.failure_rate_threshold * 100
            ),
            "propertyValue_circuitBreakerRequestVolumeThreshold": config.minimum_calls,
            "propertyValue_circuitBreakerSleepWindowInMilliseconds": round(config.wait_open * 1000),
            "propertyValue_circuitBreakerForceOpen": state is BreakerState.FORCED_OPEN,
            "propertyValue_circuitBreakerForceClosed": state is BreakerState.DISABLED,
            "reportingHosts": 1,
        }
