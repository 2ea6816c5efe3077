"""Which span each thread and each asyncio task is in, readable from the profiler's thread at any moment.

The sampler needs, for a thread it samples, the span the code running there belongs to. OpenTelemetry
keeps the current span in a context variable, which another thread cannot read (nor, before Python
3.12, another task's context). So a span processor records it where it can be read: when a span
starts, it is pushed onto the stack of the asyncio task that started it (when a loop runs on this
thread and a task is current), else of the thread; when it ends it is taken off wherever it was put.
For a thread, the innermost span still open on its stack is its span; for a thread running an event
loop, the loop's *current task* (`asyncio.current_task(loop)`, a lookup another thread may do) decides
first, then the thread's own stack (spans opened around the loop, or in plain callbacks).

Why the processor rather than a hook on context attach: the SDK calls `on_start` on the thread and
task that start the span, with the start time already set, and `on_end` once the end time is set, for
every sampled span, through a public interface; attaching is done by the API in a module-level runtime
context that only a private attribute or an entry point could replace. What a span processor misses
is a span started and never made current (`tracer.start_span` without `use_span`): it is taken as
current where it started. Every span in this code base is started with `start_as_current_span`.

The readers take no lock (`link`, `task_links`, `loops`): the profiler's thread calls them, and so does
the SIGPROF handler (`boutique.mesh.profile_signal`), on the main thread, possibly in the middle of
`on_start` there. The loops seen running a task that started a span are the ones whose tasks the
profiler samples.

Never a leak: ended spans are removed; tasks are weak keys (a task that finishes takes its stack with
it); the sampler drops the stacks of threads that ended (`forget_threads`); the index from span to its
stack is swept of dead owners whenever it has doubled. An entry is only read as the span of a sample
when the span had started before the sample was taken and had not ended yet.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from asyncio.events import _get_running_loop
from collections.abc import Collection
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

Link = tuple[int, int]  # (trace id, span id)
_Entry = tuple[Span, Link]
_Owner = int | weakref.ref[asyncio.Task[Any]]  # a thread's ident, or its task
_SWEEP_FLOOR = 4096

current_task = asyncio.current_task
get_ident = threading.get_ident


def _innermost(stack: list[_Entry], at_ns: int) -> Link | None:
    """The innermost span of a stack that was open at `at_ns` (an ending one no longer counts)."""
    for span, link in reversed(stack):
        start = span.start_time
        if span.end_time is None and start is not None and start <= at_ns:
            return link
    return None


class ActiveSpans(SpanProcessor):
    """A span processor keeping, per thread and per asyncio task, the sampled spans open there."""

    def __init__(self) -> None:
        self._threads: dict[int, list[_Entry]] = {}
        self._tasks: weakref.WeakKeyDictionary[asyncio.Task[Any], list[_Entry]] = weakref.WeakKeyDictionary()
        self._loops: dict[int, asyncio.AbstractEventLoop] = {}  # thread ident -> the loop it runs
        self._where: dict[Link, tuple[list[_Entry], _Owner]] = {}
        self._sweep_at = _SWEEP_FLOOR
        self._lock = threading.Lock()  # writers only; the sampler reads without it

    # ---- the span processor interface (application threads) ---------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Push a sampled span onto its task's or its thread's stack."""
        context = span.get_span_context()
        if not context.trace_flags.sampled:
            return
        link = (context.trace_id, context.span_id)
        ident = get_ident()
        loop = _get_running_loop()
        task = current_task(loop) if loop is not None else None
        owner: _Owner
        with self._lock:
            if task is not None:
                if self._loops.get(ident) is not loop:
                    self._loops[ident] = loop  # type: ignore[assignment]
                stack = self._tasks.get(task)
                if stack is None:
                    stack = self._tasks[task] = []
                owner = weakref.ref(task)
            else:
                stack = self._threads.get(ident)
                if stack is None:
                    stack = self._threads[ident] = []
                owner = ident
            stack.append((span, link))
            self._where[link] = (stack, owner)
            if len(self._where) > self._sweep_at:
                self._sweep()

    def on_end(self, span: ReadableSpan) -> None:
        """Take an ended span off the stack it was pushed onto."""
        context = span.context
        if context is None or not context.trace_flags.sampled:
            return
        link = (context.trace_id, context.span_id)
        with self._lock:
            found = self._where.pop(link, None)
            if found is None:
                return
            stack, owner = found
            for index in range(len(stack) - 1, -1, -1):
                if stack[index][1] == link:
                    del stack[index]
                    break
            if not stack:
                self._drop(stack, owner)

    def shutdown(self) -> None:
        """Forget every open span."""
        with self._lock:
            self._threads.clear()
            self._tasks.clear()
            self._loops.clear()
            self._where.clear()

    # ---- the sampler's side ------------------------------------------------------------------------

    def link(self, ident: int, at_ns: int) -> Link | None:
        """(trace id, span id) of the span the thread `ident` was in at `at_ns` (now), or None.

        Called from the profiler's thread: plain reads of dicts and lists other threads change.
        """
        loop = self._loops.get(ident)
        if loop is not None:
            task = current_task(loop)
            if task is not None:
                stack = self._tasks.get(task)
                if stack:
                    found = _innermost(stack, at_ns)
                    if found is not None:
                        return found
        stack = self._threads.get(ident)
        return _innermost(stack, at_ns) if stack else None

    def task_links(self, tasks: list[asyncio.Task[Any]], at_ns: int) -> list[Link | None]:
        """(trace id, span id) of the innermost span open in each task at `at_ns`, or None (any thread)."""
        stacks, ref = self._tasks.data, weakref.ref  # type: ignore[attr-defined]  # its own lookup, inlined
        found: list[Link | None] = []
        for task in tasks:
            stack = stacks.get(ref(task))
            found.append(_innermost(stack, at_ns) if stack else None)
        return found

    def loops(self) -> list[tuple[int, asyncio.AbstractEventLoop]]:
        """(thread ident, loop) of every event loop a span was started in, as they are now (any thread)."""
        return list(self._loops.items())

    def forget_threads(self, alive: Collection[int]) -> None:
        """Drop what is kept for threads no longer alive (their idents are not in `alive`)."""
        with self._lock:
            for ident in [i for i in self._threads if i not in alive]:
                del self._threads[ident]
            for ident in [i for i in self._loops if i not in alive]:
                del self._loops[ident]
            self._sweep()

    @property
    def open_spans(self) -> int:
        """How many spans are kept as open (0 once every span ended)."""
        return len(self._where)

    @property
    def stacks(self) -> int:
        """How many threads and tasks have a stack kept (0 once every span ended or was forgotten)."""
        return len(self._threads) + len(self._tasks)

    # ---- inside -------------------------------------------------------------------------------------

    def _drop(self, stack: list[_Entry], owner: _Owner) -> None:
        """Remove an emptied stack from its thread or task (unless another replaced it)."""
        if isinstance(owner, int):
            if self._threads.get(owner) is stack:
                del self._threads[owner]
            return
        task = owner()
        if task is not None and self._tasks.get(task) is stack:
            del self._tasks[task]

    def _current(self, owner: _Owner) -> list[_Entry] | None:
        """The stack its owner has now (None once the task is gone or the thread forgotten)."""
        if isinstance(owner, int):
            return self._threads.get(owner)
        task = owner()
        return self._tasks.get(task) if task is not None else None

    def _sweep(self) -> None:
        """Forget spans (never ended) whose task or thread is gone; under the lock."""
        for link, (stack, owner) in list(self._where.items()):
            if self._current(owner) is not stack:
                del self._where[link]
        self._sweep_at = max(_SWEEP_FLOOR, 2 * len(self._where))
