"""The profiler on real threads and a real event loop: what it samples, the spans it links, what it sends.

The main thread's cpu samples come from SIGPROF where it can be handled; tasks waiting on an asyncio
lock show in the "tasks" profile, each under its own span.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest
from opentelemetry.proto.profiles.v1development import profiles_pb2 as otlp
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from boutique.mesh.profile_export import SCOPE, encode_window
from boutique.mesh.profile_spans import ActiveSpans, Link
from boutique.mesh.profiler import TASKS_EVERY, Profiler, ProfileWindow, Row
from boutique.mesh.settings import MeshSettings, SettingsError
from tests.mesh.otlp_receiver import profile_samples


@pytest.fixture
def tracing() -> Iterator[tuple[Any, ActiveSpans]]:
    """A tracer of our own whose provider keeps the span map the profiler reads."""
    spans = ActiveSpans()
    provider = TracerProvider()
    provider.add_span_processor(spans)
    yield provider.get_tracer("test"), spans
    provider.shutdown()


def profile(
    run: Callable[[], None], spans: ActiveSpans | None = None, hz: int = 200, cpu: str = "signal"
) -> ProfileWindow:
    """Profile the process while `run` runs; what the profiler gathered."""
    profiler = Profiler(hz, spans, cpu).start()
    try:
        run()
    finally:
        profiler.stop()
    return profiler.drain()


def functions(window: ProfileWindow, row: Row) -> list[str]:
    """The function names of a row's stack, leaf first."""
    return [function.name for function, _ in window.stacks[row.stack]]


def total(window: ProfileWindow, kind: str, keep: Callable[[Row], bool]) -> int:
    """Nanoseconds of the rows of one type that `keep` accepts."""
    return sum(row.value for row in window.rows[kind] if keep(row))


def spin(stop: threading.Event) -> int:
    """Pure-Python work until told to stop."""
    count = 0
    while not stop.is_set():
        for step in range(1000):
            count += step
    return count


def crunch_a(seconds: float) -> int:
    """Pure-Python work for a while, holding the interpreter lock."""
    count, until = 0, time.perf_counter() + seconds
    while time.perf_counter() < until:
        count += 1
    return count


def crunch_b(seconds: float) -> int:
    """The same work under another name."""
    count, until = 0, time.perf_counter() + seconds
    while time.perf_counter() < until:
        count += 1
    return count


def link_of(span: Any) -> Link:
    context = span.get_span_context()
    return (context.trace_id, context.span_id)


# ---- samples ------------------------------------------------------------------------------------------


