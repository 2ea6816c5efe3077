"""Forked by the fork server in tests: one JSON line on stdout saying what this process was handed."""

from __future__ import annotations

import gc
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading

from opentelemetry import trace


def report() -> dict[str, object]:
    """What a service started here would find: ids, session, files, environment and inherited state."""
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "pgid": os.getpgid(0),
        "sid": os.getsid(0),
        "argv": sys.argv[1:],
        "main": sys.modules["__main__"].__name__,
        "cmdline": [a.decode() for a in open("/proc/self/cmdline", "rb").read().split(b"\0") if a],
        "probe_value": os.environ.get("PROBE_VALUE"),
        "parent_variable": os.environ.get("BOUTIQUE_PARENT_PID"),
        "random": random.getrandbits(64),
        "sigint": _disposition(signal.SIGINT),
        "sigterm_default": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
        "root_handlers": len(logging.getLogger().handlers),
        "gc_enabled": gc.isenabled(),
        "threads": threading.active_count(),
        "stdin": os.readlink("/proc/self/fd/0"),
        "stdout": os.readlink("/proc/self/fd/1"),
        "stderr": os.readlink("/proc/self/fd/2"),
        "tracer_provider": type(trace.get_tracer_provider()).__name__,
        "other_fds": _open_fds(),
    }


def _disposition(number: signal.Signals) -> str:
    """How a signal is handled: "default" (Python's own for SIGINT), "ignored", or "handled"."""
    handler = signal.getsignal(number)
    if handler in (signal.SIG_DFL, signal.default_int_handler):
        return "default"
    return "ignored" if handler == signal.SIG_IGN else "handled"


def _open_fds() -> list[str]:
    """What this process has open beyond stdin, stdout and stderr (the listing's own descriptor aside)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        if int(fd) > 2:
            try:
                found.append(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:  # the directory listing's descriptor, closed by now
                continue
    return found


if __name__ == "__main__":
    print(json.dumps(report()))
    print("to stderr", file=sys.stderr)
    if os.environ.get("PROBE_ORPHAN"):  # leave a process behind: the subreaper above inherits it
        subprocess.Popen(["sleep", "0.2"])
    sys.exit(int(os.environ.get("PROBE_EXIT", "0")))
