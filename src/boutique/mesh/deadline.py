"""Deadline propagation: an incoming call's deadline bounds every outgoing call made while serving it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_DEADLINE: ContextVar[float | None] = ContextVar("boutique_mesh_deadline", default=None)


def remaining() -> float | None:
    """Seconds left before the current incoming deadline (None when there is none)."""
    deadline = _DEADLINE.get()
    return None if deadline is None else deadline - time.monotonic()


def bound(timeout: float, now: float | None = None) -> float:
    """The timeout an outgoing call may use: its own, cut to what the incoming deadline leaves."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - (time.monotonic() if now is None else now)
    return max(0.0, min(timeout, left))


@contextmanager
def deadline_in(seconds: float | None) -> Iterator[None]:
    """Set the deadline for the block (None leaves the outer one); a nested deadline never extends it."""
    if seconds is None:
        yield
        return
    proposed = time.monotonic() + seconds
    outer = _DEADLINE.get()
    token = _DEADLINE.set(proposed if outer is None else min(outer, proposed))
    try:
        yield
    finally:
        _DEADLINE.reset(token)