def test_a_hot_thread_dominates_the_cpu_samples_and_an_idle_one_has_wall_samples_only() -> None:
    stop = threading.Event()
    hot = threading.Thread(target=spin, args=(stop,), name="hot")
    idle = threading.Thread(target=stop.wait, name="idle")

    def run() -> None:
        hot.start()
        idle.start()
        time.sleep(1.0)
        stop.set()
        hot.join()
        idle.join()

    window = profile(run)
    cpu_total = total(window, "cpu", lambda row: True)
    spinning = total(window, "cpu", lambda row: "spin" in functions(window, row))
    print(f"\ncpu: spin {spinning / 1e6:.0f} ms of {cpu_total / 1e6:.0f} ms; {window.ticks} ticks")
    assert spinning > 0.8 * cpu_total
    assert all(row.thread == "hot" for row in window.rows["cpu"] if "spin" in functions(window, row))
    idle_wall = total(window, "wall", lambda row: row.thread == "idle")
    idle_cpu = total(window, "cpu", lambda row: row.thread == "idle")
    assert idle_wall >= 50 * window.period_ns, "the idle thread is sampled on the wall clock"
    assert idle_cpu < 0.02 * spinning, f"the idle thread had {idle_cpu / 1e6:.1f} ms on the CPU"
    assert not any(row.thread == "profiler" for row in window.rows["wall"]), "the sampler skips itself"
    for rows in window.rows.values():
        for row in rows:
            assert len({stamp // 1_000_000_000 for stamp in row.timestamps}) == 1, "a row spans one second"
    (frame, line), *_ = next(
        window.stacks[row.stack] for row in window.rows["cpu"] if functions(window, row)[0] == "spin"
    )
    first = spin.__code__.co_firstlineno
    assert (frame.file, frame.name, frame.first_line) == ("tests/mesh/test_profiler.py", "spin", first)
    assert frame.first_line < line <= frame.first_line + 6


def test_a_tick_with_fifteen_threads_costs_microseconds(capsys: pytest.CaptureFixture[str]) -> None:
    stop = threading.Event()
    threads = [threading.Thread(target=stop.wait, name=f"idle-{n}") for n in range(13)]
    threads.append(threading.Thread(target=spin, args=(stop,), name="busy"))
    for thread in threads:
        thread.start()
    try:
        profiler = Profiler(100)
        for _ in range(10):
            profiler.tick()
        began, ticks = time.perf_counter(), 300
        for _ in range(ticks):
            profiler.tick()
        each = (time.perf_counter() - began) / ticks
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    window = profiler.drain()
    sampled = {row.thread for row in window.rows["wall"]}
    assert {thread.name for thread in threads} <= sampled
    with capsys.disabled():
        print(f"\none tick over {len(sampled)} other threads (13 idle, 1 busy): {each * 1e6:.0f} us")


# ---- spans --------------------------------------------------------------------------------------------


def test_samples_of_a_thread_inside_a_span_carry_that_span_and_no_other_thread_does(
    tracing: tuple[Any, ActiveSpans],
) -> None:
    tracer, spans = tracing
    stop = threading.Event()
    inside: dict[str, Any] = {}

    def in_span() -> None:
        with tracer.start_as_current_span("work") as span:
            inside["span"] = span
            spin(stop)

    def run() -> None:
        threads = [
            threading.Thread(target=in_span, name="spanned"),
            threading.Thread(target=spin, args=(stop,), name="plain"),
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.8)
        stop.set()
        for thread in threads:
            thread.join()

    window = profile(run, spans)
    span = inside["span"]
    link = link_of(span)
    for kind in ("cpu", "wall"):
        linked = [row for row in window.rows[kind] if row.link == link]
        assert linked and all(row.thread == "spanned" for row in linked)
        assert all(span.start_time <= stamp <= span.end_time for row in linked for stamp in row.timestamps)
        working = [row for row in window.rows[kind] if {"in_span", "spin"} <= set(functions(window, row))]
        assert working and all(row.link == link for row in working), "in the span, every sample has it"
        assert not any(row.link for row in window.rows[kind] if row.thread != "spanned")
    assert spans.open_spans == 0


# The sampler reads frames holding the interpreter lock, so it sees a thread running Python only when that
# thread lets the lock go: at a blocking call, or when made to after the switch interval (5 ms). Each burst
# of work here outlasts it, so samples land inside the work, not only at the loop's select.
SWITCH_BURST = 0.02


async def test_two_tasks_on_one_loop_get_their_own_spans(tracing: tuple[Any, ActiveSpans]) -> None:
    tracer, spans = tracing
    opened: dict[str, Any] = {}

    async def task(name: str, crunch: Callable[[float], int]) -> None:
        with tracer.start_as_current_span(name) as span:
            opened[name] = span
            until = time.monotonic() + 0.8
            while time.monotonic() < until:
                crunch(SWITCH_BURST)
                await asyncio.sleep(0)

    profiler = Profiler(200, spans).start()
    try:
        await asyncio.gather(task("a", crunch_a), task("b", crunch_b))
    finally:
        profiler.stop()
    window = profiler.drain()
    links = {name: link_of(span) for name, span in opened.items()}
    for name, function in (("a", "crunch_a"), ("b", "crunch_b")):
        rows = [row for row in window.rows["wall"] if function in functions(window, row)]
        assert sum(len(row.timestamps) for row in rows) >= 10, f"too few samples of {function}"
        assert {row.link for row in rows} == {links[name]}, f"{function} ran in task {name}, inside its span"
    assert spans.open_spans == 0


# ---- the main thread by SIGPROF -----------------------------------------------------------------------


def serve_short_calls(tracer: Any, seconds: float, opened: list[Any]) -> None:
    """An event loop on this (the main) thread serving short calls, each a span around 0.3 ms of Python;
    the spans go to `opened`."""

    async def call() -> None:
        with tracer.start_as_current_span("call") as span:
            opened.append(span)
            crunch_a(0.0003)
        await asyncio.sleep(0)

    async def serve() -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            await asyncio.gather(*(call() for _ in range(10)))

    asyncio.run(serve())


def test_the_main_threads_short_calls_are_sampled_by_sigprof_inside_their_spans(
    tracing: tuple[Any, ActiveSpans],
) -> None:
    tracer, spans = tracing
    stop = threading.Event()
    hot = threading.Thread(target=spin, args=(stop,), name="hot")  # CPU the timer counts, not the main's
    shares: dict[str, float] = {}
    for cpu in ("thread", "signal"):
        opened: list[Any] = []
        began = time.thread_time_ns()
        profiler = Profiler(200, spans, cpu).start()
        assert profiler.cpu_source == cpu
        if cpu == "signal":
            assert signal.getitimer(signal.ITIMER_PROF)[1] == 0.005
            hot.start()
        try:
            serve_short_calls(tracer, 1.0, opened)
        finally:
            used = time.thread_time_ns() - began
            profiler.stop()
        window = profiler.drain()
        main = [row for row in window.rows["cpu"] if row.thread == "MainThread"]
        links = {link_of(span) for span in opened}
        main_total = sum(row.value for row in main) or 1
        shares[cpu] = sum(row.value for row in main if row.link in links) / main_total
        if cpu == "signal":
            stop.set()
            hot.join()
            assert profiler.stats.signal_samples > 0
            assert main_total <= used, "the main thread is charged its own CPU only, never the hot thread's"
            inside = [row for row in main if "crunch_a" in functions(window, row)]
            assert inside and all(row.link in links for row in inside), "a call's samples carry its span"
            crunching = sum(row.value for row in inside)
            selecting = sum(row.value for row in main if "select" in functions(window, row))
            assert crunching > selecting
            assert total(window, "cpu", lambda row: row.thread == "hot") > 0, "the hot thread is sampled"
    print(
        f"\nthe main thread's cpu linked to the calls' spans: {shares['thread']:.0%} by the sampling thread, "
        f"{shares['signal']:.0%} by SIGPROF"
    )
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0), "the timer stops with the profiler"
    assert signal.getsignal(signal.SIGPROF) == signal.SIG_DFL, "SIGPROF is given back"


def test_sigprof_is_not_taken_from_another_handler_nor_from_a_thread() -> None:
    def theirs(signum: int, frame: Any) -> None:
        return None

    previous = signal.signal(signal.SIGPROF, theirs)
    try:
        profiler = Profiler(100).start()
        profiler.stop()
        assert (profiler.cpu_source, profiler.cpu_fallback) == ("thread", "SIGPROF has a handler of its own")
        assert signal.getsignal(signal.SIGPROF) is theirs
    finally:
        signal.signal(signal.SIGPROF, previous)
    started: list[Profiler] = []
    elsewhere = threading.Thread(target=lambda: started.append(Profiler(100).start()))
    elsewhere.start()
    elsewhere.join()
    started[0].stop()
    assert (started[0].cpu_source, started[0].cpu_fallback) == ("thread", "not started from the main thread")
    first = Profiler(100).start()
    second = Profiler(100).start()
    try:
        assert (first.cpu_source, second.cpu_source) == ("signal", "thread")
        assert second.cpu_fallback == "SIGPROF is taken by another profiler of this process"
    finally:
        second.stop()
        first.stop()
    assert signal.getsignal(signal.SIGPROF) == signal.SIG_DFL
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)


