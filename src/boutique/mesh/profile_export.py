"""The profiler's samples as OTLP profiles: one request every BOUTIQUE_PROFILING_EXPORT_INTERVAL seconds.

Every window the profiler gathered (`boutique.mesh.profiler`) is encoded as one
ExportProfilesServiceRequest (`opentelemetry.proto.profiles.v1development`): one ResourceProfiles under
the spans' own resource (`service.name`, `service.instance.id`, ...), one ScopeProfiles
("boutique.mesh.profiler") and three Profiles, "cpu", "wall" and "tasks" (asyncio tasks, waiting or
running), all in nanoseconds, with the period (1e9 / hz ns), the window's start and its length. The request's dictionary holds every table the
samples point into, entry 0 of each the empty one: strings, functions (name = qualified name, system
name = the code's name, file shortened as the profiler shortens it, start line), locations (one line
each: function and line), stacks (locations leaf first), links (trace and span id) and attributes
(`thread.name`). A sample is one row of the profiler: a stack on a thread (or a task of that thread's
loop) in a span within one second, its total as its one value and the time of every sample it
aggregates.

The request goes to a sending queue of its own (`boutique.mesh.export_queue`, signal PROFILES): the same
bounds, retries and spool as spans. A window that fails to encode is counted and logged once, never
raised; the last window is sent at the stop. `start_profiling` puts the pieces together for
`boutique.mesh.tracing.setup_tracing`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.profiles.v1development.profiles_service_pb2 import (
    ExportProfilesServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.profiles.v1development import profiles_pb2 as pb
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from boutique.mesh.export_queue import QueueSettings, SendingQueue
from boutique.mesh.metric_export import key_values
from boutique.mesh.otlp_send import PROFILES, OtlpTarget
from boutique.mesh.profile_spans import ActiveSpans, Link
from boutique.mesh.profiler import PROFILE_TYPES, Function, Profiler, ProfileWindow

log = logging.getLogger(__name__)

SCOPE = "boutique.mesh.profiler"
UNIT = "nanoseconds"
THREAD_ATTRIBUTE = "thread.name"
DEFAULT_INTERVAL = 10.0
EXPORT_THREAD = "otlp-profiles-export"  # "otlp-": its own log records are never exported (log_export)


class _Table:
    """One dictionary table: each distinct value once, entry 0 the zero value."""

    def __init__(self, zero: Hashable) -> None:
        self.index: dict[Hashable, int] = {zero: 0}

    def __call__(self, value: Hashable) -> int:
        """The value's index, a new entry the first time."""
        found = self.index.get(value)
        if found is None:
            found = self.index[value] = len(self.index)
        return found

    def values(self) -> list[Any]:
        """Every entry, by index (a dict keeps insertion order)."""
        return list(self.index)


class _Dictionary:
    """The request's tables as they fill, then written into its ProfilesDictionary."""

    def __init__(self) -> None:
        self.strings = _Table("")
        self.functions = _Table((0, 0, 0, 0))  # (name, system name, file, start line)
        self.locations = _Table((0, 0))  # (function, line)
        self.stacks = _Table(())  # location indices, leaf first
        self.links = _Table(b"")  # trace id + span id
        self.attributes = _Table((0, ""))  # (key's string index, text value)

    def function(self, function: Function) -> int:
        """A function's index (its strings interned on the way)."""
        return self.functions(
            (
                self.strings(function.qualname),
                self.strings(function.name),
                self.strings(function.file),
                function.first_line,
            )
        )

    def link(self, link: Link | None) -> int:
        """A span's index in the link table; 0 outside any span."""
        if link is None:
            return 0
        return self.links(link[0].to_bytes(16, "big") + link[1].to_bytes(8, "big"))

    def write(self, into: pb.ProfilesDictionary) -> None:
        """Fill the request's dictionary (every string is interned by then)."""
        into.mapping_table.add()
        into.string_table.extend(self.strings.values())
        into.function_table.extend(
            pb.Function(name_strindex=n, system_name_strindex=s, filename_strindex=f, start_line=line)
            for n, s, f, line in self.functions.values()
        )
        for function, line in self.locations.values():
            location = into.location_table.add()
            if function:
                location.lines.add(function_index=function, line=line)
        into.stack_table.extend(pb.Stack(location_indices=stack) for stack in self.stacks.values())
        into.link_table.extend(
            pb.Link(trace_id=both[:16], span_id=both[16:]) if both else pb.Link()
            for both in self.links.values()
        )
        for key, value in self.attributes.values():
            entry = into.attribute_table.add()
            if key:
                entry.key_strindex = key
                entry.value.CopyFrom(AnyValue(string_value=value))


