"""Process faults against a running `boutique up`: kill an instance, stop it, or throttle its CPU.

Only processes listed in `<data-dir>/up.json` whose parent is that `up` can be targeted (any of them when
named: a service, its instances, the registry, the observatory, Redis); never the `up` process itself.
A stop or slow is bounded in time and always ends with the process running: at its deadline, when the
caller ends it, and, should the caller die first, through a detached watchdog process that resumes it
(checking the process start time, so a reused pid is never touched). Every action is appended to
`<data-dir>/chaos.jsonl` as one JSON record (time, action, service, instance, pid, duration, by).

Python API (what `boutique chaos` runs):

    victim = kill(data_dir, "productcatalog/1")             # SIGKILL; `up` restarts it
    again = wait_serving(data_dir, victim, timeout=60.0)     # or: await serving_again(...)
    with stop(data_dir, "cart", 20.0) as fault: ...          # SIGSTOP now, SIGCONT at the deadline or on exit
    fault = slow(data_dir, "currency", 20.0, cpu=0.25)       # runs 25 % of every 100 ms
    fault.wait()  # or `await fault`, or fault.end() to resume at once
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from boutique.flags import local_user

STATE_FILE = "up.json"  # written by boutique.run.up (not imported: it pulls in the whole runner)
LOG_FILE = "chaos.jsonl"
LOCK_DIR = "chaos"
MAX_SECONDS = 600.0
PERIOD = 0.1  # the duty cycle of `slow`
WATCHDOG_GRACE = 0.5  # the watchdog resumes this long after the deadline, when its owner has not
WATCHDOG_START = 10.0
SERVING_STATES = ("SERVING", "running")


class ChaosError(Exception):
    """A fault that cannot be made (no `up` running, no such instance, a bad duration): one line to show."""


@dataclass(frozen=True)
class Target:
    """One process of a running `boutique up`, known by pid and start time (a pid can be reused)."""

    service: str
    instance: str
    pid: int
    state: str
    started: float
    up_pid: int


def by_default() -> str:
    """Who makes the fault: the local user (as flag changes record it)."""
    return local_user()


def parse_seconds(text: str, option: str = "--for") -> float:
    """A fault's duration: '30s', '2m', '500ms'; above 0 and at most MAX_SECONDS."""
    from boutique.mesh import parse_duration  # the CLI has it loaded already; the watchdog never needs it

    try:
        seconds = parse_duration(text.strip())
    except ValueError as exc:
        raise ChaosError(f"{option}: {exc}") from None
    if not 0 < seconds <= MAX_SECONDS:
        raise ChaosError(f"{option} {text}: must be above 0 and at most {MAX_SECONDS / 60:.0f}m")
    return seconds


def parse_cpu(text: str) -> float:
    """The CPU share `slow` leaves a process: '25%' or '25' -> 0.25 (from 1 % to 99 %)."""
    number = text.strip().removesuffix("%").strip()
    try:
        percent = float(number)
    except ValueError:
        raise ChaosError(f"--cpu: expected a percentage such as 25%, got {text!r}") from None
    if not 1 <= percent <= 99:
        raise ChaosError(f"--cpu {text}: must be from 1% to 99% (stop stops it entirely)")
    return percent / 100


