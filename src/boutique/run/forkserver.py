"""The fork server of `boutique up`: imports what the registry and the shop's services need once, then
forks each of them.

A service started plainly spends most of its start importing some 700 modules; forked from this warm
process it runs only its own start-up, and the pages it never writes stay shared with its siblings
(measured: ~0.05 CPU-s and ~18 MiB of its own memory to SERVING, against ~0.8 CPU-s and ~50 MiB).
This process stays single-threaded and never creates a gRPC channel or server, a thread or an event
loop, so a fork copies no lock another thread holds and no live connection: each service creates its
own, as a plainly started one does.

Protocol, one JSON object per line: `up` writes requests on our stdin and reads replies on our stdout.
The first reply is {"ready": true, ...} once the imports are done (or {"error": ...} and we exit). A
request {"argv": [python, "-m", module, *args], "env": {...}, "log": path, "reaper": pid} is answered
with {"pid": N} or {"error": "..."}. Each service is forked twice and its middle process exits at once,
so the service is re-parented to `up` (a child subreaper, `reaper`), which waits for it and sees its
exit status as for any process it started itself. Closing our stdin ends this process; services go on.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import logging
import os
import random
import runpy
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

from boutique.asyncio_only import keep_trio_out
from boutique.mesh.logs import configure_logging
from boutique.run.child import die_with_parent

log = logging.getLogger(__name__)

# Imported before the first fork, beside every forked kind's own module and the modules named on our
# command line (the one the services run: boutique.cli), so each service finds them in memory. They are
# what a service imports on first use on its way to SERVING (its settings, logs, tracing and flag
# provider, HTTPX's transport, uvicorn's HTTP protocol, the CLI's parser): measured, a service forked
# without them still imports 150-220 modules (the registry 70), with them none. A missing one is skipped.
PRELOAD = (
    "argparse",
    "encodings.idna",
    "importlib.readers",
    "grpc",
    "grpc.aio",
    "grpc_health.v1.health",
    "boutique.shop.proto.demo_pb2_grpc",
    "boutique.mesh.config",
    "boutique.mesh.settings",
    "boutique.mesh.logs",
    "boutique.mesh.tracing",
    "boutique.mesh.log_export",
    "boutique.mesh.metric_export",
    "boutique.mesh.profile_export",
    "boutique.mesh.flags",
    "boutique.mesh.flag_watch",
    "boutique.mesh.stopping",
    "boutique.mesh.registry.server",
    "boutique.run.child",
    "boutique.run.options",
    "boutique.shop.loadgen.runner",
    "openfeature.contrib.provider.flagd",
    "opentelemetry.instrumentation.asgi",
    "httpcore",
    "anyio.lowlevel",
    "anyio._core._sockets",
    "anyio._core._streams",
    "anyio._core._tasks",
    "anyio._backends._asyncio",
    "uvicorn.lifespan.off",
    "uvicorn.protocols.http.auto",
    "uvicorn.protocols.http.h11_impl",
)
FORKED_KINDS = ("registry", "grpc", "http")  # what `up` forks: the registry and the shop's services
# (not Redis, not the load generator under gevent, not the observatory: its imports are its own)
ADOPTION_WAIT = 10.0  # seconds a service waits to become `up`'s child before it gives up
TITLE_ROOM = 96  # bytes of padding in our command line, for each service's own (see _retitle)


@dataclass(frozen=True)
class Request:
    """One service to start: its command line (python -m module args), environment and log file."""

    argv: list[str]
    env: dict[str, str]
    log: str
    reaper: int

    @classmethod
    def parse(cls, line: bytes) -> Request:
        """Decode one request line; ValueError says what is wrong with it."""
        try:
            data = json.loads(line)
            request = cls(list(data["argv"]), dict(data["env"]), str(data["log"]), int(data["reaper"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed request: {exc}") from None
        if len(request.argv) < 3 or request.argv[1] != "-m":
            raise ValueError(f"only `python -m module ...` can be forked, not {request.argv!r}")
        return request


class Lines:
    """Lines read from a raw file descriptor (no file object: a child must close it without a trace)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending = b""

    def next(self) -> bytes | None:
        """The next line, None at end of input."""
        while b"\n" not in self.pending:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return None
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return line


def _reply(fd: int, message: dict[str, Any]) -> None:
    os.write(fd, json.dumps(message).encode() + b"\n")


def _threads() -> int:
    """OS threads in this process (a fork is only safe with one)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def preload(extra: list[str]) -> list[str]:
    """Import PRELOAD, every service's module and `extra`; the names that could not be imported."""
    from boutique.shop.services import SERVICES

    services = [spec.module for spec in SERVICES.values() if spec.kind in FORKED_KINDS]
    missing = []
    for name in [*PRELOAD, *services, *extra]:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def serve(requests: int, replies: int, extra: list[str]) -> Request | None:
    """Import, report ready, then fork one service per request until our stdin closes.

    Returns None in this process at the end, and the request in each forked service (which then runs it).
    """
    began = time.monotonic()
    before = len(sys.modules)
    gc.disable()  # no collection while importing: its freed slots would take each service's first objects
    missing = preload(extra)
    if missing:
        log.warning("not imported (each service imports them if it can)", extra={"modules": missing})
    if _threads() != 1:  # an import started a thread: forking now could copy a held lock
        log.error("cannot fork safely", extra={"threads": _threads()})
        _reply(replies, {"error": f"{_threads()} threads after the imports; forking is unsafe"})
        return None
    gc.freeze()  # what is imported now is never scanned again, so the collector leaves its pages shared
    imported, took = len(sys.modules) - before, round(time.monotonic() - began, 3)
    log.info("ready", extra={"modules": imported, "seconds": took})
    _reply(replies, {"ready": True, "pid": os.getpid(), "modules": imported, "seconds": took})
    lines = Lines(requests)
    while (line := lines.next()) is not None:
        try:
            request = Request.parse(line)
        except ValueError as exc:
            log.error("refused", extra={"error": str(exc)})
            _reply(replies, {"error": str(exc)})
            continue
        pid = _fork(request)
        if pid == 0:  # the service
            os.close(requests)
            os.close(replies)
            return request
        _reply(replies, {"pid": pid} if pid > 0 else {"error": "fork failed"})
    return None


