"""A pprof `Profile` (gzipped or not) to samples per stack, as Pyroscope clients send it.

One of the profile's sample types is read: the one asked for by name, else "cpu", else the first.
Its values become nanoseconds where they are time (seconds to nanoseconds scaled; a count of samples
times the profile's period when that is in nanoseconds, else times `ns_per_sample`); other units
(bytes, objects) are kept as sent. Frames are `frame_label(function, file, line)`, root first (pprof
lists locations leaf first, and a location's inlined lines innermost first); a location without lines
is its address. The `thread_name` label is the thread; the other labels are returned as they are.
An id or string index that names nothing, a negative value or line, a stack deeper than
`decode.MAX_FRAMES` or bytes that are no Profile refuse the whole profile (`PayloadError`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError

# The module, not its names: `decode` imports the receivers package, which imports this module.
from boutique.observatory.profiles import decode, pprof_pb2
from boutique.observatory.profiles.model import NANOSECONDS, frame_label
from boutique.observatory.receivers.otlp_proto import PayloadError

THREAD_LABEL = "thread_name"  # what pyroscope-rs names a sample's thread (report_thread_name)
GZIP_MAGIC = b"\x1f\x8b"
_TIME_UNITS = {"nanoseconds": 1, "microseconds": 1_000, "milliseconds": 1_000_000, "seconds": 1_000_000_000}
_COUNTS = ("count", "samples", "")  # units of a number of samples
_SAMPLE_TYPES = ("samples", "sample")  # a type that only counts samples: CPU samples, as Pyroscope reads it


@dataclass
class PprofSample:
    """One sample of the chosen type: frames root first, value in `PprofSamples.unit`, thread, labels."""

    frames: tuple[str, ...]
    value: int
    thread: str
    labels: dict[str, Any]


@dataclass
class PprofSamples:
    """What a profile holds of one sample type."""

    type: str
    unit: str
    time_ns: int  # the profile's `time_nanos` (0 when it has none)
    samples: list[PprofSample] = field(default_factory=list)


def inflate(data: bytes, max_bytes: int) -> bytes:
    """The bytes, gunzipped when they start as gzip does; `PayloadError` if bad or above `max_bytes`."""
    if not data.startswith(GZIP_MAGIC):
        return data
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise PayloadError(f"the profile is not valid gzip: {exc}") from None
    if len(out) > max_bytes:
        raise PayloadError(f"the inflated profile is larger than {max_bytes} bytes")
    if not inflater.eof:
        raise PayloadError("the gzipped profile is truncated")
    return out


def parse_pprof(data: bytes, max_bytes: int, want: str = "", ns_per_sample: int = 10_000_000) -> PprofSamples:
    """The samples of a pprof profile (gzipped or not) of the sample type `want` (else "cpu", else the
    first); `PayloadError` when it is not a profile or does not hold together."""
    try:
        profile = pprof_pb2.Profile.FromString(inflate(data, max_bytes))
    except (DecodeError, RecursionError) as exc:
        raise PayloadError(f"not a pprof profile: {exc}") from None
    return _Reader(profile).samples(want, ns_per_sample)


class _Reader:
    """One profile's tables, each entry checked when first used."""

    def __init__(self, profile: pprof_pb2.Profile) -> None:
        self.profile = profile
        self.locations = {location.id: location for location in profile.location}
        self.functions = {function.id: function for function in profile.function}
        self.mappings = {mapping.id: mapping for mapping in profile.mapping}
        self._frames: dict[int, list[str]] = {}  # location id -> its frames, innermost first

    def string(self, index: int, what: str) -> str:
        strings = self.profile.string_table
        if not 0 <= index < len(strings):
            raise PayloadError(
                f"pprof {what} string index {index} is outside the string table ({len(strings)})"
            )
        return strings[index]

    def samples(self, want: str, ns_per_sample: int) -> PprofSamples:
        types = [
            (self.string(t.type, "sample type"), self.string(t.unit, "sample unit"))
            for t in self.profile.sample_type
        ]
        if not types:
            raise PayloadError("the pprof profile has no sample type")
        names = [name for name, _ in types]
        pick = names.index(want) if want in names else names.index("cpu") if "cpu" in names else 0
        kind, unit = types[pick]
        factor = self._factor(unit, ns_per_sample)
        found = PprofSamples(
            type=want or ("cpu" if kind in _SAMPLE_TYPES else kind),
            unit=NANOSECONDS if factor else unit,
            time_ns=max(self.profile.time_nanos, 0),
        )
        for sample in self.profile.sample:
            if len(sample.value) != len(types):
                raise PayloadError(
                    f"a pprof sample has {len(sample.value)} values for {len(types)} sample types"
                )
            value = sample.value[pick]
            if value < 0:
                raise PayloadError(f"a pprof sample value is negative ({value})")
            if value * (factor or 1) > decode.MAX_VALUE:
                raise PayloadError(f"a pprof sample value {value} {unit} does not fit 64 bits")
            labels = self._labels(sample.label)
            thread = labels.pop(THREAD_LABEL, "")
            found.samples.append(
                PprofSample(self._stack(sample.location_id), value * (factor or 1), str(thread), labels)
            )
        return found

    def _factor(self, unit: str, ns_per_sample: int) -> int:
        """Nanoseconds per unit of the values (0 when they are not time and are kept as sent)."""
        if unit in _TIME_UNITS:
            return _TIME_UNITS[unit]
        if unit in _COUNTS:
            period_unit = self.string(self.profile.period_type.unit, "period unit")
            if period_unit in _TIME_UNITS and self.profile.period > 0:
                return self.profile.period * _TIME_UNITS[period_unit]
            return ns_per_sample
        return 0

    def _labels(self, labels: Any) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for label in labels:
            key = self.string(label.key, "label key")
            found[key] = self.string(label.str, "label value") if label.str else label.num
        return found

    def _stack(self, location_ids: Any) -> tuple[str, ...]:
        leaf_first: list[str] = []
        for location_id in location_ids:
            leaf_first.extend(self._location(location_id))
            if len(leaf_first) > decode.MAX_FRAMES:
                raise PayloadError(f"a pprof stack is deeper than {decode.MAX_FRAMES} frames")
        return tuple(reversed(leaf_first))

    def _location(self, location_id: int) -> list[str]:
        if location_id in self._frames:
            return self._frames[location_id]
        location = self.locations.get(location_id)
        if location is None or location_id == 0:
            raise PayloadError(
                f"a pprof sample names location {location_id}, which the profile does not hold"
            )
        frames = []
        for line in location.line:
            function = self.functions.get(line.function_id)
            if function is None or line.function_id == 0:
                raise PayloadError(
                    f"pprof location {location_id} names function {line.function_id}, "
                    "which the profile does not hold"
                )
            if line.line < 0:
                raise PayloadError(f"pprof location {location_id} has a negative line number ({line.line})")
            name = self.string(function.name, "function name") or self.string(
                function.system_name, "function system name"
            )
            file = self.string(function.filename, "function file name")
            frames.append(frame_label(name or "<unknown>", file, line.line))
        if not frames:
            mapping = self.mappings.get(location.mapping_id)
            file = self.string(mapping.filename, "mapping file name") if mapping else ""
            frames.append(f"0x{location.address:x} ({file})" if file else f"0x{location.address:x}")
        self._frames[location_id] = frames
        return frames
