"""Outlier ejection: hold an instance out of rotation after consecutive failures, for a growing time."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence

from boutique.mesh.balancing.endpoint import Endpoint

log = logging.getLogger(__name__)

EJECTED = "ejected"
RETURNED = "returned"

EventCallback = Callable[[str, Endpoint], None]


class OutlierDetector:
    """Ejects an endpoint after `consecutive_failures` failures in a row, for base * times ejected (capped).

    Never holds out more than `max_ejected_fraction` of a balancer's endpoints: an ejection that would
    exceed it is skipped (counted in `ejections_skipped`) and tried again on the endpoint's next failure.
    Ejected endpoints come back on their own when their time is up; the return is noticed (and the
    "returned" event emitted) at the next `refresh`, which the balancer runs on every pick and report.
    An endpoint that stays healthy for `max_ejection` seconds after a return has its ejection multiplier
    lowered by one for each such period, so an old incident does not lengthen a new ejection forever.
    """

    def __init__(
        self,
        consecutive_failures: int = 3,
        base_ejection: float = 1.0,
        max_ejection: float = 30.0,
        max_ejected_fraction: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        on_event: EventCallback | None = None,
    ) -> None:
        if consecutive_failures < 1:
            raise ValueError("consecutive_failures must be at least 1")
        if base_ejection <= 0 or max_ejection < base_ejection:
            raise ValueError("need 0 < base_ejection <= max_ejection")
        if not 0.0 <= max_ejected_fraction <= 1.0:
            raise ValueError("max_ejected_fraction must be between 0 and 1")
        self.consecutive_failures = consecutive_failures
        self.base_ejection = base_ejection
        self.max_ejection = max_ejection
        self.max_ejected_fraction = max_ejected_fraction
        self.clock = clock
        self.on_event = on_event
        self.ejections_total = 0
        self.held_out = 0  # endpoints ejected and not yet returned (lets picks skip the checks when 0)
        self.ejections_skipped = 0

    def record(
        self, endpoint: Endpoint, ok: bool, members: Sequence[Endpoint], now: float | None = None
    ) -> bool:
        """Judge an endpoint after `on_finish` updated its streak; True when this result ejected it.

        `members` is the balancer's current endpoint list; an endpoint no longer in it is never ejected.
        """
        now = self.clock() if now is None else now
        self._return_if_due(endpoint, now)
        if ok or endpoint.ejected or endpoint.consecutive_failures < self.consecutive_failures:
            return False
        if not any(member is endpoint for member in members):
            return False
        if self.ejected_count(members, now) + 1 > self.max_ejectable(len(members)):
            self.ejections_skipped += 1
            return False
        self._eject(endpoint, now)
        return True

    def refresh(self, members: Sequence[Endpoint], now: float | None = None) -> None:
        """Bring back every endpoint whose ejection time is up, emitting "returned" for each."""
        now = self.clock() if now is None else now
        for endpoint in members:
            self._return_if_due(endpoint, now)

    def ejected_count(self, members: Sequence[Endpoint], now: float) -> int:
        """How many of `members` are held out at `now`."""
        return sum(1 for endpoint in members if endpoint.is_ejected(now))

    def max_ejectable(self, size: int) -> int:
        """The most endpoints of a set of `size` that may be ejected at once."""
        return math.floor(size * self.max_ejected_fraction + 1e-9)

    def ejection_time(self, times_ejected: int) -> float:
        """How long the `times_ejected`-th ejection in a row lasts."""
        return min(self.base_ejection * max(1, times_ejected), self.max_ejection)

    def _eject(self, endpoint: Endpoint, now: float) -> None:
        """Hold the endpoint out, lengthening the time by its ejection count."""
        if endpoint.returned_at is not None:
            healthy = max(0.0, now - endpoint.returned_at)
            forgiven = int(healthy // self.max_ejection)
            endpoint.times_ejected = max(0, endpoint.times_ejected - forgiven)
        endpoint.times_ejected += 1
        endpoint.ejected = True
        self.held_out += 1
        endpoint.ejected_until = now + self.ejection_time(endpoint.times_ejected)
        self.ejections_total += 1
        self._emit(EJECTED, endpoint)

    def _return_if_due(self, endpoint: Endpoint, now: float) -> None:
        """Put an ejected endpoint back once its time is up, with a fresh failure streak."""
        if endpoint.ejected and now >= endpoint.ejected_until:
            endpoint.ejected = False
            self.held_out = max(0, self.held_out - 1)
            endpoint.consecutive_failures = 0
            endpoint.returned_at = endpoint.ejected_until
            self._emit(RETURNED, endpoint)

    def _emit(self, kind: str, endpoint: Endpoint) -> None:
        """Tell the callback; its errors are logged, never allowed to break a pick."""
        if self.on_event is None:
            return
        try:
            self.on_event(kind, endpoint)
        except Exception:
            log.exception("outlier event callback failed", extra={"event": kind, "instance": endpoint.id})
