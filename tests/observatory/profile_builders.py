"""Profiles for the profile tests and the UI benchmark: OTLP profile export requests as a sender writes
them, and `ProfileBatch`es of chosen rows as the receivers hand them to the store."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.profiles.v1development.profiles_service_pb2 import (
    ExportProfilesServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.profiles.v1development.profiles_pb2 import (
    Function,
    KeyValueAndUnit,
    Line,
    Link,
    Location,
    Profile,
    ProfilesDictionary,
    ResourceProfiles,
    Sample,
    ScopeProfiles,
    Stack,
    ValueType,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from boutique.observatory.otlp.values import to_any, to_key_values
from boutique.observatory.profiles.model import NANOSECONDS, ProfileBatch, ProfileResource

Frame = tuple[str, str, int]  # qualname, file, line
PERIOD_NS = 10_000_000  # one sample at 100 Hz
SCOPE = "boutique.mesh.profiler"
THREAD = "thread.name"


class Dictionary:
    """A request's `ProfilesDictionary` as it fills, the way the mesh's exporter writes one: entry 0 of
    every table the zero value (as OTLP wants), each string, frame and attribute once, a new stack and
    link each time one is asked for."""

    def __init__(self) -> None:
        self.table = ProfilesDictionary(
            string_table=[""],
            function_table=[Function()],
            location_table=[Location()],
            stack_table=[Stack()],
            link_table=[Link()],
            attribute_table=[KeyValueAndUnit()],
        )
        self.strings: dict[str, int] = {"": 0}
        self.locations: dict[Frame, int] = {}
        self.attributes: dict[tuple[str, str], int] = {}

    def string(self, text: str) -> int:
        """The text's index in the string table (added the first time)."""
        if text not in self.strings:
            self.strings[text] = len(self.table.string_table)
            self.table.string_table.append(text)
        return self.strings[text]

    def location(self, frame: Frame) -> int:
        """The frame's location: one line of its own function (both added the first time)."""
        if frame not in self.locations:
            name, file, line = frame
            function = Function(
                name_strindex=self.string(name),
                system_name_strindex=self.string(name),
                filename_strindex=self.string(file),
                start_line=line,
            )
            self.table.function_table.append(function)
            lines = [Line(function_index=len(self.table.function_table) - 1, line=line)]
            self.table.location_table.append(Location(lines=lines))
            self.locations[frame] = len(self.table.location_table) - 1
        return self.locations[frame]

    def stack(self, frames: Sequence[Frame]) -> int:
        """A new stack of the frames, given root first and stored leaf first as OTLP has it."""
        self.table.stack_table.append(Stack(location_indices=[self.location(f) for f in reversed(frames)]))
        return len(self.table.stack_table) - 1

    def link(self, trace_id: bytes, span_id: bytes) -> int:
        """A new link to a span."""
        self.table.link_table.append(Link(trace_id=trace_id, span_id=span_id))
        return len(self.table.link_table) - 1

    def attribute(self, key: str, value: Any) -> int:
        """The attribute's index (added the first time this key has this value)."""
        if (key, repr(value)) not in self.attributes:
            entry = KeyValueAndUnit(key_strindex=self.string(key), value=to_any(value))
            self.table.attribute_table.append(entry)
            self.attributes[key, repr(value)] = len(self.table.attribute_table) - 1
        return self.attributes[key, repr(value)]

    def sample(
        self,
        frames: Sequence[Frame],
        values: Sequence[int],
        times_ns: Sequence[int] = (),
        thread: str = "",
        trace: str = "",
        span: str = "",
    ) -> Sample:
        """A sample of a new stack (frames root first), on a named thread and linked to a span (ids in
        hex) when given."""
        return Sample(
            stack_index=self.stack(frames),
            values=values,
            timestamps_unix_nano=times_ns,
            attribute_indices=[self.attribute(THREAD, thread)] if thread else [],
            link_index=self.link(bytes.fromhex(trace), bytes.fromhex(span)) if trace or span else 0,
        )

    def profile(
        self, kind: str, samples: Sequence[Sample], start_ns: int, duration_ns: int = 10_000_000_000
    ) -> Profile:
        """A profile of one type in nanoseconds, sampled at 100 Hz, from `start_ns` for `duration_ns`."""
        sample_type = ValueType(type_strindex=self.string(kind), unit_strindex=self.string(NANOSECONDS))
        return Profile(
            sample_type=sample_type,
            period_type=sample_type,
            period=PERIOD_NS,
            time_unix_nano=start_ns,
            duration_nano=duration_ns,
            samples=samples,
        )


def export_request(
    dictionary: Dictionary, profiles: Sequence[Profile], service: str, instance: str
) -> ExportProfilesServiceRequest:
    """One resource (service, instance), one scope, these profiles and the dictionary they point into."""
    resource = Resource(attributes=to_key_values({"service.name": service, "service.instance.id": instance}))
    scope = ScopeProfiles(scope=InstrumentationScope(name=SCOPE), profiles=profiles)
    return ExportProfilesServiceRequest(
        resource_profiles=[ResourceProfiles(resource=resource, scope_profiles=[scope])],
        dictionary=dictionary.table,
    )


@dataclass
class BatchRow:
    """One row of a `ProfileBatch`: samples of a stack (frame labels, root first) at a time (µs)."""

    frames: Sequence[str]
    value: int
    time_us: int
    service: str
    instance: str
    type: str = "cpu"
    unit: str = NANOSECONDS
    thread: str = "MainThread"
    trace_id: bytes = b""
    span_id: bytes = b""


def profile_batch(rows: Iterable[BatchRow]) -> ProfileBatch:
    """One batch of the rows, a resource per (service, instance), each stack kept once."""
    batch = ProfileBatch()
    resources: dict[tuple[str, str], int] = {}
    for row in rows:
        key = (row.service, row.instance)
        if key not in resources:
            resources[key] = len(batch.resources)
            attributes = json.dumps({"service.name": row.service, "service.instance.id": row.instance})
            batch.resources.append(ProfileResource(row.service, row.instance, attributes))
        batch.time_us.append(row.time_us)
        batch.type.append(row.type)
        batch.unit.append(row.unit)
        batch.value.append(row.value)
        batch.stack_id.append(batch.add_stack(row.frames))
        batch.thread.append(row.thread)
        batch.labels.append("{}")
        batch.trace_id.append(row.trace_id)
        batch.span_id.append(row.span_id)
        batch.resource_index.append(resources[key])
    return batch
