"""Deadline propagation: an incoming call's deadline bounds every outgoing call made while serving it."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

from boutique.mesh.errors import DeadlineExceeded

_DEADLINE: ContextVar[float | None] = ContextVar("boutique_mesh_deadline", default=None)

# gRPC sends a call's deadline as a relative `grpc-timeout`, which a server reads when it gets to the
# request: a process stopped for 15 s and resumed would see a fresh budget for calls whose caller gave
# up long ago. The mesh also sends the absolute deadline (Unix time in milliseconds) in this metadata
# key, and its servers honour the earlier of the two. Hosts' clocks must agree (NTP) for it to help.
DEADLINE_HEADER = "x-deadline-unix-ms"


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


def header_value(timeout: float) -> str:
    """The absolute-deadline metadata value for a call that may take `timeout` seconds from now."""
    return str(int((time.time() + timeout) * 1000))


def from_metadata(metadata: Sequence[tuple[str, str | bytes]] | None) -> float | None:
    """Seconds left before the absolute deadline a caller sent in metadata (None when it sent none)."""
    for key, value in metadata or ():
        if key == DEADLINE_HEADER:
            try:
                return int(value) / 1000 - time.time()
            except (TypeError, ValueError):
                return None
    return None


def check(what: str, need: float = 0.0) -> None:
    """Raise DeadlineExceeded unless more than `need` seconds of the current deadline are left.

    Called before each side effect (a charge, a shipment, a mail, emptying a cart): once the caller
    has given up, nothing more may happen on its behalf.
    """
    left = remaining()
    if left is not None and left <= need:
        raise DeadlineExceeded(
            f"not enough time left to {what}: {max(0.0, left) * 1000:.0f} ms of the caller's deadline "
            f"remain, {need * 1000:.0f} ms needed"
        )


@contextmanager
def detached(seconds: float) -> Iterator[None]:
    """A deadline of its own for the block, ignoring the caller's: for work that must finish after the
    caller gave up, such as undoing a charge or completing an order already shipped."""
    token = _DEADLINE.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _DEADLINE.reset(token)
