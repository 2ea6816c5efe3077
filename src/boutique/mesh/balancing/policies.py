"""Client-side load-balancing policies over a live instance set: round robin, random, least request, peak EWMA."""

from __future__ import annotations

import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence

from boutique.mesh.balancing.endpoint import DEFAULT_DECAY, Endpoint
from boutique.mesh.balancing.outlier import OutlierDetector
from boutique.mesh.instance import Instance

POLICIES = ("round_robin", "random", "least_request", "peak_ewma")


class NoEndpointError(LookupError):
    """The balancer has no endpoint at all to pick from."""


class Balancer(ABC):
    """Picks an endpoint per request from a membership that changes under it.

    `pick` skips endpoints the optional outlier detector holds out and instance ids in `exclude`
    (the ones a retry already tried); when that leaves nothing it relaxes those filters rather than
    fail. All randomness comes from `rng`, and time from `now` or the clock (the detector's by default).
    """

    decay: float = DEFAULT_DECAY
    tracks_latency: bool = False  # whether the policy reads the endpoints' latency estimates

    def __init__(
        self,
        rng: random.Random | None = None,
        detector: OutlierDetector | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.rng = rng if rng is not None else random.Random()
        self.detector = detector
        self.clock = clock or (detector.clock if detector is not None else time.monotonic)
        self._endpoints: list[Endpoint] = []

    @property
    def endpoints(self) -> list[Endpoint]:
        """The current endpoints, in the order the last update gave their instances."""
        return list(self._endpoints)

    def update(self, instances: Sequence[Instance]) -> None:
        """Apply a new membership: survivors keep their Endpoint (and state), newcomers get one, leavers go.

        A departed endpoint is only forgotten here; its in-flight requests can still be reported.
        A survivor's Instance is replaced by the new one, so changed metadata (weight) takes effect.
        """
        known = {endpoint.id: endpoint for endpoint in self._endpoints}
        fresh: dict[str, Endpoint] = {}
        for instance in instances:
            if instance.id in fresh:
                continue
            endpoint = known.get(instance.id)
            if endpoint is None:
                endpoint = Endpoint(instance, decay=self.decay, tracks_latency=self.tracks_latency)
            else:
                endpoint.instance = instance
            fresh[instance.id] = endpoint
        self._endpoints = list(fresh.values())

    def pick(self, exclude: Collection[str] = (), now: float | None = None) -> Endpoint:
        """Choose the endpoint for the next request; raise NoEndpointError when there is none at all."""
        if not self._endpoints:
            raise NoEndpointError("no endpoints to pick from")
        now = self._now(now)
        if not exclude and (self.detector is None or self.detector.held_out == 0):
            # The common case: nobody ejected, nothing to avoid — every endpoint is a candidate.
            endpoints = self._endpoints
            return endpoints[0] if len(endpoints) == 1 else self._choose(endpoints, now)
        if self.detector is not None:
            self.detector.refresh(self._endpoints, now)
        available = [e for e in self._endpoints if not e.is_ejected(now)]
        candidates = [e for e in available if e.id not in exclude]
        if not candidates:
            candidates = available or [e for e in self._endpoints if e.id not in exclude] or self._endpoints
        if len(candidates) == 1:
            return candidates[0]
        return self._choose(candidates, now)

    def report(self, endpoint: Endpoint, ok: bool, latency: float, now: float | None = None) -> None:
        """Record a request's end on its endpoint and let the outlier detector judge it."""
        if now is None:
            now = self.clock()
        endpoint.on_finish(ok, latency, now)
        if self.detector is not None and not (ok and not endpoint.ejected):
            self.detector.record(endpoint, ok, self._endpoints, now)

    @abstractmethod
    def _choose(self, candidates: list[Endpoint], now: float) -> Endpoint:
        """The policy proper: pick one of two or more candidates."""

    def _now(self, now: float | None) -> float:
        """The given time, or the clock's."""
        return self.clock() if now is None else now

    def _two(self, candidates: list[Endpoint]) -> tuple[Endpoint, Endpoint]:
        """Two distinct candidates chosen uniformly at random (the power of two choices)."""
        draw = self.rng.random
        count = len(candidates)
        first = int(draw() * count)
        second = int(draw() * (count - 1))  # among the others: shift past `first`
        return candidates[first], candidates[second + (second >= first)]


class RoundRobin(Balancer):
    """Smooth weighted round robin: each endpoint in turn, heavier ones proportionally more often, interleaved."""

    def __init__(
        self,
        rng: random.Random | None = None,
        detector: OutlierDetector | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(rng, detector, clock)
        self._credit: dict[Endpoint, float] = {}

    def _choose(self, candidates: list[Endpoint], now: float) -> Endpoint:
        """Add each candidate's weight to its credit, take the richest, charge it the round's total."""
        best: Endpoint | None = None
        for endpoint in candidates:
            credit = self._credit.get(endpoint, 0.0) + endpoint.weight
            self._credit[endpoint] = credit
            if best is None or credit > self._credit[best]:
                best = endpoint
        assert best is not None
        self._credit[best] -= sum(endpoint.weight for endpoint in candidates)
        return best

    def update(self, instances: Sequence[Instance]) -> None:
        """Apply the membership, then forget the departed endpoints' credit."""
        super().update(instances)
        self._credit = {e: self._credit.get(e, 0.0) for e in self._endpoints}


class Random(Balancer):
    """Weighted random choice: each request independently, in proportion to instance weight."""

    def _choose(self, candidates: list[Endpoint], now: float) -> Endpoint:
        """One candidate drawn with probability proportional to its weight."""
        return self.rng.choices(candidates, weights=[e.weight for e in candidates])[0]


class LeastRequest(Balancer):
    """Power of two choices on in-flight requests per unit of weight (the default policy).

    The cost is (outstanding + 1) / weight: with equal weights that orders exactly as outstanding does,
    and the + 1 lets weight decide between idle endpoints too.
    """

    def _choose(self, candidates: list[Endpoint], now: float) -> Endpoint:
        """The cheaper of two random candidates."""
        first, second = self._two(candidates)
        return second if self.cost(second) < self.cost(first) else first

    @staticmethod
    def cost(endpoint: Endpoint) -> float:
        """In-flight load relative to capacity."""
        return (endpoint.outstanding + 1) / endpoint.weight


class PeakEwma(Balancer):
    """Latency-aware power of two choices: cost = latency EWMA * (outstanding + 1) / weight.

    An endpoint with no latency sample yet costs nothing while idle, so it gets tried, but `penalty`
    seconds of assumed latency per in-flight request, so it is not flooded before its first answer.
    """

    tracks_latency = True

    def __init__(
        self,
        rng: random.Random | None = None,
        detector: OutlierDetector | None = None,
        clock: Callable[[], float] | None = None,
        decay: float = DEFAULT_DECAY,
        penalty: float = 10.0,
    ) -> None:
        super().__init__(rng, detector, clock)
        self.decay = decay
        self.penalty = penalty

    def _choose(self, candidates: list[Endpoint], now: float) -> Endpoint:
        """The cheaper of two random candidates."""
        first, second = self._two(candidates)
        return second if self.cost(second, now) < self.cost(first, now) else first

    def cost(self, endpoint: Endpoint, now: float) -> float:
        """Expected wait at this endpoint relative to its weight."""
        if not endpoint.sampled:
            return self.penalty * endpoint.outstanding / endpoint.weight
        return endpoint.latency(now) * (endpoint.outstanding + 1) / endpoint.weight


_FACTORIES: dict[str, type[Balancer]] = {
    "round_robin": RoundRobin,
    "random": Random,
    "least_request": LeastRequest,
    "peak_ewma": PeakEwma,
}


def make_balancer(
    name: str,
    rng: random.Random | None = None,
    *,
    detector: OutlierDetector | None = None,
    clock: Callable[[], float] | None = None,
) -> Balancer:
    """Build the policy named by configuration; ValueError listing the known names otherwise."""
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ValueError(f"unknown balancer {name!r}: choose one of {', '.join(POLICIES)}")
    return factory(rng=rng, detector=detector, clock=clock)