def test_a_forked_child_has_no_timer_and_starts_its_own() -> None:
    profiler = Profiler(100).start()
    try:
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:  # the child: report and leave at once, whatever happens
            try:
                inherited = signal.getitimer(signal.ITIMER_PROF)
                own = Profiler(100).start()
                report = [inherited, own.cpu_source, signal.getitimer(signal.ITIMER_PROF)[1]]
                own.stop()
                os.write(write_end, json.dumps(report).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end) as reply:
            inherited, source, interval = json.loads(reply.read())
        os.waitpid(child, 0)
    finally:
        profiler.stop()
    assert inherited == [0.0, 0.0], "an interval timer is not inherited across fork"
    assert (source, interval) == ("signal", 0.01), "the child arms its own"


# A profiler never stopped, and an exit with work left for the interpreter's last steps (freeing this).
NEVER_STOPPED = """
from boutique.mesh.profiler import Profiler
profiler = Profiler(1000).start()
kept = [list(range(100)) for _ in range(200_000)]
print(profiler.cpu_source)
"""


def test_a_process_exits_cleanly_with_its_cpu_timer_never_stopped() -> None:
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", NEVER_STOPPED], capture_output=True, text=True, timeout=60
        )
        assert (done.returncode, done.stdout) == (0, "signal\n"), (
            done.returncode
        )  # not 155: SIGPROF's default


