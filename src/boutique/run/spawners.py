"""How `boutique up` starts a process: plainly (its own interpreter), or forked from the fork server.

`up --spawn fork` (the default) forks the registry and the shop's services from one process that has
imported what they need (boutique.run.forkserver); the observatory, Redis and the load generator, and
everything once the fork server is gone, start plainly. A forked service is still `up`'s own child: `up`
is a child subreaper, the fork server forks each service through a middle process that exits at once,
and the kernel hands the service to `up`, which waits for it through a pidfd and sees its exit status
exactly as for a process it started itself (so restarts, `boutique chaos` and shutdown treat both
alike). Nothing else holds a service's exit status, so no report can be lost with the fork server.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from boutique.run.child import PARENT_VARIABLE
from boutique.run.forkserver import FORKED_KINDS, TITLE_ROOM

if TYPE_CHECKING:
    from boutique.run.plan import ProcessPlan

FORK_SERVER_LOG = "forkserver.log"
READY_WAIT = 60.0  # seconds the first fork waits for the fork server's imports before starting plainly
REPLY_WAIT = 10.0  # seconds one fork may take before the fork server is given up
_PR_SET_CHILD_SUBREAPER = 36


class Running(Protocol):
    """A started process as the supervisor sees it."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...


class Adopted:
    """A forked service the kernel handed to this process: waited for through a pidfd."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = self._loop.create_future()
        self._fd = os.pidfd_open(pid)  # it is our child (not reaped by anyone else): the pid is still its
        self._loop.add_reader(self._fd, self._reap)
        self._reap()

    def _reap(self) -> None:
        try:
            found, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere (never by this package): its status is unknown
            found, status = self.pid, 255 << 8
        if found == 0:
            return
        self.returncode = os.waitstatus_to_exitcode(status)
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._exited.set_result(self.returncode)

    async def wait(self) -> int:
        """Wait until the process exits; its exit code (negative: the signal that ended it)."""
        return await asyncio.shield(self._exited)


class Spawner:
    """Starts every process plainly: its own interpreter (or program), in its own session."""

    mode = "plain"

    async def start(self) -> None:
        """Get ready to spawn (nothing to do for plain spawning)."""

    async def spawn(self, plan: ProcessPlan, log: Path) -> tuple[Running, str]:
        """Start `plan` with stdout and stderr appended to `log`; the process and how it was started."""
        with log.open("ab") as out:
            process = await asyncio.create_subprocess_exec(
                *plan.argv,
                env={**os.environ, **plan.env, PARENT_VARIABLE: str(os.getpid())},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        return process, "plain"

    def state(self) -> dict[str, Any]:
        """What up.json says about spawning."""
        return {"mode": self.mode}

    def reap_strays(self, known: set[int]) -> None:
        """Reap exited processes handed to us that we did not start (none when we adopt nothing)."""

    async def close(self, grace: float = 5.0) -> None:
        """Stop whatever helps spawning (nothing for plain spawning)."""


class ForkSpawner(Spawner):
    """Forks the registry and the services from the fork server; anything else (or all, once it is gone)
    starts plainly."""

    mode = "fork"

    def __init__(self, log_dir: Path, note: Callable[[str], None], warm: tuple[str, ...] = ()) -> None:
        self.log_dir = log_dir
        self.note = note
        self.warm = warm  # modules the fork server imports beside its own list: what the services run
        self.server: asyncio.subprocess.Process | None = None
        self.ready: asyncio.Task[bool] | None = None
        self.lost: str | None = None  # why we spawn plainly now
        self.closing = False
        self.forking = 0  # forks whose service may exist before we know its pid
        self._lock = asyncio.Lock()
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the fork server (its imports then run beside the first processes)."""
        if not _can_adopt():
            self._give_up("this system cannot hand forked services to `up` (Linux 5.3 or later needed)")
            return
        with (self.log_dir / FORK_SERVER_LOG).open("ab") as log:
            self.server = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "boutique.run.forkserver",
                *self.warm,
                " " * TITLE_ROOM,  # room for each service's own command line (see forkserver._retitle)
                env={
                    **os.environ,
                    PARENT_VARIABLE: str(os.getpid()),
                    "PYTHONUNBUFFERED": "1",
                    # No fork handlers: the server never starts gRPC, each service starts its own.
                    "GRPC_ENABLE_FORK_SUPPORT": "0",
                },
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        self.ready = asyncio.create_task(self._await_ready())
        self._watch = asyncio.create_task(self._watch_server(self.server))

    async def _await_ready(self) -> bool:
        assert self.server is not None and self.server.stdout is not None
        try:
            line = await asyncio.wait_for(self.server.stdout.readline(), READY_WAIT)
        except (TimeoutError, OSError):
            self._give_up(f"the fork server was not ready within {READY_WAIT:.0f}s")
            return False
        try:
            reply = json.loads(line)
        except ValueError:
            self._give_up(
                f"the fork server exited before it was ready (see {self.log_dir / FORK_SERVER_LOG})"
            )
            return False
        if not reply.get("ready"):
            self._give_up(f"the fork server cannot fork: {reply.get('error', 'no reason given')}")
            return False
        return True

    async def _watch_server(self, server: asyncio.subprocess.Process) -> None:
        code = await server.wait()
        if not self.closing:
            self._give_up(f"the fork server exited ({code}; see {self.log_dir / FORK_SERVER_LOG})")

    def _give_up(self, why: str) -> None:
        """Spawn plainly from now on, and say so once."""
        if self.lost is None:
            self.lost = why
            self.note(f"boutique up: {why}; starting services plainly from now on")
        if self.server is not None and self.server.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.server.kill()

    async def spawn(self, plan: ProcessPlan, log: Path) -> tuple[Running, str]:
        """Fork the registry or a shop service (plainly anything else, or when the fork server is gone)."""
        if plan.kind in FORKED_KINDS:
            forked = await self.fork(plan.argv, {**os.environ, **plan.env}, log)
            if forked is not None:
                return forked, "fork"
        return await super().spawn(plan, log)

    async def fork(self, argv: list[str], env: dict[str, str], log: Path) -> Adopted | None:
        """Fork `python -m module args` (argv) with this environment and log; None when it cannot be."""
        if not await self._can_fork():
            return None
        request = {
            "argv": argv,
            "env": {**env, PARENT_VARIABLE: str(os.getpid())},
            "log": str(log),
            "reaper": os.getpid(),
        }
        pid = await self._fork(request)
        if pid is None:
            return None
        try:
            return Adopted(pid)
        except OSError as exc:  # cannot watch it (out of descriptors?): end it, start plainly
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
                await asyncio.to_thread(os.waitpid, pid, 0)
            self.note(f"boutique up: cannot watch forked pid {pid} ({exc}); starting it plainly")
            return None

    async def _can_fork(self) -> bool:
        """Whether the fork server is there and ready (waiting for its imports if need be)."""
        if self.lost is not None or self.closing or self.ready is None:
            return False
        try:
            return await asyncio.shield(self.ready)
        except asyncio.CancelledError:
            if self.ready.cancelled():  # closed meanwhile
                return False
            raise

    async def _fork(self, request: dict[str, Any]) -> int | None:
        """Ask the fork server for one service; its pid, or None (then it is started plainly)."""
        server = self.server
        assert server is not None and server.stdin is not None and server.stdout is not None
        async with self._lock:
            if self.lost is not None:
                return None
            self.forking += 1
            try:
                server.stdin.write(json.dumps(request).encode() + b"\n")
                await server.stdin.drain()
                reply = json.loads(await asyncio.wait_for(server.stdout.readline(), REPLY_WAIT))
            except (TimeoutError, ValueError, OSError) as exc:
                self._give_up(f"the fork server stopped answering ({exc or type(exc).__name__})")
                return None
            finally:
                self.forking -= 1
        if "pid" not in reply:
            self.note(
                f"boutique up: the fork server could not fork: {reply.get('error')}; starting it plainly"
            )
            return None
        return int(reply["pid"])

    def state(self) -> dict[str, Any]:
        """Mode, the fork server's pid and whether it still forks."""
        alive = self.server is not None and self.server.returncode is None and self.lost is None
        return {
            "mode": self.mode,
            "fork_server_pid": self.server.pid if self.server is not None and alive else None,
            "plain_since": self.lost,
        }

    def reap_strays(self, known: set[int]) -> None:
        """As a subreaper we inherit any orphan of our services' process trees: reap those that exited."""
        if self.forking:  # a service just forked may be ours before its pid has reached us
            return
        import psutil

        if self.server is not None:
            known = known | {self.server.pid}
        with contextlib.suppress(psutil.Error):
            for stray in psutil.Process().children():
                if stray.pid not in known and stray.status() == psutil.STATUS_ZOMBIE:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(stray.pid, os.WNOHANG)

    async def close(self, grace: float = 5.0) -> None:
        """End the fork server: no more forks (the services it started go on until stopped)."""
        self.closing = True
        for task in (self.ready, self._watch):
            if task is not None and not task.done():
                task.cancel()
        server = self.server
        if server is None or server.returncode is not None:
            return
        if server.stdin is not None:
            server.stdin.close()
        try:
            await asyncio.wait_for(server.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                server.kill()
            await server.wait()


def _can_adopt() -> bool:
    """Become a child subreaper (Linux then hands us the orphans of our descendants, the forked services
    among them) and check that we can wait for an adopted process through a pidfd (Linux 5.3)."""
    try:
        os.close(os.pidfd_open(os.getpid()))
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def spawner(mode: str, log_dir: Path, note: Callable[[str], None], plans: list[ProcessPlan]) -> Spawner:
    """The spawner `--spawn` asks for (fork on Linux only); a fork server warms up the module the services
    run (`-m MODULE`)."""
    if mode != "fork" or not sys.platform.startswith("linux"):
        return Spawner()
    warm = {plan.argv[2] for plan in plans if plan.kind in FORKED_KINDS and plan.argv[1:2] == ["-m"]}
    return ForkSpawner(log_dir, note, tuple(sorted(warm)))
