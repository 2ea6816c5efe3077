"""The main thread's CPU samples, taken where it runs: a SIGPROF handler on the process's CPU timer.

The profiler's thread reads other threads' frames holding the interpreter lock, so it sees the main
thread (where every service runs its event loop) only where that thread lets the lock go: at the loop's
select, or after the switch interval. A loop serving many short requests would have its CPU charged to
its select and no sample inside a request. Instead, as Google's Cloud Profiler agent does for Python,
`signal.setitimer(ITIMER_PROF)` makes the kernel send SIGPROF each period of the process's CPU time; the
interpreter runs the handler in the main thread at its next instruction boundary, with the frame it
was running. The handler records a cpu sample worth the main thread's own CPU clock advance since its
previous run (`time.thread_time_ns()`; none when it did not advance), so CPU burnt by other threads
(which the timer counts too) is never charged to the main thread; its stack from that frame; the span
of the task (or thread) running there (`ActiveSpans.link`).

The handler is cheap (one walk up the frames: code objects and lines) and never raises. It takes no
lock — it may interrupt the profiler's own code running on the main thread — and only appends to a
bounded deque that the profiler's thread drains (`pending`). System calls interrupted by the signal are
restarted (`signal.siginterrupt(SIGPROF, False)`); those that cannot be (select, epoll) are retried by
the interpreter. The handler is installed only from the main thread, only where SIGPROF has no handler
but ours and the timer is not armed by someone else; `stop` disarms the timer and gives SIGPROF back.
Interval timers are not inherited across fork: a forked process starts its own (and a sampler copied
into it by the fork is forgotten there). A timer left running is disarmed at exit, before the
interpreter gives SIGPROF its default action back (which would end the process).
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

from boutique.mesh.profile_spans import Link

PENDING_LIMIT = 8192  # samples kept for the profiler's thread at most (the oldest go first)

# (Unix ns, CPU ns of the main thread, span, (code, line) leaf first)
SignalSample = tuple[int, int, Link | None, tuple[tuple[CodeType, int], ...]]
Linker = Callable[[int, int], Link | None]

_active: SignalSampler | None = None  # the sampler whose timer runs in this process


def unavailable() -> str:
    """Why the SIGPROF sampler cannot run here ("" when it can): not the main thread, no setitimer, or
    SIGPROF or its timer in someone else's hands."""
    if not hasattr(signal, "setitimer") or not hasattr(signal, "SIGPROF"):
        return "no setitimer on this platform"
    if threading.current_thread() is not threading.main_thread():
        return "not started from the main thread"
    if _active is not None:
        return "SIGPROF is taken by another profiler of this process"
    current = signal.getsignal(signal.SIGPROF)
    ours = isinstance(getattr(current, "__self__", None), SignalSampler)
    if not ours and current not in (signal.SIG_DFL, signal.SIG_IGN):
        return "SIGPROF has a handler of its own"
    if signal.getitimer(signal.ITIMER_PROF) != (0.0, 0.0):
        return "the CPU timer (ITIMER_PROF) is armed by someone else"
    return ""


class SignalSampler:
    """Takes the main thread's cpu samples from a SIGPROF handler; `pending` holds them for the profiler."""

    def __init__(self, period_ns: int, link: Linker | None = None) -> None:
        self.period_ns = period_ns
        self.pending: deque[SignalSample] = deque(maxlen=PENDING_LIMIT)
        self.ident = threading.main_thread().ident or 0
        self.runs = 0  # handler runs
        self.errors = 0  # handler runs that failed (never raised)
        self._link = link
        self._cpu = 0
        self._previous: Any = signal.SIG_DFL

    def start(self) -> bool:
        """Install the handler and arm the timer; False (and nothing changed) when `unavailable()`."""
        global _active
        if unavailable():
            return False
        self._previous = signal.getsignal(signal.SIGPROF)
        if isinstance(getattr(self._previous, "__self__", None), SignalSampler):
            self._previous = signal.SIG_DFL  # a stopped one of ours, or one copied by a fork
        self._cpu = time.thread_time_ns()
        signal.signal(signal.SIGPROF, self._handle)
        signal.siginterrupt(signal.SIGPROF, False)
        period = self.period_ns / 1e9
        signal.setitimer(signal.ITIMER_PROF, period, period)
        _active = self
        return True

    @property
    def running(self) -> bool:
        """Whether this sampler's timer is armed."""
        return _active is self

    def stop(self) -> None:
        """Disarm the timer; from the main thread, give SIGPROF back (pending signals discarded first)."""
        global _active
        if _active is not self:
            return
        _active = None
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        if threading.current_thread() is threading.main_thread():
            # Ignoring discards a signal already on its way; its default action would end the process.
            signal.signal(signal.SIGPROF, signal.SIG_IGN)
            signal.signal(signal.SIGPROF, self._previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        """SIGPROF, in the main thread: one cpu sample worth its CPU since the previous run."""
        try:
            used = time.thread_time_ns()
            advance = used - self._cpu
            if advance <= 0 or frame is None:
                return
            self._cpu = used
            now = time.time_ns()
            stack = []
            while frame is not None:
                stack.append((frame.f_code, frame.f_lineno or 0))
                frame = frame.f_back
            link = self._link(self.ident, now) if self._link is not None else None
            self.pending.append((now, advance, link, tuple(stack)))
            self.runs += 1
        except Exception:  # a signal handler must never raise into the code it interrupted
            self.errors += 1


def _forget_after_fork() -> None:
    """In a forked child: no timer runs (itimers are not inherited), so no sampler is active."""
    global _active
    _active = None


def _stop_at_exit() -> None:
    """Disarm a timer still running at exit: the interpreter's last steps put SIGPROF back to its default
    action, which would end the process ("Profiling timer expired") at the next expiry."""
    if _active is not None:
        _active.stop()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
atexit.register(_stop_at_exit)