# ---- asyncio tasks ------------------------------------------------------------------------------------


class Frameless(Generator[Any, Any, Any]):
    """An awaitable without a Python frame that awaits a coroutine, as a Cython coroutine does."""

    cr_frame = None

    def __init__(self, inner: Any) -> None:
        self.cr_await = inner

    def __await__(self) -> Generator[Any, Any, Any]:
        return self

    def send(self, value: Any) -> Any:
        return self.cr_await.send(value)

    def throw(self, *error: Any) -> Any:
        return self.cr_await.throw(*error)


async def test_tasks_waiting_on_a_lock_are_sampled_where_they_wait_each_in_its_own_span(
    tracing: tuple[Any, ActiveSpans],
) -> None:
    tracer, spans = tracing
    lock = asyncio.Lock()
    held = asyncio.Event()
    opened: dict[str, Any] = {}

    async def holding() -> None:
        with tracer.start_as_current_span("holder") as span:
            opened["holder"] = span
            async with lock:
                held.set()
                await asyncio.sleep(0.6)

    async def waiting(name: str) -> None:
        with tracer.start_as_current_span(name) as span:
            opened[name] = span
            async with lock:
                pass

    async def behind(name: str) -> None:
        await Frameless(waiting(name))

    holder = asyncio.create_task(holding())
    await held.wait()
    profiler = Profiler(100, spans, tasks_every=1).start()
    names = [f"waiter-{n}" for n in range(6)]
    waiters = [asyncio.create_task(waiting(name)) for name in names[:-1]]
    waiters.append(asyncio.create_task(behind(names[-1])))
    try:
        await asyncio.gather(holder, *waiters)
    finally:
        profiler.stop()
    window = profiler.drain()
    rows = window.rows["tasks"]
    assert rows and {row.thread for row in rows} == {"MainThread"}
    assert all(row.value == len(row.timestamps) * window.period_ns for row in rows)
    for name in names:
        link = link_of(opened[name])
        mine = [row for row in rows if row.link == link]
        assert sum(len(row.timestamps) for row in mine) >= 5, f"too few tasks samples of {name}"
        stacks = {tuple(functions(window, row)) for row in mine}
        assert any(stack[:3] == ("acquire", "__aenter__", "waiting") for stack in stacks), stacks
    (last,) = [opened[names[-1]]]
    assert any(
        functions(window, row)[-2:] == ["waiting", "behind"] for row in rows if row.link == link_of(last)
    ), "the frameless awaitable is passed through"
    holder_stacks = [functions(window, row) for row in rows if row.link == link_of(opened["holder"])]
    assert any(stack[:2] == ["sleep", "holding"] for stack in holder_stacks)
    assert profiler.stats.task_samples == sum(len(row.timestamps) for row in rows)