def read_state(data_dir: Path) -> tuple[int, list[dict[str, Any]]]:
    """The pid of the running `up` of `data_dir` and its processes; ChaosError when none runs there."""
    path = Path(data_dir) / STATE_FILE
    try:
        state = json.loads(path.read_text())
        up_pid, processes = int(state["pid"]), list(state["processes"])
    except FileNotFoundError:
        raise ChaosError(
            f"no `boutique up` state in {path}: is `boutique up --data-dir {data_dir}` running?"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ChaosError(f"cannot read {path}: {exc}") from None
    if not _is_up(up_pid):
        raise ChaosError(f"the `boutique up` of {data_dir} (pid {up_pid}) is not running")
    return up_pid, processes


def _is_up(pid: int) -> bool:
    """True when `pid` is a live `boutique up` (a stale up.json may name a pid reused by anything)."""
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and "up" in process.cmdline()[1:]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def targets(data_dir: Path) -> list[Target]:
    """Every running process of the `up` of `data_dir` that a fault may target."""
    up_pid, processes = read_state(data_dir)
    found = []
    for entry in processes:
        with contextlib.suppress(ChaosError):
            found.append(_identify(entry, up_pid, data_dir))
    return found


def find(data_dir: Path, target: str) -> Target:
    """Resolve SERVICE, SERVICE/INSTANCE, SERVICE/INDEX or INSTANCE to one running process.

    A service alone picks its first running instance (in up.json order: the lowest index).
    """
    up_pid, processes = read_state(data_dir)
    service, _, instance = target.strip().partition("/")
    if instance.isdigit():
        instance = f"{service}-{instance}"
    services = {str(e.get("service")) for e in processes}
    if instance:
        chosen = [e for e in processes if e.get("service") == service and e.get("instance") == instance]
    elif service in services:
        chosen = [e for e in processes if e.get("service") == service]
    else:
        chosen = [e for e in processes if e.get("instance") == service]
    if not chosen:
        raise ChaosError(_no_such(target, service, instance, processes, data_dir))
    running = [e for e in chosen if e.get("pid")]
    if not running:
        first = chosen[0]
        raise ChaosError(
            f"{first.get('instance')} is not running now ({first.get('state')}): try again shortly"
        )
    return _identify(running[0], up_pid, data_dir)


def _no_such(
    target: str, service: str, instance: str, processes: list[dict[str, Any]], data_dir: Path
) -> str:
    """Why `target` names nothing, with the names that would do."""
    services = sorted({str(e.get("service")) for e in processes})
    if instance and service in services:
        mine = ", ".join(str(e.get("instance")) for e in processes if e.get("service") == service)
        return f"{service} has no instance {instance!r} in the `boutique up` of {data_dir} (it has {mine})"
    names = ", ".join(services)
    return f"no service or instance {target!r} in the `boutique up` of {data_dir} (services: {names})"


def _identify(entry: dict[str, Any], up_pid: int, data_dir: Path) -> Target:
    """The Target of an up.json entry, once its pid is checked to be a child of that `up` (nothing else)."""
    instance, pid = str(entry.get("instance")), int(entry.get("pid") or 0)
    try:
        process = psutil.Process(pid)
        parent, started = process.ppid(), process.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        raise ChaosError(f"{instance} (pid {pid}) is not running now: try again shortly") from None
    if pid in (up_pid, os.getpid()) or parent != up_pid:
        raise ChaosError(
            f"pid {pid} ({instance}) is not a process of the `boutique up` of {data_dir}: "
            "refusing to signal it"
        )
    return Target(str(entry.get("service")), instance, pid, str(entry.get("state")), started, up_pid)


def _same(pid: int, started: float) -> psutil.Process | None:
    """The process `pid` if it is still the one that started at `started` (not a reused pid)."""
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - started) < 1e-3 and process.status() != psutil.STATUS_ZOMBIE:
            return process
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
    return None


def send(target: Target, sig: signal.Signals) -> bool:
    """Signal the target's process group (it leads one: `up` starts every process in its own session).

    False when the process is gone or its pid now belongs to another process: nothing is signalled.
    """
    if _same(target.pid, target.started) is None:
        return False
    try:
        if os.getpgid(target.pid) == target.pid:
            os.killpg(target.pid, sig)
        else:
            os.kill(target.pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def record(
    data_dir: Path, action: str, target: Target, duration: float, by: str, **extra: Any
) -> dict[str, Any]:
    """Append one JSON line to `<data-dir>/chaos.jsonl` (one write: concurrent writers do not interleave)."""
    entry = {
        "time": round(time.time(), 3),
        "action": action,
        "service": target.service,
        "instance": target.instance,
        "pid": target.pid,
        "duration": round(duration, 3),
        "by": by,
        **extra,
    }
    fd = os.open(Path(data_dir) / LOG_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(entry) + "\n").encode())
    finally:
        os.close(fd)
    return entry


