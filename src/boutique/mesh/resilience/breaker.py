"""Circuit breaker: fail fast while a dependency is failing or slow, probe it, and close again once it recovers.

One way to call through it: `permit = breaker.acquire()` (raises `BreakerOpenError` when refused), make the
call, then finish the permit with exactly one of `success()`, `failure()` or `ignore()`. The lock is never
held across the call: `acquire()` takes a short lock, the permit records the outcome under another, so
the breaker is correct from asyncio tasks and from threads alike. A permit remembers the state generation
it was issued in, so a late answer from an earlier state cannot disturb the accounting of the current one.
The decisions are made on an outcome window (windows.py); the status stream's numbers are kept apart
(breaker_stats.py).
"""

from __future__ import annotations

import enum
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from boutique.mesh.resilience.breaker_stats import RollingStats
from boutique.mesh.resilience.windows import CountWindow, OutcomeWindow, TimeWindow

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class BreakerState(enum.Enum):
    """Where the breaker stands; FORCED_OPEN and DISABLED are set only by operators."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


_CLOSED = BreakerState.CLOSED  # for the per-call checks: an enum member lookup costs ~50 ns on Python 3.11
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


class Permit:
    """Leave to make one call; finish it with exactly one of success(), failure() or ignore().

    One is allocated per call, so it holds only what finishing needs: slots, no lock, no closures.
    """

    __slots__ = ("_breaker", "_done", "generation", "half_open", "started", "transition")

    def __init__(
        self,
        breaker: CircuitBreaker,
        generation: int,
        half_open: bool,
        started: float,
        transition: Transition | None,
    ) -> None:
        self._breaker = breaker
        self._done = False
        self.generation = generation
        self.half_open = half_open
        self.started = started
        self.transition = transition  # the state change taking this permit caused, if any

    def success(self, duration: float | None = None) -> Transition | None:
        """The call worked; `duration` in seconds (measured since acquire when omitted)."""
        return self._breaker._complete(self, False, duration, False)

    def failure(self, duration: float | None = None, timeout: bool = False) -> Transition | None:
        """The call failed (`timeout=True` also counts it as a timeout in the statistics)."""
        return self._breaker._complete(self, True, duration, timeout)

    def ignore(self) -> Transition | None:
        """The call must not count either way (the caller cancelled, or the request itself was invalid)."""
        return self._breaker._complete(self, None, None, False)


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
        self._stats = RollingStats()
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
            if self._state is _CLOSED:  # the common case, straight through
                self._in_flight += 1
                return Permit(self, self._generation, False, now, None)
            change = None
            if self._state is BreakerState.OPEN and now >= self._open_until:
                change = self._move(BreakerState.HALF_OPEN, now)
            refusal = self._refusal(now)
            if refusal is None:
                half_open = self._state is BreakerState.HALF_OPEN
                self._half_open_in_flight += half_open
                self._in_flight += 1
                generation = self._generation
            else:
                self._stats.short_circuited(now)
        self._notify(change)
        if refusal is not None:
            raise refusal
        return Permit(self, generation, half_open, now, change)

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
        self, permit: Permit, failed: bool | None, duration: float | None, timeout: bool
    ) -> Transition | None:
        """Record a finished call (`failed` None: not counted): statistics always, state only for its generation."""
        with self._lock:
            if permit._done:
                raise RuntimeError("this permit was finished already")
            permit._done = True
            now = self._clock()
            took = now - permit.started if duration is None else duration
            if took < 0.0:
                took = 0.0
            self._in_flight -= 1
            slow_after = self.config.slow_call_duration
            slow = slow_after is not None and took > slow_after
            if failed is not None:
                self._stats.record(now, failed, timeout, slow, took)
            if permit.generation != self._generation:
                return None  # a late answer from an earlier state: it counts in the statistics only
            if permit.half_open:
                change = self._judge_probe(failed, slow, now)
            elif self._state is not _CLOSED or failed is None:
                return None
            else:
                self._window.record(failed, slow, now)
                # A success cannot raise the failure or slow-call rate of a count window holding none.
                count = self._count_window
                if count is not None and not (count.failures or count.slow):
                    return None
                if not self._should_trip(now):
                    return None
                change = self._move(BreakerState.OPEN, now)
        self._notify(change)
        return change

    def _judge_probe(self, failed: bool | None, slow: bool, now: float) -> Transition | None:
        """Apply the outcome of a current half-open probe (lock held).

        A slow probe counts as a failed probe: the dependency has not recovered.
        """
        self._half_open_in_flight -= 1
        if failed is None:
            return None
        if failed or slow:
            return self._move(BreakerState.OPEN, now)
        self._half_open_successes += 1
        if self._half_open_successes >= self.config.half_open_successes_to_close:
            return self._move(BreakerState.CLOSED, now)
        return None

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

    def record_fallback(self, ok: bool) -> None:
        """Count a fallback served by the caller (the mesh's dependency client runs its own fallbacks)."""
        with self._lock:
            self._stats.fallback(self._clock(), ok)

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

    # ---- status stream -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The last ten seconds as one event of Hystrix's `hystrix.stream` (latencies in milliseconds)."""
        with self._lock:
            state = self._state
            in_flight = self._in_flight
            rolling = self._stats.fields(self._clock())
        config = self.config
        return {
            "type": "HystrixCommand",
            "name": self.name,
            "group": self.group,
            "state": state.name,
            "isCircuitBreakerOpen": state
            in (BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.FORCED_OPEN),
            **rolling,
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