def test_a_tick_with_fifty_pending_tasks(tracing: tuple[Any, ActiveSpans]) -> None:
    tracer, spans = tracing
    ready, release = threading.Event(), threading.Event()

    async def pending() -> None:
        lock = asyncio.Lock()

        async def waiting() -> None:
            with tracer.start_as_current_span("waiting"):
                async with lock:
                    pass

        async with lock:
            tasks = [asyncio.create_task(waiting()) for _ in range(50)]
            await asyncio.sleep(0)
            ready.set()
            await asyncio.to_thread(release.wait)
        await asyncio.gather(*tasks)

    loop = threading.Thread(target=asyncio.run, args=(pending(),), name="loop")
    loop.start()
    ready.wait(10)
    costs = {}
    try:
        for every in (0, 1, TASKS_EVERY):
            profiler = Profiler(100, spans, "thread", tasks_every=every)
            for _ in range(10):
                profiler.tick()
            profiler.stats.tick_ns = profiler.stats.ticks = profiler.stats.task_samples = 0
            for _ in range(200):
                profiler.tick()
            costs[every] = profiler.stats.mean_tick_us
            expected = 200 * 51 // every if every else 0  # the 50 waiting and the one holding the lock
            assert profiler.stats.task_samples == expected
    finally:
        release.set()
        loop.join()
    print(
        f"\none tick (CPU) with 51 tasks pending: {costs[0]:.0f} us without sampling them, {costs[1]:.0f} us "
        f"sampling them at every tick, {costs[TASKS_EVERY]:.0f} us on average at every {TASKS_EVERY}th"
    )


