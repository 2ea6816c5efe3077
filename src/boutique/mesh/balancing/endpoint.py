"""One balanced instance and its live state: requests in flight, latency estimate, failure streak, ejection."""

from __future__ import annotations

import math
from dataclasses import dataclass

from boutique.mesh.instance import Instance

DEFAULT_DECAY = 10.0


@dataclass(eq=False)
class Endpoint:
    """Mutable per-instance state a balancer keeps; equal only to itself, so it can key dicts and sets.

    The caller brackets every request with `on_start()` and `on_finish(...)` (or the balancer's `report`).
    `ewma` is a peak-sensitive moving average of latency in seconds: a slower sample replaces it at once,
    faster samples pull it down with a time constant of `decay` seconds, and it also decays toward zero
    while no samples arrive, so an endpoint once slow gets probed again later. `ejected_until` is a clock
    reading (0.0 when never ejected); `ejected` stays true until the detector has processed the return.
    With `tracks_latency` false (policies that never read it) the latency estimate is not maintained.
    """

    instance: Instance
    decay: float = DEFAULT_DECAY
    outstanding: int = 0
    ewma: float = 0.0
    ewma_stamp: float | None = None
    consecutive_failures: int = 0
    ejected: bool = False
    ejected_until: float = 0.0
    times_ejected: int = 0
    returned_at: float | None = None
    requests: int = 0
    failures: int = 0
    tracks_latency: bool = True

    @property
    def id(self) -> str:
        """The instance id (what `pick(exclude=...)` takes)."""
        return self.instance.id

    @property
    def weight(self) -> float:
        """The instance's balancing weight (always positive)."""
        return self.instance.weight

    @property
    def sampled(self) -> bool:
        """Whether a latency has been observed yet."""
        return self.ewma_stamp is not None

    def is_ejected(self, now: float) -> bool:
        """Whether the outlier detector holds this endpoint out of rotation at `now`."""
        return self.ejected and now < self.ejected_until

    def latency(self, now: float) -> float:
        """The latency estimate at `now`: the EWMA decayed toward zero for the time since the last sample."""
        if self.ewma_stamp is None:
            return 0.0
        return self.ewma * self._keep(now - self.ewma_stamp)

    def on_start(self) -> None:
        """Count a request going out to this endpoint."""
        self.outstanding += 1
        self.requests += 1

    def on_finish(self, ok: bool, latency: float, now: float) -> None:
        """Count a request's end: in-flight count, failure streak, and the latency estimate.

        A failure never lowers the estimate, so an instance that fails fast does not look attractive.
        """
        outstanding = self.outstanding - 1
        self.outstanding = outstanding if outstanding > 0 else 0
        if ok:
            self.consecutive_failures = 0
        else:
            self.consecutive_failures += 1
            self.failures += 1
        if not self.tracks_latency:
            return
        latency = max(0.0, latency)
        if self.ewma_stamp is None:
            self.ewma, self.ewma_stamp = latency, now
            return
        if not ok and latency <= self.ewma:
            return
        if latency >= self.ewma:
            self.ewma = latency
        else:
            keep = self._keep(now - self.ewma_stamp)
            self.ewma = self.ewma * keep + latency * (1.0 - keep)
        self.ewma_stamp = max(self.ewma_stamp, now)

    def _keep(self, elapsed: float) -> float:
        """The weight the old estimate keeps after `elapsed` seconds."""
        if self.decay <= 0:
            return 0.0
        return math.exp(-max(0.0, elapsed) / self.decay)