def history(data_dir: Path, since: float = 0.0) -> list[dict[str, Any]]:
    """The records of `<data-dir>/chaos.jsonl` from `since` (unix seconds) on, oldest first."""
    try:
        lines = (Path(data_dir) / LOG_FILE).read_text().splitlines()
    except FileNotFoundError:
        return []
    found = []
    for line in lines:
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and float(entry.get("time", 0)) >= since:
                found.append(entry)
    return found


# --- kill -----------------------------------------------------------------------------------------------


def kill(data_dir: Path, target: str, by: str | None = None) -> Target:
    """SIGKILL one instance (kill -9 of its process group); `up` restarts it. Returns the process killed."""
    victim = find(data_dir, target)
    if not send(victim, signal.SIGKILL):
        raise ChaosError(f"{victim.instance} (pid {victim.pid}) exited before it could be killed")
    record(data_dir, "kill", victim, 0.0, by or by_default(), signal="SIGKILL")
    return victim


def _restarted(data_dir: Path, victim: Target) -> Target | None:
    """The victim's instance once `up` runs a new process for it that serves again."""
    with contextlib.suppress(ChaosError):
        up_pid, processes = read_state(data_dir)
        for entry in processes:
            if (
                entry.get("instance") == victim.instance
                and entry.get("pid") not in (None, victim.pid)
                and entry.get("state") in SERVING_STATES
            ):
                return _identify(entry, up_pid, data_dir)
    return None