def test_the_span_map_forgets_spans_that_ended_and_threads_that_did(tracing: tuple[Any, ActiveSpans]) -> None:
    tracer, spans = tracing

    def many() -> None:
        for _ in range(50):
            with tracer.start_as_current_span("outer"), tracer.start_as_current_span("inner"):
                pass

    async def tasks() -> None:
        async def one() -> None:
            with tracer.start_as_current_span("task"):
                await asyncio.sleep(0)

        await asyncio.gather(*(one() for _ in range(50)))

    threads = [threading.Thread(target=many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    asyncio.run(tasks())
    assert spans.open_spans == 0
    assert spans.stacks == 0

    left_open = threading.Event()

    def never_ends() -> None:
        tracer.start_span("forgotten").__enter__()  # started and never ended, on a thread that ends
        left_open.set()

    thread = threading.Thread(target=never_ends)
    thread.start()
    thread.join()
    assert left_open.is_set() and spans.open_spans == 1
    spans.forget_threads(sys._current_frames().keys())
    assert spans.open_spans == 0 and spans.stacks == 0


# ---- the OTLP request -----------------------------------------------------------------------------------


def test_the_request_decodes_back_to_the_same_stacks_values_and_links(
    tracing: tuple[Any, ActiveSpans],
) -> None:
    tracer, spans = tracing
    stop = threading.Event()
    opened: dict[str, Any] = {}

    def in_span() -> None:
        with tracer.start_as_current_span("encoded") as span:
            opened["span"] = span
            spin(stop)

    def run() -> None:
        thread = threading.Thread(target=in_span, name="worker")
        thread.start()
        time.sleep(0.5)
        stop.set()
        thread.join()

    window = profile(run, spans)
    resource = Resource.create({"service.name": "shop-test", "service.instance.id": "shop-test-1"})
    request, rows = encode_window(window, resource)
    decoded = profile_samples(type(request).FromString(request.SerializeToString()))
    assert rows == len(decoded) == sum(len(kind) for kind in window.rows.values())

    def as_sent(kind: str, row: Row) -> tuple[Any, ...]:
        frames = tuple((f.qualname, f.file, line) for f, line in window.stacks[row.stack])
        link = (row.link[0].to_bytes(16, "big"), row.link[1].to_bytes(8, "big")) if row.link else (b"", b"")
        return (kind, frames, row.value, tuple(row.timestamps), row.thread, *link)

    expected = sorted(as_sent(kind, row) for kind, kind_rows in window.rows.items() for row in kind_rows)
    got = sorted((s.type, s.frames, s.value, s.timestamps, s.thread, s.trace_id, s.span_id) for s in decoded)
    assert got == expected
    span_id = opened["span"].get_span_context().span_id.to_bytes(8, "big")
    assert any(s.span_id == span_id and s.thread == "worker" for s in decoded)
    assert {s.resource["service.name"] for s in decoded} == {"shop-test"}

    tables = request.dictionary
    assert tables.string_table[0] == "" and tables.mapping_table[0] == otlp.Mapping()
    for table, zero in (
        (tables.function_table, otlp.Function()),
        (tables.location_table, otlp.Location()),
        (tables.stack_table, otlp.Stack()),
        (tables.link_table, otlp.Link()),
        (tables.attribute_table, otlp.KeyValueAndUnit()),
    ):
        assert table[0] == zero
    assert len(set(tables.string_table)) == len(tables.string_table), "each string once"
    (scope,) = request.resource_profiles[0].scope_profiles
    assert scope.scope.name == SCOPE
    strings = tables.string_table
    assert [
        (strings[p.sample_type.type_strindex], strings[p.sample_type.unit_strindex]) for p in scope.profiles
    ] == [
        ("cpu", "nanoseconds"),
        ("wall", "nanoseconds"),
        ("tasks", "nanoseconds"),
    ]
    for sent in scope.profiles:
        assert sent.period == window.period_ns == 5_000_000
        assert (
            sent.time_unix_nano == window.start_ns and sent.duration_nano == window.end_ns - window.start_ns
        )
        assert all(len(sample.values) == 1 for sample in sent.samples)


# ---- settings ---------------------------------------------------------------------------------------------

# setup_tracing as `boutique serve` calls it, then the threads running and the "tracing" line's profiling.
SETUP = """
import json, logging, signal, sys, threading
from boutique.mesh.logs import configure_logging
from boutique.mesh.settings import MeshSettings
from boutique.mesh.tracing import setup_tracing

MeshSettings.install(MeshSettings.from_env())
configure_logging("cart", "cart-7")
setup = setup_tracing("cart", "cart-7", "1.0", MeshSettings.current().tracing)
report = {
    "threads": sorted(t.name for t in threading.enumerate()),
    "profiling": setup.profiling is not None,
    "queues": sorted(q.signal.name for q in setup.queues()),
    "timer": signal.getitimer(signal.ITIMER_PROF)[1],
}
setup.shutdown(0.5)
report["timer_after"] = signal.getitimer(signal.ITIMER_PROF)[1]
print(json.dumps(report), flush=True)
"""


def setup_in_a_process(**env: str) -> tuple[dict[str, Any], str]:
    """Run SETUP with these variables (OTLP to a port nothing listens on); what it printed, and the
    "tracing" line's profiling field."""
    variables = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:47199",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "BOUTIQUE_LOG_STREAM": "stderr",
        **env,
    }
    done = subprocess.run(
        [sys.executable, "-c", SETUP], capture_output=True, text=True, timeout=60, env=variables
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    setup = next(line for line in lines if line["event"] == "tracing")
    return json.loads(done.stdout), setup["profiling"]


def test_profiling_is_on_wherever_spans_go_by_otlp_and_off_starts_nothing() -> None:
    on, said = setup_in_a_process(BOUTIQUE_PROFILING_HZ="50")
    assert on["profiling"] and "profiler" in on["threads"] and "profiles" in on["queues"]
    where = "otlp http/protobuf http://127.0.0.1:47199/v1development/profiles"
    assert said == f"{where} at 50 Hz every 10 s (cpu: signal)"
    assert (on["timer"], on["timer_after"]) == (0.02, 0.0), "SIGPROF every 20 ms of CPU, until the shutdown"
    by_thread, said = setup_in_a_process(BOUTIQUE_PROFILING_CPU="thread")
    assert said == f"{where} at 100 Hz every 10 s (cpu: thread)" and by_thread["timer"] == 0.0
    for value in ("off", "0", "false", "no"):
        off, said = setup_in_a_process(BOUTIQUE_PROFILING=value)
        assert not off["profiling"] and "profiler" not in off["threads"], value
        assert "profiles" not in off["queues"] and said == "off"
    no_spans, said = setup_in_a_process(OTEL_TRACES_EXPORTER="none")
    assert not no_spans["profiling"] and "profiler" not in no_spans["threads"] and said == "off"


def test_the_rate_interval_and_target_come_from_their_variables() -> None:
    signals = MeshSettings.from_env({}).signals
    assert (signals.profiling, signals.profiling_hz, signals.profiling_interval) == (True, 100, 10.0)
    assert signals.profiling_cpu == "signal"
    assert MeshSettings.from_env({"BOUTIQUE_PROFILING_CPU": "Thread"}).signals.profiling_cpu == "thread"
    signals = MeshSettings.from_env(
        {
            "BOUTIQUE_PROFILING_HZ": "19",
            "BOUTIQUE_PROFILING_EXPORT_INTERVAL": "2.5",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT": "http://profiles:4040/v1development/profiles",
            "OTEL_EXPORTER_OTLP_PROFILES_HEADERS": "x-scope=a",
        }
    ).signals
    assert (signals.profiling_hz, signals.profiling_interval) == (19, 2.5)
    assert signals.profiles_target.endpoint == "http://profiles:4040/v1development/profiles"
    assert signals.profiles_target.headers == (("x-scope", "a"),)
    assert signals.metrics_target.endpoint == "http://collector:4318/v1/metrics"
    generic = MeshSettings.from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        }
    ).signals
    assert generic.profiles_target.endpoint == "http://collector:4318/v1development/profiles"


