"""Child-side helpers for processes started by `boutique up`."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PARENT_VARIABLE = "BOUTIQUE_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to send SIGTERM when the supervising `boutique up` dies, even by kill -9.

    Clean shutdowns never need it; it keeps a crashed supervisor from leaving orphans behind.
    """
    expected = os.environ.get(PARENT_VARIABLE)
    if not expected or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if str(os.getppid()) != expected:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)