def wait_serving(
    data_dir: Path, victim: Target, timeout: float = 60.0, by: str | None = None
) -> Target | None:
    """Wait until `up` has restarted the killed instance and it serves again; None after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        again = _restarted(data_dir, victim)
        if again is not None:
            _record_recovery(data_dir, victim, again, by)
            return again
        time.sleep(0.1)
    return None


async def serving_again(
    data_dir: Path, victim: Target, timeout: float = 60.0, by: str | None = None
) -> Target | None:
    """`wait_serving` for async callers (in a worker thread, so the event loop keeps running)."""
    return await asyncio.to_thread(wait_serving, data_dir, victim, timeout, by)


def _record_recovery(data_dir: Path, victim: Target, again: Target, by: str | None) -> None:
    """One 'recovered' record: the new pid and how long the instance was away (since the old one started
    being killed, as well as the state file tells)."""
    away = max(0.0, time.time() - _kill_time(data_dir, victim))
    record(data_dir, "recovered", victim, away, by or by_default(), new_pid=again.pid)


def _kill_time(data_dir: Path, victim: Target) -> float:
    """When the victim was killed, from the log (now, when no record says)."""
    for entry in reversed(history(data_dir, since=victim.started)):
        if entry.get("action") == "kill" and entry.get("pid") == victim.pid:
            return float(entry["time"])
    return time.time()


# --- stop and slow -------------------------------------------------------------------------------------


class Fault:
    """A running stop or slow of one process: resumed at its deadline, by `end()`, on leaving a `with`
    block, or by the watchdog should this process die first. `wait()` blocks until it is over; `await` it
    in async code."""

    def __init__(
        self, data_dir: Path, target: Target, action: str, seconds: float, cpu: float, by: str
    ) -> None:
        self.data_dir = Path(data_dir)
        self.target = target
        self.action = action
        self.seconds = seconds
        self.cpu = cpu
        self.by = by
        self.outcome = ""  # deadline | ended | exited, once over
        self.elapsed = 0.0
        self.stops = 0
        self._ending = threading.Event()
        self._over = threading.Event()
        self._guard = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._reason = "ended"
        self._lock_fd = -1
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._run, name=f"chaos-{action}-{target.instance}")
        self._began = 0.0

    def _start(self) -> None:
        """Lock the instance, start the watchdog, stop the process, arm the watchdog with the deadline, then
        run the rest in a thread."""
        self._lock_fd = _lock(self.data_dir, self.target)
        try:
            self._watchdog = _start_watchdog(self)
            if not send(self.target, signal.SIGSTOP):
                raise ChaosError(
                    f"{self.target.instance} (pid {self.target.pid}) exited before it could be stopped"
                )
            self._began = time.monotonic()
            self.stops = 1
            _arm_watchdog(self._watchdog, time.time(), self.seconds)
            extra = {"cpu": self.cpu, "period": PERIOD} if self.action == "slow" else {}
            record(self.data_dir, self.action, self.target, self.seconds, self.by, **extra)
            self._thread.start()
        except BaseException:
            if self.stops:
                send(self.target, signal.SIGCONT)
            self._finish_watchdog()
            os.close(self._lock_fd)
            raise

    def _run(self) -> None:
        """Hold the stop (or alternate stop and run for slow) until the deadline or `end()`; then resume."""
        reason = "deadline"
        try:
            stopped = True
            off, on = PERIOD * (1 - self.cpu), PERIOD * self.cpu
            while (remaining := self.seconds - (time.monotonic() - self._began)) > 0:
                pause = remaining if self.action == "stop" else min(off if stopped else on, remaining)
                if self._ending.wait(pause):
                    reason = self._reason
                    break
                if self.action == "stop":
                    continue
                if not send(self.target, signal.SIGCONT if stopped else signal.SIGSTOP):
                    reason = "exited"
                    break
                stopped = not stopped
                self.stops += int(stopped)
        finally:
            resumed = send(self.target, signal.SIGCONT)
            self.elapsed = time.monotonic() - self._began
            self.outcome = reason if resumed else "exited"
            extra: dict[str, Any] = {"reason": self.outcome, "stops": self.stops}
            with contextlib.suppress(OSError):
                record(self.data_dir, "resume", self.target, self.elapsed, self.by, **extra)
            self._finish_watchdog()
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._over.set()
            self._wake_waiters()

    def _finish_watchdog(self) -> None:
        """The process runs again: the watchdog (our own child) may go."""
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None and watchdog.poll() is None:
            watchdog.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                watchdog.wait(5.0)

    def end(self, reason: str = "ended") -> None:
        """Resume the process now (idempotent) and wait until that is done and logged."""
        self._reason = reason
        self._ending.set()
        self.wait()

    def done(self) -> bool:
        """True once the process runs again (or has exited)."""
        return self._over.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the fault is over; False if `timeout` passed first."""
        return self._over.wait(timeout)

    async def _finished(self) -> Fault:
        loop = asyncio.get_running_loop()
        over: asyncio.Future[None] = loop.create_future()
        with self._guard:
            self._waiters.append((loop, over))
        if not self._over.is_set():
            await over
        return self

    def _wake_waiters(self) -> None:
        """Tell every awaiting event loop the fault is over."""
        with self._guard:
            waiters, self._waiters = self._waiters, []
        for loop, over in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits there any more
                loop.call_soon_threadsafe(_settle, over)

    def __await__(self) -> Generator[Any, None, Fault]:
        return self._finished().__await__()

    def __enter__(self) -> Fault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()


def _settle(future: asyncio.Future[None]) -> None:
    """Complete `future` unless it is done already (cancelled by its awaiter)."""
    if not future.done():
        future.set_result(None)


def stop(data_dir: Path, target: str, seconds: float, by: str | None = None) -> Fault:
    """SIGSTOP one instance for `seconds` (at most MAX_SECONDS), then SIGCONT; stopped when this returns."""
    return _fault(data_dir, target, "stop", seconds, 0.0, by)