@pytest.mark.parametrize("value", ["0", "1001", "fast", "50.5"])
def test_a_bad_rate_is_refused_in_one_line(value: str) -> None:
    message = (
        f"BOUTIQUE_PROFILING_HZ must be a whole number of samples per second from 1 to 1000, got {value!r}"
    )
    with pytest.raises(SettingsError) as refused:
        MeshSettings.from_env({"BOUTIQUE_PROFILING_HZ": value})
    assert str(refused.value) == message


def test_a_bad_switch_or_interval_is_refused_naming_its_variable() -> None:
    with pytest.raises(SettingsError, match=r"^BOUTIQUE_PROFILING_EXPORT_INTERVAL must be more than 0 s"):
        MeshSettings.from_env({"BOUTIQUE_PROFILING_EXPORT_INTERVAL": "0"})
    with pytest.raises(SettingsError, match=r"^BOUTIQUE_PROFILING must be true or false"):
        MeshSettings.from_env({"BOUTIQUE_PROFILING": "sometimes"})
    with pytest.raises(SettingsError) as refused:
        MeshSettings.from_env({"BOUTIQUE_PROFILING_CPU": "perf"})
    assert str(refused.value) == "BOUTIQUE_PROFILING_CPU must be one of signal, thread, got 'perf'"
    quiet = MeshSettings.from_env({"OTEL_TRACES_EXPORTER": "none", "BOUTIQUE_PROFILING_HZ": "fast"}).signals
    assert not quiet.profiling, "the rate is read only where profiling is on"


def test_serve_with_a_bad_rate_exits_2_with_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "boutique.cli", "serve", "currency"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "BOUTIQUE_PROFILING_HZ": "5000", "PORT": "0", "BOUTIQUE_METRICS": "off"},
    )
    assert done.returncode == 2
    assert done.stderr == (
        "boutique serve currency: BOUTIQUE_PROFILING_HZ must be a whole number of samples per second "
        "from 1 to 1000, got '5000'\n"
    )
