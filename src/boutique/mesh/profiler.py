"""The process's own sampling profiler: every thread's stack on the wall clock and on the CPU, and every
asyncio task's, each with its span.

A daemon thread named "profiler" wakes `hz` times a second (100 by default; drift-corrected: a late
tick does not shift the ones after it, ticks that could not be taken are counted as missed) and reads
every other thread's current frame (`sys._current_frames()`). Each thread gives a **wall** sample worth
one period, whatever it is doing (idle threads included), and a **cpu** sample worth the advance of its
own CPU clock since the previous tick (`time.pthread_getcpuclockid` + `time.clock_gettime_ns`), when it
advanced, attributed to the stack seen now. No ptrace, no extra capabilities: the interpreter lends its
frames to any thread that asks, and the kernel every thread's CPU clock.

What it sees: frames are read holding the interpreter lock, so a thread running Python is seen where it
lets the lock go (a blocking call, or after the switch interval, 5 ms): fine for its wall samples, but
an event loop serving many short requests would have its CPU charged to its select, outside any span.
So the main thread, where every service runs its loop, has its cpu samples taken by a SIGPROF handler
instead (`boutique.mesh.profile_signal`; `cpu="signal"`, BOUTIQUE_PROFILING_CPU): the process's CPU
timer interrupts it where it runs, each sample worth its own CPU since the last one, with the span of
the task running then; CPU spent by other threads is theirs, sampled here. Where the handler cannot be
installed (not started from the main thread, SIGPROF taken, no setitimer) the thread samples it as any
other (`cpu_source` says which). Every `tasks_every` ticks (10: 10 times a second at 100 Hz; a task
costs about 2 us, so 50 pending tasks cost a tick 10 us on average, less than sampling 15 threads) each
unfinished asyncio task of every loop the span map knows gives a **tasks** sample worth that many
periods: its coroutine chain, outermost first, down to what it awaits
(`boutique.mesh.profile_tasks`), under its loop thread's name and linked to its own span — where tasks
wait for a lock, a sleep or a reply, which no thread's stack shows.

Samples are aggregated in memory by (type, stack, thread name, span, wall-clock second) into a total in
nanoseconds and the time of each sample; `drain` hands over what a window gathered
(`boutique.mesh.profile_export` sends it as OTLP profiles). The span is the one `ActiveSpans` says the
thread (or its event loop's current task) was in (`boutique.mesh.profile_spans`).

Kept cheap, since it runs in every process all the time: each code object is described once (qualified
name, file shortened to the path below the longest `sys.path` entry holding it, first line, name); a
thread whose top frame and instruction are where they were at its last tick keeps its stack without a
walk (an idle thread costs a few dict lookups); a busy one whose caller is unchanged rebuilds only its top
frame; a task still blocked on the future it was blocked on at its last sample keeps its stack; stacks
are interned per window so rows are keyed by a small integer. A failing tick is logged
once and counted, never raised. Ticks, samples, time spent and the rate achieved are on `/metrics`
(`boutique_mesh_profiler_*`) and in `Profiler.stats`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

from boutique.mesh.profile_signal import SignalSampler, unavailable
from boutique.mesh.profile_spans import ActiveSpans, Link
from boutique.mesh.profile_tasks import coroutine_frames, loop_tasks, running_frames

log = logging.getLogger(__name__)

DEFAULT_HZ = 100
MAX_HZ = 1000
THREAD_NAME = "profiler"
NS = 1_000_000_000
CODE_CACHE_LIMIT = 100_000  # descriptions kept at most (code made at run time would grow it for ever)
PROFILE_TYPES = ("cpu", "wall", "tasks")
CPU_SOURCES = ("signal", "thread")  # who takes the main thread's cpu samples (BOUTIQUE_PROFILING_CPU)
TASKS_EVERY = 10  # asyncio tasks are sampled every this many ticks (10 times a second at 100 Hz)


class Function:
    """What a code object says of its function, once per code object (compared by identity: cheap keys)."""

    __slots__ = ("file", "first_line", "name", "qualname")

    def __init__(self, qualname: str, file: str, first_line: int, name: str) -> None:
        self.qualname = qualname
        self.file = file  # shortened: relative to the longest sys.path entry holding it
        self.first_line = first_line
        self.name = name

    def __repr__(self) -> str:
        return f"{self.qualname} ({self.file}:{self.first_line})"


Frame = tuple[Function, int]  # the function and the line it was running
Stack = tuple[Frame, ...]  # leaf first
_RowKey = tuple[int, str, Link | None, int]  # (stack id, thread name, span, second)


@dataclass(frozen=True)
class Row:
    """Samples of one stack on one thread in one span within one wall-clock second."""

    stack: int  # an index into the window's stacks
    thread: str
    link: Link | None  # (trace id, span id) or None outside any span
    value: int  # nanoseconds
    timestamps: list[int]  # Unix ns of each sample aggregated here


@dataclass(frozen=True)
class ProfileWindow:
    """What the profiler gathered between two drains."""

    start_ns: int
    end_ns: int
    period_ns: int
    stacks: list[Stack]
    rows: dict[str, list[Row]]  # "cpu", "wall" and "tasks"
    ticks: int

    @property
    def empty(self) -> bool:
        """Whether no sample at all was taken."""
        return not any(self.rows.values())


@dataclass
class ProfilerStats:
    """What the profiler did (counted in its own thread; read anywhere)."""

    hz: int
    ticks: int = 0
    missed: int = 0  # ticks skipped because the sampler fell behind
    wall_samples: int = 0
    cpu_samples: int = 0  # the SIGPROF handler's among them
    signal_samples: int = 0  # cpu samples of the main thread taken by the SIGPROF handler
    task_samples: int = 0
    tick_ns: int = 0  # CPU time spent in ticks, in total
    tick_max_ns: int = 0
    errors: int = 0  # ticks that failed
    export_errors: int = 0  # windows that could not be encoded or queued
    started: float = field(default_factory=time.monotonic)

    @property
    def effective_hz(self) -> float:
        """Ticks taken per second since the start (the configured rate when all went well)."""
        elapsed = time.monotonic() - self.started
        return self.ticks / elapsed if elapsed > 0 else 0.0

    @property
    def mean_tick_us(self) -> float:
        """The mean CPU time of one tick in microseconds."""
        return self.tick_ns / self.ticks / 1000 if self.ticks else 0.0


class _Thread:
    """What the profiler keeps of one sampled thread between ticks."""

    __slots__ = ("back", "clock", "cpu", "frame", "generation", "key", "lasti", "line", "name", "stack")

    def __init__(self, name: str, clock: int | None, cpu: int) -> None:
        self.name = name
        self.clock = clock  # its CPU clock id, None when unknown
        self.cpu = cpu  # its CPU clock at the last tick
        self.frame: FrameType | None = None  # its top frame at the last tick
        self.back: FrameType | None = None  # that frame's caller
        self.lasti = -1
        self.line = 0
        self.key: Stack = ()
        self.stack = 0  # key's id in the window it was interned in
        self.generation = -1  # that window


def _prefixes(paths: list[str]) -> list[str]:
    """sys.path entries as absolute directory prefixes, longest first."""
    found = set()
    for entry in paths:
        try:
            absolute = os.path.abspath(entry or os.curdir)
        except (OSError, ValueError):
            continue
        found.add(absolute.rstrip(os.sep) + os.sep)
    return sorted(found, key=len, reverse=True)


class Profiler:
    """Samples every other thread `hz` times a second in a daemon thread; `drain` takes what it gathered.

    `cpu` = "signal": the main thread's cpu samples come from a SIGPROF handler where it can run (`start`
    from the main thread, SIGPROF free; `cpu_source` says what was done, `cpu_fallback` why not);
    "thread": from the sampling thread, as every other thread's. Asyncio tasks are sampled every
    `tasks_every` ticks (0: never).
    """

    def __init__(
        self,
        hz: int = DEFAULT_HZ,
        spans: ActiveSpans | None = None,
        cpu: str = "signal",
        tasks_every: int = TASKS_EVERY,
    ) -> None:
        if not 1 <= hz <= MAX_HZ:
            raise ValueError(f"the profiling rate must be 1 to {MAX_HZ} Hz, got {hz}")
        if cpu not in CPU_SOURCES:
            raise ValueError(f"the cpu samples' source must be one of {', '.join(CPU_SOURCES)}, got {cpu!r}")
        self.hz = hz
        self.period_ns = NS // hz
        self.spans = spans
        self.cpu = cpu
        self.cpu_source = "thread"  # "signal" once the SIGPROF sampler runs
        self.cpu_fallback = ""  # why it does not, when asked to
        self.tasks_every = max(0, tasks_every)
        self.stats = ProfilerStats(hz)
        self._signal: SignalSampler | None = None
        self._signal_ident = 0  # the thread whose cpu the SIGPROF handler samples (none: 0)
        # each task sampled last time: [the future it was blocked on, its stack, stack id, window]
        self._task_stacks: dict[asyncio.Task[Any], list[Any]] = {}
        self._codes: dict[CodeType, Function] = {}
        self._paths: list[str] = []
        self._path_prefixes: list[str] = []
        self._threads: dict[int, _Thread] = {}
        self._names: dict[int, str] = {}
        self._second = -1
        self._lock = threading.Lock()  # a tick against a drain
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._logged_failure = False
        self._generation = 0
        self._new_window(time.time_ns())
        _ALL.add(self)

    # ---- running -----------------------------------------------------------------------------------

    def start(self) -> Profiler:
        """Start sampling in the "profiler" thread (and, when asked and possible, with SIGPROF)."""
        if self._thread is None:
            if self.cpu == "signal":
                self._start_signal()
            self.stats.started = time.monotonic()
            self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
            self._thread.start()
        return self

    @property
    def running(self) -> bool:
        """Whether the sampling thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def signal_errors(self) -> int:
        """SIGPROF handler runs that failed (each swallowed)."""
        return self._signal.errors if self._signal is not None else 0

    def _start_signal(self) -> None:
        reason = unavailable()
        sampler = SignalSampler(self.period_ns, self.spans.link if self.spans is not None else None)
        if reason or not sampler.start():
            self.cpu_fallback = reason or "SIGPROF could not be handled"
            return
        self._signal, self._signal_ident = sampler, sampler.ident
        self.cpu_source = "signal"
        state = self._threads.get(sampler.ident)
        if state is not None:  # sampled by a tick before: its cpu is the handler's from now on
            state.clock = None

    def stop(self, timeout: float = 1.0) -> None:
        """Stop sampling within a period (what was gathered stays for `drain`) and disarm the CPU timer."""
        if self._signal is not None:
            self._signal.stop()
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        period = 1 / self.hz
        due = time.monotonic()
        while True:
            self._safe_tick()
            due += period
            now = time.monotonic()
            if now > due + period:  # behind by whole periods: skip them, keep the phase
                skipped = int((now - due) / period)
                self.stats.missed += skipped
                due += skipped * period
            if self._stop.is_set():
                return
            if due > now:  # a sleep costs less than a wait on the stop event; a stop waits a period at most
                time.sleep(due - now)

    def _safe_tick(self) -> None:
        try:
            self.tick()
        except Exception:  # the profiler must never take the process down
            self.stats.errors += 1
            if not self._logged_failure:
                self._logged_failure = True
                log.exception("profiler tick failed (counted in boutique_mesh_profiler_errors_total)")

    # ---- sampling -----------------------------------------------------------------------------------

    def tick(self, now_ns: int | None = None) -> None:
        """Take one sample of every thread but the calling one (and every `tasks_every` ticks one of every
        asyncio task); take in what the SIGPROF handler sampled."""
        began = time.thread_time_ns()
        now = time.time_ns() if now_ns is None else now_ns
        frames = sys._current_frames()
        own = threading.get_ident()
        clock_ns = time.clock_gettime_ns
        walls = cpus = tasks = 0
        with self._lock:
            if self._signal is not None:
                self._absorb_signals()
            second = now // NS
            if second != self._second:
                self._second = second
                self._each_second(frames)
            wall, cpu = self._wall, self._cpu
            threads = self._threads
            spans = self.spans
            period = self.period_ns
            generation = self._generation
            for ident, frame in frames.items():
                if ident == own:
                    continue
                state = threads.get(ident)
                if state is None:
                    state = self._new_thread(ident)
                lasti = frame.f_lasti
                if frame is state.frame and frame.f_back is state.back:
                    if lasti != state.lasti:  # the same call, further on: only its top line may differ
                        state.lasti = lasti
                        line = frame.f_lineno or 0
                        if line != state.line:
                            state.line = line
                            state.key = ((state.key[0][0], line), *state.key[1:])
                            state.generation = -1
                    if state.generation != generation:
                        state.stack = self._intern(state.key)
                        state.generation = generation
                else:
                    state.frame, state.back, state.lasti = frame, frame.f_back, lasti
                    state.key = self._walk(frame)
                    state.line = state.key[0][1]
                    state.stack = self._intern(state.key)
                    state.generation = generation
                link = spans.link(ident, now) if spans is not None else None
                key = (state.stack, state.name, link, second)
                row = wall.get(key)
                if row is None:
                    wall[key] = [period, [now]]
                else:
                    row[0] += period
                    row[1].append(now)
                walls += 1
                if state.clock is None:  # unknown, or the SIGPROF handler's to take
                    continue
                try:
                    used = clock_ns(state.clock)
                except OSError:  # the thread ended since the frames were taken
                    state.clock = None
                    continue
                advance = used - state.cpu
                state.cpu = used
                if advance > 0:
                    row = cpu.get(key)
                    if row is None:
                        cpu[key] = [advance, [now]]
                    else:
                        row[0] += advance
                        row[1].append(now)
                    cpus += 1
            if self.tasks_every and spans is not None and self.stats.ticks % self.tasks_every == 0:
                tasks = self._sample_tasks(spans, frames, now, second)
            if len(threads) >= len(frames):  # one ended (the calling thread is never kept)
                self._forget(frames)
        del frames
        spent = time.thread_time_ns() - began  # on the CPU: what the tick cost the process
        stats = self.stats
        stats.ticks += 1
        stats.wall_samples += walls
        stats.cpu_samples += cpus
        stats.task_samples += tasks
        stats.tick_ns += spent
        if spent > stats.tick_max_ns:
            stats.tick_max_ns = spent

    def drain(self, now_ns: int | None = None) -> ProfileWindow:
        """Everything gathered since the last drain (the window it covers, its stacks and rows); a new
        window starts."""
        now = time.time_ns() if now_ns is None else now_ns
        with self._lock:
            if self._signal is not None:
                self._absorb_signals()
            start, stacks, wall, cpu, tasks = self._start_ns, self._stacks, self._wall, self._cpu, self._tasks
            ticks = self.stats.ticks - self._window_ticks
            self._new_window(now)
        rows = {
            name: [Row(k[0], k[1], k[2], v[0], v[1]) for k, v in table.items()]
            for name, table in (("cpu", cpu), ("wall", wall), ("tasks", tasks))
        }
        return ProfileWindow(start, max(now, start), self.period_ns, stacks, rows, ticks)

    # ---- inside -------------------------------------------------------------------------------------

    def _new_window(self, now: int) -> None:
        self._start_ns = now
        self._window_ticks = self.stats.ticks
        self._stacks: list[Stack] = []
        self._stack_ids: dict[Stack, int] = {}
        self._wall: dict[_RowKey, list] = {}  # type: ignore[type-arg]
        self._cpu: dict[_RowKey, list] = {}  # type: ignore[type-arg]
        self._tasks: dict[_RowKey, list] = {}  # type: ignore[type-arg]
        self._generation += 1

    def _absorb_signals(self) -> None:
        """Move the SIGPROF handler's samples into the window (under the lock; the handler never takes it)."""
        pending = self._signal.pending  # type: ignore[union-attr]
        if not pending:
            return
        codes, cpu = self._codes, self._cpu
        state = self._threads.get(self._signal_ident)
        name = state.name if state is not None else threading.main_thread().name
        taken = 0
        while True:
            try:
                now, advance, link, raw = pending.popleft()
            except IndexError:
                break
            key = tuple((codes.get(code) or self._describe(code), line) for code, line in raw)
            row_key = (self._intern(key), name, link, now // NS)
            row = cpu.get(row_key)
            if row is None:
                cpu[row_key] = [advance, [now]]
            else:
                row[0] += advance
                row[1].append(now)
            taken += 1
        self.stats.cpu_samples += taken
        self.stats.signal_samples += taken

    def _sample_tasks(self, spans: ActiveSpans, frames: dict[int, FrameType], now: int, second: int) -> int:
        """One "tasks" sample, worth `tasks_every` periods, of every unfinished task of every loop the span
        map knows: its coroutine chain, its thread's name, its own span. How many were taken."""
        value = self.period_ns * self.tasks_every
        rows = self._tasks
        generation = self._generation
        before, seen = self._task_stacks, {}
        taken = 0
        for ident, loop in spans.loops():
            tasks = loop_tasks(loop)
            if not tasks:
                continue
            state = self._threads.get(ident)
            name = state.name if state is not None else self._names.get(ident, f"thread {ident}")
            running = asyncio.current_task(loop)
            for task, link in zip(tasks, spans.task_links(tasks, now), strict=True):
                # Still blocked on the future it was blocked on last time: it has not moved, nor its stack.
                waiter = getattr(task, "_fut_waiter", None)
                known = before.get(task)
                if known is None or waiter is None or known[0] is not waiter or task is running:
                    chain = (
                        running_frames(task, frames.get(ident)) if task is running else coroutine_frames(task)
                    )
                    if not chain:
                        continue
                    key = tuple(
                        self._function(frame.f_code, frame.f_lineno or 0) for frame in reversed(chain)
                    )
                    known = [waiter, key, self._intern(key), generation]
                elif known[3] != generation:
                    known[2], known[3] = self._intern(known[1]), generation
                seen[task] = known
                row_key = (known[2], name, link, second)
                row = rows.get(row_key)
                if row is None:
                    rows[row_key] = [value, [now]]
                else:
                    row[0] += value
                    row[1].append(now)
                taken += 1
        self._task_stacks = seen  # tasks that ended are let go
        return taken

    def _function(self, code: CodeType, line: int) -> Frame:
        found = self._codes.get(code)
        return (found if found is not None else self._describe(code), line)

    def _intern(self, key: Stack) -> int:
        found = self._stack_ids.get(key)
        if found is None:
            found = self._stack_ids[key] = len(self._stacks)
            self._stacks.append(key)
        return found

    def _walk(self, frame: FrameType | None) -> Stack:
        """A thread's stack from its top frame, leaf first."""
        codes = self._codes
        parts: list[Frame] = []
        while frame is not None:
            code = frame.f_code
            function = codes.get(code)
            if function is None:
                function = self._describe(code)
            parts.append((function, frame.f_lineno or 0))
            frame = frame.f_back
        return tuple(parts)

    def _describe(self, code: CodeType) -> Function:
        if len(self._codes) >= CODE_CACHE_LIMIT:
            self._codes.clear()
        function = Function(
            code.co_qualname, self._short(code.co_filename), code.co_firstlineno, code.co_name
        )
        self._codes[code] = function
        return function

    def _short(self, path: str) -> str:
        """A code object's file below the longest sys.path entry holding it (`<frozen ...>` as it is)."""
        if not path or path.startswith("<"):
            return path
        if sys.path != self._paths:
            self._paths = list(sys.path)
            self._path_prefixes = _prefixes(self._paths)
        for prefix in self._path_prefixes:
            if path.startswith(prefix):
                return path[len(prefix) :]
        return path

    def _new_thread(self, ident: int) -> _Thread:
        name = self._names.get(ident)
        if name is None:
            self._names = {thread.ident: thread.name for thread in threading.enumerate() if thread.ident}
            name = self._names.get(ident) or f"thread {ident}"
        clock: int | None
        try:
            # Right after the frames were read: the thread is alive (its pthread handle still valid).
            clock = time.pthread_getcpuclockid(ident)
            cpu = time.clock_gettime_ns(clock)
        except (OSError, OverflowError):
            clock, cpu = None, 0
        if ident == self._signal_ident:  # its cpu samples are the SIGPROF handler's
            clock = None
        state = self._threads[ident] = _Thread(name, clock, cpu)
        return state

    def _each_second(self, frames: dict[int, FrameType]) -> None:
        """Pick up renamed threads and forget ended ones (one might end as another starts)."""
        self._names = {thread.ident: thread.name for thread in threading.enumerate() if thread.ident}
        for ident, state in self._threads.items():
            state.name = self._names.get(ident, state.name)
        self._forget(frames)

    def _forget(self, frames: dict[int, FrameType]) -> None:
        ended = [ident for ident in self._threads if ident not in frames]
        if not ended:
            return
        for ident in ended:
            del self._threads[ident]
        if self.spans is not None:
            self.spans.forget_threads(frames.keys())


_ALL: weakref.WeakSet[Profiler] = weakref.WeakSet()


class ProfilerMetrics(Collector):
    """The process's profiler as Prometheus metrics, read from its counts when scraped."""

    def collect(self) -> Iterator[Metric]:
        """Ticks, missed ticks, samples by type, time per tick, failures, configured and achieved rate."""
        profilers = [p for p in list(_ALL) if p.stats.ticks or p.running]
        prefix = "boutique_mesh_profiler"
        ticks = CounterMetricFamily(f"{prefix}_ticks", "Times the profiler sampled every thread.")
        missed = CounterMetricFamily(
            f"{prefix}_missed_ticks", "Ticks skipped because the profiler fell behind."
        )
        samples = CounterMetricFamily(
            f"{prefix}_samples",
            "Samples taken, by type (wall: every thread; cpu: threads that ran; tasks: asyncio tasks).",
            labels=["type"],
        )
        signals = CounterMetricFamily(
            f"{prefix}_signal_samples",
            "cpu samples of the main thread taken by the SIGPROF handler (counted in the cpu samples too).",
        )
        spent = SummaryMetricFamily(f"{prefix}_tick_seconds", "CPU time the profiler spent per tick.")
        errors = CounterMetricFamily(
            f"{prefix}_errors",
            "Profiler failures, by stage (sample, signal, export); never fatal.",
            labels=["stage"],
        )
        rate = GaugeMetricFamily(
            f"{prefix}_rate_hertz",
            "Ticks per second: as configured, and as achieved since the profiler started.",
            labels=["rate"],
        )
        every = [p.stats for p in profilers]
        ticks.add_metric([], sum(s.ticks for s in every))
        missed.add_metric([], sum(s.missed for s in every))
        samples.add_metric(["cpu"], sum(s.cpu_samples for s in every))
        samples.add_metric(["wall"], sum(s.wall_samples for s in every))
        samples.add_metric(["tasks"], sum(s.task_samples for s in every))
        signals.add_metric([], sum(s.signal_samples for s in every))
        spent.add_metric([], sum(s.ticks for s in every), sum(s.tick_ns for s in every) / NS)
        errors.add_metric(["sample"], sum(s.errors for s in every))
        errors.add_metric(["signal"], sum(p.signal_errors for p in profilers))
        errors.add_metric(["export"], sum(s.export_errors for s in every))
        yield from (ticks, missed, samples, signals, spent, errors)
        if every:
            rate.add_metric(["configured"], sum(s.hz for s in every))
            rate.add_metric(["effective"], sum(s.effective_hz for s in every))
            yield rate


REGISTRY.register(ProfilerMetrics())