def _fork(request: Request) -> int:
    """Fork the service through a middle process that exits at once; its pid here, 0 in the service."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    read_end, write_end = os.pipe()
    try:
        middle = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        return -1
    if middle == 0:
        os.close(read_end)
        try:
            service = os.fork()
        except OSError:
            os._exit(1)
        if service == 0:
            os.close(write_end)
            return 0
        os.write(write_end, str(service).encode())
        os._exit(0)
    os.close(write_end)
    data = b""
    while chunk := os.read(read_end, 64):
        data += chunk
    os.close(read_end)
    os.waitpid(middle, 0)  # once it is reaped, the service is the reaper's child already
    return int(data) if data.isdigit() else -1


class AdoptionError(Exception):
    """The service did not become the child of `up` (which then could not see it exit)."""


def become(request: Request, dispositions: dict[signal.Signals, Any]) -> None:
    """Turn this forked process into a service as `up` starts one plainly: its own session, log file,
    environment and command line, and nothing of this server's state it must not share."""
    os.setsid()  # leads its own process group, which `up` and `boutique chaos` signal as a whole
    null = os.open(os.devnull, os.O_RDONLY)
    log = os.open(request.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    _await_adoption(request.reaper)
    os.environ.clear()
    os.environ.update(request.env)
    for sig, handler in dispositions.items():
        if signal.getsignal(sig) != handler:
            with contextlib.suppress(OSError, ValueError, TypeError):
                signal.signal(sig, handler)
    signal.set_wakeup_fd(-1)
    random.seed()  # (Python reseeds at fork too; trace and span ids come from this generator)
    gc.enable()
    root = logging.getLogger()  # ours: the service sets up its own, as when started plainly
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    sys.argv = [request.argv[0], *request.argv[3:]]
    _retitle(request.argv)


def _await_adoption(reaper: int) -> None:
    """Wait until the middle process has exited and `reaper` (`up`) is our parent."""
    deadline = time.monotonic() + ADOPTION_WAIT
    while (parent := os.getppid()) != reaper:
        if time.monotonic() > deadline:
            raise AdoptionError(
                f"boutique: this process was handed to pid {parent}, not to `boutique up` (pid {reaper})"
            )
        time.sleep(0.001)


def _retitle(argv: list[str]) -> None:
    """Show the service's own command line in ps, top and `pgrep -f` (instead of the fork server's).

    Linux reads /proc/PID/cmdline from the process's argument memory, which the fork server's command
    line reserved room in (TITLE_ROOM bytes); when it does not fit, the server's command line stays."""
    try:
        with open("/proc/self/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start and arg_end, fields 48 and 49
        title = b"\0".join(arg.encode() for arg in argv) + b"\0"
        if len(title) > end - start:
            return
        with open("/proc/self/mem", "r+b", buffering=0) as memory:
            memory.seek(start)
            memory.write(title.ljust(end - start, b"\0"))
    except (OSError, ValueError, IndexError):
        return


def main() -> int:
    """Run the fork server on stdin/stdout (started by `up`); in each forked child, run its service.

    Arguments: modules to import beside PRELOAD; blank ones are room for each service's command line."""
    keep_trio_out()
    dispositions = {sig: signal.getsignal(sig) for sig in signal.valid_signals()}
    dispositions = {sig: handler for sig, handler in dispositions.items() if handler is not None}
    die_with_parent()
    requests, replies = os.dup(0), os.dup(1)  # the protocol; stdout becomes our log (stderr)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    configure_logging("forkserver", f"forkserver-{os.getpid()}", stream=sys.stderr)
    try:
        request = serve(requests, replies, [arg for arg in sys.argv[1:] if arg.strip()])
    except Exception:
        log.exception("failed")
        with contextlib.suppress(OSError):
            _reply(replies, {"error": "the fork server failed (see its log)"})
        return 1
    if request is None:
        return 0
    try:
        become(request, dispositions)
    except (AdoptionError, OSError) as exc:
        print(exc, file=sys.stderr, flush=True)
        return 70
    _forget(request.argv[2])
    runpy.run_module(request.argv[2], run_name="__main__", alter_sys=True)  # as `python -m` does
    return 0


def _forget(name: str) -> None:
    """Forget the imported module `name` (what it imported stays), so that it runs as a fresh __main__
    just as under `python -m`, which would warn about a module imported before it is run."""
    sys.modules.pop(name, None)
    parent, _, child = name.rpartition(".")
    if parent in sys.modules:
        with contextlib.suppress(AttributeError):
            delattr(sys.modules[parent], child)


if __name__ == "__main__":
    sys.exit(main())