def encode_window(window: ProfileWindow, resource: Resource) -> tuple[ExportProfilesServiceRequest, int]:
    """A profiler window as one export request, and how many samples (rows) it carries."""
    tables = _Dictionary()
    request = ExportProfilesServiceRequest()
    resource_profiles = request.resource_profiles.add()
    resource_profiles.resource.attributes.extend(key_values(resource.attributes))
    scope = resource_profiles.scope_profiles.add()
    scope.scope.name = SCOPE
    unit = tables.strings(UNIT)
    thread_key = tables.strings(THREAD_ATTRIBUTE)
    stacks: dict[int, int] = {}  # the window's stack id -> stack_table index
    threads: dict[str, int] = {}
    rows = 0
    for kind in PROFILE_TYPES:
        profile = scope.profiles.add()
        kind_index = tables.strings(kind)
        profile.sample_type.type_strindex = kind_index
        profile.sample_type.unit_strindex = unit
        profile.period_type.type_strindex = kind_index
        profile.period_type.unit_strindex = unit
        profile.period = window.period_ns
        profile.time_unix_nano = window.start_ns
        profile.duration_nano = max(0, window.end_ns - window.start_ns)
        profile.profile_id = os.urandom(16)
        for row in window.rows.get(kind, ()):
            stack = stacks.get(row.stack)
            if stack is None:
                frames = window.stacks[row.stack]
                stack = stacks[row.stack] = tables.stacks(
                    tuple(tables.locations((tables.function(function), line)) for function, line in frames)
                )
            thread = threads.get(row.thread)
            if thread is None:
                thread = threads[row.thread] = tables.attributes((thread_key, row.thread))
            profile.samples.add(
                stack_index=stack,
                values=[row.value],
                timestamps_unix_nano=row.timestamps,
                attribute_indices=[thread],
                link_index=tables.link(row.link),
            )
            rows += 1
    tables.write(request.dictionary)
    return request, rows


class ProfileExport:
    """Drain the profiler every `interval` seconds in a thread of its own and queue each window for sending."""

    def __init__(self, profiler: Profiler, queue: SendingQueue, resource: Resource, interval: float) -> None:
        self.profiler = profiler
        self.queue = queue
        self.resource = resource
        self.interval = interval
        self.exports = 0
        self._logged_failure = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=EXPORT_THREAD, daemon=True)
        self._thread.start()

    def export(self) -> int:
        """Encode and queue what the profiler gathered since the last export; how many rows went."""
        window = self.profiler.drain()
        if window.empty:
            return 0
        request, rows = encode_window(window, self.resource)
        self.queue.submit(request.SerializeToString(), len(PROFILE_TYPES))
        self.exports += 1
        return rows

    def _safe_export(self) -> None:
        try:
            self.export()
        except Exception:  # a bad window must not end the exports, nor the process
            self.profiler.stats.export_errors += 1
            if not self._logged_failure:
                self._logged_failure = True
                log.exception("profile export failed (counted in boutique_mesh_profiler_errors_total)")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._safe_export()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the profiler and this thread, and queue the last window."""
        if self._stop.is_set():
            return
        self._stop.set()
        self.profiler.stop(timeout)
        self._thread.join(timeout)
        self._safe_export()


@dataclass
class Profiling:
    """What `start_profiling` installed: the span map on the provider, the profiler, its export and queue."""

    spans: ActiveSpans
    profiler: Profiler
    export: ProfileExport
    queue: SendingQueue

    def stop(self) -> None:
        """Stop sampling and queue what was gathered last (the queue is stopped by its owner)."""
        self.export.stop()


def start_profiling(
    provider: TracerProvider,
    target: OtlpTarget,
    hz: int,
    interval: float = DEFAULT_INTERVAL,
    queue_settings: QueueSettings | None = None,
    spool_dir: Path | None = None,
    cpu: str = "signal",
) -> Profiling:
    """Profile this process at `hz` and send its profiles to `target` every `interval` seconds, under the
    provider's resource, each sample linked to the span its thread or task was in; the main thread's cpu
    samples by SIGPROF where `cpu` asks for it and it can be done (see `Profiler.cpu_source`)."""
    spans = ActiveSpans()
    provider.add_span_processor(spans)
    queue = SendingQueue(target.transport, queue_settings, spool_dir, signal=PROFILES)
    profiler = Profiler(hz, spans, cpu).start()
    export = ProfileExport(profiler, queue, provider.resource, interval)
    return Profiling(spans, profiler, export, queue)
