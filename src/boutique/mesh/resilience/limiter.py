"""Adaptive concurrency limiting: admit at most `limit` requests at once, refuse the rest at once, and move
the limit with the latency the admitted requests see.

A server that takes every request queues them; past its capacity each waits longer until it is useless.
A concurrency limit keeps the queue short: requests over the limit are refused at once (cheap, and the
caller can go elsewhere), while the admitted ones finish near their unloaded latency. The limit itself is
found by measuring, the way TCP finds a congestion window, since nobody knows a process's capacity on a
shared machine in advance.

`GradientLimit` follows the gradient idea of Netflix's concurrency-limits (Gradient2) and Envoy's adaptive
concurrency filter: per sampling window, compare the window's median latency with the no-load latency and
scale the limit by that ratio (the gradient), plus a queue allowance of sqrt(limit) so it can probe
upwards, smoothed. The no-load latency is re-measured now and then by holding the limit at its minimum for
one window, as Envoy measures its minRTT. Its own choices: queueing up to `tolerance` times the no-load
latency plus `slack` seconds counts as none; a limit less than half in use is never cut (the latency
came from elsewhere) and floats up while latency is fine; and the re-measuring happens only while the
limit is cutting, so a healthy server never sheds for it.

`ConcurrencyLimiter` enforces a `Limit`. It takes a short lock to count a request in or out and never
holds it across the request, so it is safe from asyncio tasks and threads alike.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

MODES = ("on", "fixed", "off")
DEFAULT_RETRY_AFTER = 0.1  # seconds; the hint while no latency has been measured yet
MAX_WINDOW_SAMPLES = 2048  # latencies kept per window; beyond that a random one is replaced
CUTTING_WINDOWS = 10  # windows in a row of cutting (1 s) before the baseline is re-measured: not for a blip


class Limit(Protocol):
    """How many requests may be in flight, adjusted (or not) from the latency of finished ones."""

    @property
    def limit(self) -> int:
        """Requests that may be in flight now (at least 1)."""
        ...

    @property
    def rtt(self) -> float:
        """A recent typical latency in seconds (0.0 while unknown): how soon a slot frees up."""
        ...

    def update(self, rtt: float, in_flight: int, now: float) -> None:
        """One admitted request took `rtt` seconds; `in_flight` were admitted when it started."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """The algorithm's state, for the status endpoint."""
        ...


