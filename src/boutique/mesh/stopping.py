"""One time budget for stopping a process, shared by every step between SIGTERM and exit.

Leaving discovery, the drain delay, calls still in flight, closing clients and stores, and delivering
the last spans each wait for something that may be gone already when a whole deployment stops at
once (the registry, the observatory, the services called). Each step takes what it needs from the
budget that is left and keeps back what the later steps need, so the process exits within
BOUTIQUE_STOP_TIMEOUT (4 s by default) of the signal whatever else is stopping.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from boutique.mesh.settings import DEFAULT_STOP_TIMEOUT

DEREGISTER_AT_MOST = 1.0  # seconds for leaving discovery: a registry that is away is not waited for
AT_EXIT = 1.0  # kept back from the last spans for the interpreter's own exit (threads, channels, modules)
AFTER_CLOSING = AT_EXIT + 0.5  # kept back from closing (e.g. orders finishing): the last spans get 0.5 s
AFTER_SERVING = AFTER_CLOSING  # kept back from the calls in flight for closing and the last spans


class StopClock:
    """When stopping began and how much of the budget is left; a clock not started yet has it all."""

    def __init__(
        self, budget: float = DEFAULT_STOP_TIMEOUT, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.budget = budget
        self.clock = clock
        self.started_at: float | None = None

    @property
    def started(self) -> bool:
        """Whether stopping has begun."""
        return self.started_at is not None

    def start(self, budget: float | None = None) -> StopClock:
        """Begin stopping now (once: a second signal does not grant more time); `budget` replaces it."""
        if self.started_at is None:
            if budget is not None:
                self.budget = budget
            self.started_at = self.clock()
        return self

    def left(self) -> float:
        """Seconds of the budget left (all of it before the start, never below 0)."""
        if self.started_at is None:
            return self.budget
        return max(0.0, self.budget - (self.clock() - self.started_at))

    def allow(self, wanted: float, keep: float = 0.0) -> float:
        """At most `wanted` seconds, cut so that `keep` seconds of the budget remain afterwards."""
        return max(0.0, min(wanted, self.left() - keep))


_PROCESS = StopClock()


def process_stop() -> StopClock:
    """The clock of this process's own stop, started by the server that received the signal; what runs
    after its event loop (the last spans' delivery) reads what is left of it."""
    return _PROCESS


def reset_process_stop() -> None:
    """A fresh process clock, for a process that serves again after a stop (tests run several)."""
    global _PROCESS
    _PROCESS = StopClock()
