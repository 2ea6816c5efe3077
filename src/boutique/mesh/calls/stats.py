"""The client metrics of one dependency's calls, with the per-label updaters cached for the hot path."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from boutique.mesh import metrics


class CallMetrics:
    """Counts calls by method and outcome, their latency, retries, budget exhaustion and fallbacks.

    Finding a series by label values costs more than updating it, so the updater of every (method,
    outcome) seen is kept.
    """

    def __init__(self, dependency: str) -> None:
        self.dependency = dependency
        # By outcome, then method: two lookups of strings cost less than building and hashing a pair.
        self._counters: defaultdict[str, dict[str, Callable[[], None]]] = defaultdict(dict)
        self._histograms: dict[str, Callable[[float], None]] = {}

    def finished(self, method: str, outcome: str, seconds: float | None = None) -> None:
        """Count a finished call by outcome and, when `seconds` is given, observe its latency."""
        by_method = self._counters[outcome]
        count = by_method.get(method)
        if count is None:
            count = by_method[method] = metrics.CLIENT_STATS.count(self.dependency, method, outcome).inc
        count()
        if seconds is None:
            return
        observe = self._histograms.get(method)
        if observe is None:
            observe = self._histograms[method] = metrics.CLIENT_STATS.latency(self.dependency, method).observe
        observe(seconds)

    def retried(self, method: str) -> None:
        """Count a retry sent to another instance."""
        metrics.RETRIES.labels(self.dependency, method).inc()

    def budget_exhausted(self) -> None:
        """Count a retry the retry budget refused."""
        metrics.BUDGET_EXHAUSTED.labels(self.dependency).inc()

    def fell_back(self) -> None:
        """Count a call its fallback answered."""
        metrics.FALLBACKS.labels(self.dependency).inc()