class FixedLimit:
    """A limit that never moves: a plain cap on requests in flight."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a fixed limit must be at least 1, got {limit}")
        self._limit = limit

    @property
    def limit(self) -> int:
        """The cap."""
        return self._limit

    @property
    def rtt(self) -> float:
        """Not measured: always 0.0."""
        return 0.0

    def update(self, rtt: float, in_flight: int, now: float) -> None:
        """Ignored: the limit is fixed."""

    def snapshot(self) -> dict[str, Any]:
        """Kind and limit."""
        return {"algorithm": "fixed", "limit": self._limit}


class GradientLimit:
    """A limit scaled each window by the gradient no-load latency / current latency (see the module doc).

    Per window of at least `window` seconds and `min_samples` finished requests:

        rtt       = median latency of the window
        baseline  = lowest window median of the last `horizon` seconds, never above the last probe's
        gradient  = clamp((baseline * tolerance + slack) / rtt, 0.5, 1.0)
        target    = limit * gradient + sqrt(limit)          (headroom to probe upwards)
        limit     = limit + smoothing * (target - limit), kept within [min_limit, max_limit]
                    (the whole step when the gradient is 0.5: far over, cut fast)

    The gradient is at least 0.5, so one bad window at most halves the target, and at most 1, so growth
    comes from the headroom alone. At a steady overload the limit settles a little above the concurrency
    where latency starts to climb. While latency is fine the limit floats up towards `max_limit`, so
    bursts are admitted (as in Envoy's controller); and a limit less than half in use is never cut, since
    it is not what set the latency (a slow dependency or a busy machine did) and cutting it would only
    shed the next burst.

    The baseline is re-measured the way Envoy's gradient controller measures its minRTT: for one window
    the limit drops to `min_limit`, that window's median becomes the baseline, and the previous limit
    returns. That happens when the limit has been cutting requests (latency above tolerance at a full
    limit) for three windows in a row and `probe_interval` seconds (plus up to 15 % jitter) have passed
    since the last measurement (at once for the first), and when the limit sat at its minimum for
    `stuck_windows` windows in a row (a baseline too low for how busy the machine is now). Without it a
    long overload would ratchet the baseline up, since every window of it is loaded; and a server that
    is never limiting is never probed, so probing sheds nothing on a healthy server.
    """

    def __init__(
        self,
        initial: int = 20,
        min_limit: int = 1,
        max_limit: int = 50,
        *,
        tolerance: float = 1.5,
        slack: float = 0.002,
        smoothing: float = 0.5,
        window: float = 0.1,
        min_samples: int = 10,
        horizon: float = 30.0,
        probe_interval: float = 10.0,
        stuck_windows: int = 5,
        percentile: float = 0.5,
        rng: random.Random | None = None,
    ) -> None:
        if not 1 <= min_limit <= max_limit:
            raise ValueError(f"need 1 <= min_limit <= max_limit, got {min_limit} and {max_limit}")
        if not min_limit <= initial <= max_limit:
            raise ValueError(f"the initial limit {initial} is outside [{min_limit}, {max_limit}]")
        if tolerance < 1.0 or slack < 0.0:
            raise ValueError("tolerance must be >= 1 and slack >= 0")
        if not 0.0 < smoothing <= 1.0 or not 0.0 < percentile < 1.0:
            raise ValueError("smoothing must be in (0, 1] and percentile in (0, 1)")
        if window <= 0 or horizon < window or min_samples < 1 or probe_interval <= 0 or stuck_windows < 1:
            raise ValueError(
                "need window > 0, horizon >= window, min_samples, probe_interval, stuck_windows > 0"
            )
        self.min_limit = min_limit
        self.max_limit = max_limit
        self.tolerance = tolerance
        self.slack = slack
        self.smoothing = smoothing
        self.window = window
        self.min_samples = min_samples
        self.horizon = horizon
        self.probe_interval = probe_interval
        self.stuck_windows = stuck_windows
        self.percentile = percentile
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._estimate = float(initial)
        self._limit = initial
        self._samples: list[float] = []
        self._seen = 0  # samples offered in this window (more than kept once the window is full)
        self._peak = 0  # most requests in flight in this window
        self._window_start: float | None = None
        # (when, median) of recent windows with increasing medians: the front is the sliding minimum.
        self._medians: deque[tuple[float, float]] = deque()
        self._probe_started: float | None = None  # set while the baseline is being measured
        self._probed: float | None = None  # the last measured baseline: a cap the sliding minimum keeps to
        self._next_probe: float | None = None  # None: due as soon as the limit starts cutting
        self._cutting = 0  # windows in a row with latency above tolerance at a full limit
        self._at_min = 0  # windows in a row that ended at min_limit
        self.sample_rtt = 0.0
        self.baseline = 0.0
        self.gradient = 1.0
        self.windows = 0
        self.probes = 0

    @property
    def limit(self) -> int:
        """The current limit."""
        return self._limit

    @property
    def rtt(self) -> float:
        """The median latency of the last window (0.0 before the first)."""
        return self.sample_rtt

    @property
    def probing(self) -> bool:
        """Whether the baseline is being measured (the limit is held at its minimum meanwhile)."""
        return self._probe_started is not None

    def update(self, rtt: float, in_flight: int, now: float) -> None:
        """Add one latency; close the window and move the limit when the window is complete."""
        with self._lock:
            if self._probe_started is not None and now - rtt < self._probe_started:
                return  # admitted before the measurement began, under the old limit: not a no-load sample
            if self._window_start is None:
                self._window_start = now
            self._seen += 1
            if len(self._samples) < MAX_WINDOW_SAMPLES:
                self._samples.append(rtt)
            else:  # reservoir sampling: every latency of the window equally likely to be kept
                slot = self._rng.randrange(self._seen)
                if slot < MAX_WINDOW_SAMPLES:
                    self._samples[slot] = rtt
            if in_flight > self._peak:
                self._peak = in_flight
            if now - self._window_start >= self.window and self._seen >= self.min_samples:
                self._close_window(now)

    def _close_window(self, now: float) -> None:
        """Summarise the window, then finish a probe or move the limit (lock held)."""
        samples = sorted(self._samples)
        median = samples[min(len(samples) - 1, int(self.percentile * len(samples)))]
        peak = self._peak
        self._samples, self._seen, self._peak, self._window_start = [], 0, 0, now
        self.sample_rtt = median
        self.windows += 1
        medians = self._medians
        if self._probe_started is not None:
            self._finish_probe(now, median)
            return
        while medians and medians[-1][1] >= median:
            medians.pop()
        medians.append((now, median))
        while medians[0][0] < now - self.horizon:
            medians.popleft()
        baseline = medians[0][1] if self._probed is None else min(medians[0][1], self._probed)
        self.baseline = baseline
        allowed = baseline * self.tolerance + self.slack
        gradient = self.gradient = max(0.5, min(1.0, allowed / median)) if median > 0 else 1.0
        estimate = self._estimate
        self._cutting = self._cutting + 1 if gradient < 1.0 and peak >= self._limit else 0
        if gradient >= 1.0 or peak >= estimate / 2:  # cut only a limit that is in use (see the doc)
            target = estimate * gradient + math.sqrt(estimate)
            # Smoothed, also deep in overload: a blip of a few windows (a replica dying, a process
            # starting on a busy core) must not cut the limit below what is in flight.
            estimate += self.smoothing * (target - estimate)
            estimate = max(float(self.min_limit), min(float(self.max_limit), estimate))
            self._estimate = estimate
            self._limit = max(1, int(estimate))
        self._at_min = self._at_min + 1 if self._limit <= self.min_limit else 0
        due = self._next_probe is None or now >= self._next_probe
        if (self._cutting >= CUTTING_WINDOWS and due) or self._at_min >= self.stuck_windows:
            self._probe_started = now
            self._limit = self.min_limit

    def _finish_probe(self, now: float, median: float) -> None:
        """The probe window's median is the new baseline; the limit from before the probe returns."""
        self._medians.clear()
        self._medians.append((now, median))
        self.baseline = self._probed = median
        self._probe_started = None
        self._limit = max(1, int(self._estimate))
        self._cutting = 0
        self._at_min = 0
        self._next_probe = now + self.probe_interval * (1.0 + 0.15 * self._rng.random())
        self.probes += 1

    def snapshot(self) -> dict[str, Any]:
        """Limit, latencies (ms) and gradient of the last window, and the baseline measurements."""
        return {
            "algorithm": "gradient",
            "limit": self._limit,
            "min_limit": self.min_limit,
            "max_limit": self.max_limit,
            "sample_rtt_ms": round(self.sample_rtt * 1000, 3),
            "baseline_rtt_ms": round(self.baseline * 1000, 3),
            "gradient": round(self.gradient, 3),
            "probing": self.probing,
            "windows": self.windows,
            "probes": self.probes,
        }


class Permit:
    """One admitted request; `release()` it exactly when the request ends (a second call does nothing)."""

    __slots__ = ("_limiter", "in_flight", "released", "started")

    def __init__(self, limiter: ConcurrencyLimiter, started: float, in_flight: int) -> None:
        self._limiter = limiter
        self.started = started
        self.in_flight = in_flight
        self.released = False

    def release(self, sample: bool = True) -> None:
        """Give the slot back; with `sample` the request's latency feeds the limit (not for cancellations)."""
        if self.released:
            return
        self.released = True
        self._limiter._release(self, sample)


class ConcurrencyLimiter:
    """Admits requests while fewer than `limit.limit` are in flight; refuses (sheds) the others at once."""

    def __init__(
        self, limit: Limit, name: str = "limiter", clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.name = name
        self.clock = clock
        self._lock = threading.Lock()
        self._in_flight = 0
        self._admitted = 0
        self._shed = 0

    def acquire(self) -> Permit | None:
        """A permit for one request, or None when the limit is reached (the request must be shed)."""
        with self._lock:
            in_flight = self._in_flight
            if in_flight >= self.limit.limit:
                self._shed += 1
                return None
            self._in_flight = in_flight = in_flight + 1
            self._admitted += 1
        return Permit(self, self.clock(), in_flight)

    def _release(self, permit: Permit, sample: bool) -> None:
        """Count the request out and, when asked, let the limit learn from its latency."""
        with self._lock:
            self._in_flight -= 1
        if sample:
            now = self.clock()
            self.limit.update(now - permit.started, permit.in_flight, now)

    @property
    def in_flight(self) -> int:
        """Requests admitted and not yet released."""
        return self._in_flight

    @property
    def shed_count(self) -> int:
        """Requests refused since the start."""
        return self._shed

    @property
    def admitted_count(self) -> int:
        """Requests admitted since the start."""
        return self._admitted

    @property
    def current_limit(self) -> int:
        """The limit in force now."""
        return self.limit.limit

    def retry_after(self) -> float:
        """Seconds after which a retry may find room: about one request's latency, within [10 ms, 1 s]."""
        rtt = self.limit.rtt
        return DEFAULT_RETRY_AFTER if rtt <= 0 else max(0.01, min(1.0, rtt))

    def snapshot(self) -> dict[str, Any]:
        """State for /mesh/status: the limit's, plus in-flight, admitted and shed counts."""
        return {
            "name": self.name,
            **self.limit.snapshot(),
            "in_flight": self._in_flight,
            "admitted": self._admitted,
            "shed": self._shed,
        }


@dataclass(frozen=True)
class LimiterSettings:
    """How a server limits concurrency: `on` (adaptive), `fixed` (at `initial`) or `off`, and the bounds.

    `boutique.mesh.settings` reads them from BOUTIQUE_LIMITER and BOUTIQUE_LIMITER_MIN / _MAX / _INITIAL.
    """

    mode: str = "on"
    initial: int = 20
    min_limit: int = 1
    max_limit: int = 200

    def __post_init__(self) -> None:
        """Reject settings no limiter can follow."""
        if self.mode not in MODES:
            raise ValueError(f"BOUTIQUE_LIMITER must be one of {', '.join(MODES)}, not {self.mode!r}")
        if not 1 <= self.min_limit <= self.initial <= self.max_limit:
            raise ValueError(
                "concurrency limits need 1 <= BOUTIQUE_LIMITER_MIN <= BOUTIQUE_LIMITER_INITIAL <= "
                f"BOUTIQUE_LIMITER_MAX, got {self.min_limit}, {self.initial} and {self.max_limit}"
            )

    def build(self, name: str) -> ConcurrencyLimiter | None:
        """The limiter these settings describe, or None when limiting is off."""
        if self.mode == "off":
            return None
        if self.mode == "fixed":
            return ConcurrencyLimiter(FixedLimit(self.initial), name)
        return ConcurrencyLimiter(GradientLimit(self.initial, self.min_limit, self.max_limit), name)
