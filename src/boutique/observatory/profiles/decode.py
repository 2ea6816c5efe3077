"""OTLP `ExportProfilesServiceRequest` bodies (protobuf or OTLP/JSON) to a `ProfileBatch`.

A request carries one dictionary (strings, functions, locations, stacks, links, attributes) that its
profiles index into. Each sample becomes a row: its stack's frames as `frame_label(function, file,
line)`, root first (OTLP lists locations leaf first, and a location's inlined lines innermost first);
its type and unit the profile's `sample_type`; its value the sum of its values (one value for all its
timestamps), or one row per value when it has one timestamp per value; its time the earliest timestamp,
else the profile's start; its thread the `thread.name` attribute, its other attributes (and the
profile's) the row's `labels`; its span the link it names (index 0: no span).

Anything that does not hold together (an index outside its table, a link whose ids are not 16 and 8
bytes, a negative value or line, a sum past 2**63, a stack deeper than `MAX_FRAMES`, a profile
without a sample type) refuses the profile it is in, counted for the partial success with the reason;
a request whose every profile is refused is refused whole (`PayloadError`: 400 / INVALID_ARGUMENT),
as is one that is no request at all. Service and instance come from the resource as for log records.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.profiles.v1development.profiles_service_pb2 import (
    ExportProfilesServiceRequest,
)
from opentelemetry.proto.profiles.v1development.profiles_pb2 import Profile, ProfilesDictionary, Sample

# Modules, not names, where they import the receivers package, which imports this module.
from boutique.observatory.logs import decode as logs_wire
from boutique.observatory.otlp.values import from_any
from boutique.observatory.profiles.model import ProfileBatch, frame_label
from boutique.observatory.receivers.otlp_json import (
    convert_lists,
    json_object,
    parse_request,
    with_hex_ids,
)
from boutique.observatory.receivers.otlp_proto import PayloadError, json_document

MAX_FRAMES = 1024  # frames of one stack (inlined lines counted); Python's own recursion limit is 1000
MAX_VALUE = 2**63 - 1  # a row's value must fit the store's BIGINT
THREAD_NAME = "thread.name"
BAD_IDS = "link trace_id must be 16 bytes and span_id 8 bytes (or both empty)"
_ZERO_TRACE, _ZERO_SPAN = bytes(16), bytes(8)
_ID_KEYS = ("traceId", "trace_id", "spanId", "span_id")
_PROFILE_IDS = ("profileId", "profile_id")


class Refused(ValueError):
    """One profile that cannot be stored; the message says why."""


def decode(data: bytes) -> ProfileBatch:
    """The samples of a serialized ExportProfilesServiceRequest; `PayloadError` if it is not one."""
    try:
        request = ExportProfilesServiceRequest.FromString(data)
    except (DecodeError, RecursionError) as exc:
        raise PayloadError(f"not an OTLP ExportProfilesServiceRequest: {exc}") from None
    return from_request(request)


def decode_json(data: bytes) -> ProfileBatch:
    """The samples of an OTLP/JSON ExportProfilesServiceRequest body; `PayloadError` if it is not one."""
    return from_request(request_from_json(json_document(data)))


def request_from_json(value: Any) -> ExportProfilesServiceRequest:
    """The request a parsed OTLP/JSON document encodes (hex ids, as OTLP/JSON writes them); `PayloadError`
    for a wrong shape or bad hex."""
    document = dict(json_object(value, "the request"))
    if document.get("dictionary") is not None:
        dictionary = json_object(document["dictionary"], "dictionary")
        document["dictionary"] = convert_lists(dictionary, ("linkTable", "link_table"), _link, "dictionary")
    return parse_request(document, ExportProfilesServiceRequest(), "Profiles", ("profiles",), _profile)


def _link(value: Any, where: str) -> dict[str, Any]:
    return with_hex_ids(json_object(value, where), _ID_KEYS, where)


def _profile(value: Any, where: str) -> dict[str, Any]:
    return with_hex_ids(json_object(value, where), _PROFILE_IDS, where)


def from_request(request: ExportProfilesServiceRequest) -> ProfileBatch:
    """The rows of a parsed request; profiles that do not hold together are counted in `rejected`."""
    batch = ProfileBatch()
    tables = _Tables(request.dictionary)
    profiles = 0
    now_ns = time.time_ns()
    for resource_profiles in request.resource_profiles:
        resource_index = len(batch.resources)
        used = False
        for scope_profiles in resource_profiles.scope_profiles:
            for profile in scope_profiles.profiles:
                profiles += 1
                try:
                    rows = tables.rows(profile, now_ns)
                except Refused as exc:
                    batch.rejected += 1
                    batch.rejection = batch.rejection or str(exc)
                    continue
                for row in rows:
                    _append(batch, row, resource_index, tables)
                used = used or bool(rows)
        if used:
            batch.resources.append(logs_wire.resource(resource_profiles.resource.attributes))
    if profiles and batch.rejected == profiles:
        raise PayloadError(f"every profile was refused: {batch.rejection}")
    return batch


_Row = tuple[int, str, str, int, int, str, str, bytes, bytes]  # time_us .. span_id, as the columns


def _append(batch: ProfileBatch, row: _Row, resource_index: int, tables: _Tables) -> None:
    time_us, kind, unit, value, stack, thread, labels, trace_id, span_id = row
    batch.time_us.append(time_us)
    batch.type.append(kind)
    batch.unit.append(unit)
    batch.value.append(value)
    batch.stack_id.append(batch.add_stack(tables.stacks[stack]))
    batch.thread.append(thread)
    batch.labels.append(labels)
    batch.trace_id.append(trace_id)
    batch.span_id.append(span_id)
    batch.resource_index.append(resource_index)


class _Tables:
    """A request's dictionary, each entry checked and turned into what rows hold once."""

    def __init__(self, dictionary: ProfilesDictionary) -> None:
        self.dictionary = dictionary
        self.stacks: dict[int, tuple[str, ...]] = {}  # stack_index -> frames, root first
        self._links: dict[int, tuple[bytes, bytes]] = {}
        self._attributes: dict[int, tuple[str, Any]] = {}

    def string(self, index: int, what: str) -> str:
        strings = self.dictionary.string_table
        if not 0 <= index < len(strings):
            raise Refused(f"{what} string index {index} is outside the string table ({len(strings)})")
        return strings[index]

    def stack(self, index: int) -> int:
        """The stack's index, once its frames are known good (kept in `stacks`)."""
        if index not in self.stacks:
            table = self.dictionary.stack_table
            if not 0 <= index < len(table):
                raise Refused(f"stack_index {index} is outside the stack table ({len(table)})")
            leaf_first: list[str] = []
            for location in table[index].location_indices:
                leaf_first.extend(self._location(location))
                if len(leaf_first) > MAX_FRAMES:
                    raise Refused(f"stack {index} is deeper than {MAX_FRAMES} frames")
            self.stacks[index] = tuple(reversed(leaf_first))
        return index

    def _location(self, index: int) -> list[str]:
        table = self.dictionary.location_table
        if not 0 <= index < len(table):
            raise Refused(f"location index {index} is outside the location table ({len(table)})")
        location = table[index]
        if not location.lines:
            return [self._address(location.mapping_index, location.address)]
        frames = []
        for line in location.lines:  # the innermost (inlined) first, as the stack's leaf comes first
            functions = self.dictionary.function_table
            if not 0 <= line.function_index < len(functions):
                raise Refused(
                    f"function_index {line.function_index} is outside the function table ({len(functions)})"
                )
            if line.line < 0:
                raise Refused(f"line number {line.line} is negative")
            function = functions[line.function_index]
            name = self.string(function.name_strindex, "function name") or self.string(
                function.system_name_strindex, "function system name"
            )
            file = self.string(function.filename_strindex, "function file name")
            frames.append(frame_label(name or "<unknown>", file, line.line))
        return frames

    def _address(self, mapping_index: int, address: int) -> str:
        """A location without lines: its address, and the file it is mapped from when known."""
        mappings = self.dictionary.mapping_table
        if not 0 <= mapping_index < len(mappings):
            raise Refused(f"mapping_index {mapping_index} is outside the mapping table ({len(mappings)})")
        file = self.string(mappings[mapping_index].filename_strindex, "mapping file name")
        return f"0x{address:x} ({file})" if file else f"0x{address:x}"

    def link(self, index: int) -> tuple[bytes, bytes]:
        """(trace id, span id) of a link, b"" for none (the zero link, all-zero ids)."""
        if index not in self._links:
            table = self.dictionary.link_table
            if not 0 <= index < len(table):
                raise Refused(f"link_index {index} is outside the link table ({len(table)})")
            trace_id, span_id = bytes(table[index].trace_id), bytes(table[index].span_id)
            if (len(trace_id), len(span_id)) not in ((0, 0), (16, 8)):
                raise Refused(f"{BAD_IDS}: link {index} has {len(trace_id)} and {len(span_id)}")
            if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
                trace_id, span_id = b"", b""
            self._links[index] = (trace_id, span_id)
        return self._links[index]

    def attribute(self, index: int) -> tuple[str, Any]:
        """(key, plain value) of an attribute-table entry."""
        if index not in self._attributes:
            table = self.dictionary.attribute_table
            if not 0 <= index < len(table):
                raise Refused(f"attribute index {index} is outside the attribute table ({len(table)})")
            entry = table[index]
            self._attributes[index] = (
                self.string(entry.key_strindex, "attribute key"),
                from_any(entry.value),
            )
        return self._attributes[index]

    def rows(self, profile: Profile, now_ns: int) -> list[_Row]:
        """A profile's rows; `Refused` when anything in it does not hold together."""
        kind = self.string(profile.sample_type.type_strindex, "sample type")
        unit = self.string(profile.sample_type.unit_strindex, "sample unit")
        if not kind:
            raise Refused("the profile's sample_type names no type")
        common = dict(self.attribute(i) for i in profile.attribute_indices)
        start_ns = profile.time_unix_nano or now_ns
        rows: list[_Row] = []
        for sample in profile.samples:
            stack = self.stack(sample.stack_index)
            trace_id, span_id = self.link(sample.link_index)
            labels = dict(common)
            labels.update(self.attribute(i) for i in sample.attribute_indices)
            thread = labels.pop(THREAD_NAME, "")
            text = logs_wire.json_text(dict(sorted(labels.items())))
            named = (kind, unit)
            for time_ns, value in _values(sample, start_ns, profile.period):
                rows.append((time_ns // 1000, *named, value, stack, str(thread), text, trace_id, span_id))
        return rows


def _values(sample: Sample, start_ns: int, period: int) -> Sequence[tuple[int, int]]:
    """(time in ns, value) of each row a sample makes; `Refused` for a shape OTLP does not allow."""
    values, stamps = sample.values, sample.timestamps_unix_nano
    if any(value < 0 for value in values):
        raise Refused(f"a sample value is negative ({min(values)})")
    if len(values) > 1 and len(values) != len(stamps):
        raise Refused(f"a sample has {len(values)} values for {len(stamps)} timestamps")
    if len(values) > 1:
        return list(zip(stamps, values, strict=True))
    if values:
        total = values[0]
    elif stamps:  # no value: each timestamp is one event of the profile's period
        total = len(stamps) * max(period, 1)
    else:
        raise Refused("a sample has neither values nor timestamps")
    if total > MAX_VALUE:
        raise Refused(f"a sample's value {total} does not fit 64 bits")
    return [(min(stamps) if stamps else start_ns, total)]