def slow(data_dir: Path, target: str, seconds: float, cpu: float = 0.25, by: str | None = None) -> Fault:
    """Throttle one instance to `cpu` (0.01-0.99) of each 100 ms for `seconds` with SIGSTOP/SIGCONT."""
    if not 0.01 <= cpu <= 0.99:
        raise ChaosError(f"cpu share {cpu} must be from 0.01 to 0.99")
    return _fault(data_dir, target, "slow", seconds, cpu, by)


def _fault(data_dir: Path, target: str, action: str, seconds: float, cpu: float, by: str | None) -> Fault:
    if not 0 < seconds <= MAX_SECONDS:
        raise ChaosError(f"duration {seconds}s must be above 0 and at most {MAX_SECONDS:.0f}s")
    fault = Fault(Path(data_dir), find(data_dir, target), action, seconds, cpu, by or by_default())
    fault._start()
    return fault


def _lock(data_dir: Path, target: Target) -> int:
    """An exclusive lock on the instance, held by this process and the watchdog (it inherits the fd), so
    two stops of one process cannot overlap and resume it early."""
    directory = Path(data_dir) / LOCK_DIR
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / f"{target.instance}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ChaosError(
            f"{target.instance} is already being stopped or slowed: wait for that to end"
        ) from None
    return fd


def _start_watchdog(fault: Fault) -> subprocess.Popen[bytes]:
    """Start the detached watchdog and wait until it watches (it says 'ready' once it has checked the pid)."""
    spec = {
        "owner": os.getpid(),
        "action": fault.action,
        "data_dir": str(fault.data_dir),
        "target": asdict(fault.target),
        "by": fault.by,
    }
    log = (fault.data_dir / LOCK_DIR / "watchdog.log").open("ab")
    try:
        watchdog = subprocess.Popen(
            [sys.executable, "-m", "boutique.run.chaos", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            pass_fds=(fault._lock_fd,),
            start_new_session=True,  # neither Ctrl-C in this terminal nor its closing reaches it
        )
    finally:
        log.close()
    assert watchdog.stdout is not None
    ready, _, _ = select.select([watchdog.stdout], [], [], WATCHDOG_START)
    answer = watchdog.stdout.readline() if ready else b""
    watchdog.stdout.close()
    if answer.strip() != b"ready":
        watchdog.kill()
        watchdog.wait()
        raise ChaosError(
            f"the chaos watchdog did not start (see {fault.data_dir / LOCK_DIR / 'watchdog.log'})"
        )
    return watchdog


def _arm_watchdog(watchdog: subprocess.Popen[bytes], began: float, seconds: float) -> None:
    """Hand the watchdog the deadline, counted from the moment the process was stopped."""
    assert watchdog.stdin is not None
    try:
        watchdog.stdin.write(json.dumps({"began": began, "deadline": began + seconds}).encode() + b"\n")
        watchdog.stdin.close()
    except OSError as exc:
        raise ChaosError(f"the chaos watchdog is gone ({exc})") from None


# --- the command ---------------------------------------------------------------------------------------


def run_chaos(args: Any) -> int:
    """`boutique chaos kill|stop|slow`: 0 done, 1 not serving again in time, 2 bad input, 130 interrupted."""
    received: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a flag only: resuming happens below
        signal.signal(sig, lambda signum, frame: received.append(signum))
    data_dir = Path(args.data_dir).resolve()
    try:
        if args.action == "kill":
            return _run_kill(data_dir, args, received)
        seconds = parse_seconds(args.duration)
        cpu = parse_cpu(args.cpu) if args.action == "slow" else 0.0
        fault = (
            slow(data_dir, args.target, seconds, cpu)
            if args.action == "slow"
            else stop(data_dir, args.target, seconds)
        )
    except ChaosError as exc:
        print(f"boutique chaos: {exc}", file=sys.stderr)
        return 2
    t = fault.target
    until = time.strftime("%H:%M:%S", time.localtime(time.time() + seconds))
    what = (
        f"throttling {t.instance} (pid {t.pid}) to {cpu:.0%} CPU "
        f"(SIGSTOP/SIGCONT every {PERIOD * 1000:.0f}ms)"
        if args.action == "slow"
        else f"stopped {t.instance} (pid {t.pid}, SIGSTOP)"
    )
    print(f"chaos: {what} for {seconds:g}s; it runs again at {until} even if this command dies", flush=True)
    while not fault.done() and not received:
        time.sleep(0.05)
    if received:
        fault.end(f"interrupted by {signal.Signals(received[0]).name}")
    fault.wait()
    how = {"deadline": "", "exited": " (it had exited)"}.get(fault.outcome, f" ({fault.outcome})")
    stops = f", stopped {fault.stops} times" if args.action == "slow" else ""
    print(
        f"chaos: resumed {t.instance} (pid {t.pid}, SIGCONT) after {fault.elapsed:.1f}s{stops}{how}",
        flush=True,
    )
    return 130 if received else 0


def _run_kill(data_dir: Path, args: Any, received: list[int]) -> int:
    timeout = parse_seconds(args.timeout, "--timeout")
    victim = kill(data_dir, args.target)
    began = time.monotonic()
    print(f"chaos: killed {victim.instance} (pid {victim.pid}, SIGKILL)", flush=True)
    if args.no_wait:
        return 0
    deadline = began + timeout
    while time.monotonic() < deadline and not received:
        again = _restarted(data_dir, victim)
        if again is not None:
            _record_recovery(data_dir, victim, again, None)
            took = time.monotonic() - began
            print(
                f"chaos: {victim.instance} is {again.state} again as pid {again.pid}, "
                f"{took:.1f}s after the kill",
                flush=True,
            )
            return 0
        time.sleep(0.1)
    if received:
        return 130
    print(f"chaos: {victim.instance} is not serving again after {timeout:g}s (see `boutique up`)", flush=True)
    return 1


def _watchdog(spec: dict[str, Any]) -> int:
    """Resume the target at the deadline (plus a grace) unless the owner did; at once for `slow` when the
    owner died (a throttle must not turn into a stop), or when it died before handing over the deadline.
    Never signals a pid that now belongs to another process."""
    target = Target(**spec["target"])
    data_dir, owner = Path(spec["data_dir"]), int(spec["owner"])
    ended: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: ended.append(signum))
    if _same(target.pid, target.started) is None:
        return 1
    print("ready", flush=True)
    with open(os.devnull, "wb") as devnull:
        os.dup2(devnull.fileno(), sys.stdout.fileno())
    began, deadline = time.time(), 0.0
    while not ended:
        if not deadline:
            readable, _, _ = select.select([sys.stdin], [], [], 0.05)
            if readable:
                line = sys.stdin.readline()
                if not line:  # the owner is gone (or gave up) before it said when: resume now
                    return _resume(target, data_dir, began, spec["by"], always_record=False)
                armed = json.loads(line)
                began, deadline = float(armed["began"]), float(armed["deadline"])
            continue
        orphaned = os.getppid() != owner
        if time.time() >= deadline + WATCHDOG_GRACE or (orphaned and spec["action"] == "slow"):
            return _resume(target, data_dir, began, spec["by"], always_record=orphaned)
        time.sleep(0.05)
    send(target, signal.SIGCONT)  # told to go (by the owner, which resumed it already: harmless)
    return 0


def _resume(target: Target, data_dir: Path, began: float, by: str, always_record: bool) -> int:
    """The watchdog's SIGCONT, logged when its owner could not log it (gone) or had not resumed it."""
    process = _same(target.pid, target.started)
    if process is None:
        return 0
    stopped = process.status() == psutil.STATUS_STOPPED
    send(target, signal.SIGCONT)
    if always_record or stopped:
        with contextlib.suppress(OSError):
            record(data_dir, "resume", target, time.time() - began, by, reason="watchdog")
    return 0


if __name__ == "__main__":
    sys.exit(_watchdog(json.loads(sys.argv[1])))
