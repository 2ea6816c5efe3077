"""Sampling policies: what each one needs of a span, and its verdict on the traces of a decision round.

A policy that looks at spans declares `SpanPredicate`s; the stage evaluates each predicate once per
incoming batch (in columns, decoding a span body only when its bytes could match) and keeps, per trace,
one bit per predicate: whether any of its spans matched. At the decision a policy reads those bits and
the trace's aggregates (span count, earliest start, latest end, id) for all the round's traces at once.

The types and their settings are the Collector's. Differences, on purpose: `rate_limiting` counts spans
per second of the traces' own time (their earliest start), not of the clock at the decision, so a burst
decided late or all at once is capped the same; `probabilistic` hashes the trace id with a 64-bit mixer
(deterministic, so every process and restart decides a trace alike).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from boutique.observatory.model import STATUS_ERROR, STATUS_OK, STATUS_UNSET
from boutique.observatory.sampling.predicates import AttributeTest, SpanPredicate, StatusIn

STATUS_CODES = {"UNSET": STATUS_UNSET, "OK": STATUS_OK, "ERROR": STATUS_ERROR}
MAX_PREDICATES = 64  # bits per trace


@dataclass
class Traces:
    """The traces of one decision round, in columns (one entry per trace)."""

    ids: list[bytes]  # 16-byte trace ids
    spans: np.ndarray  # int64: spans held of each
    min_start_us: np.ndarray  # int64: earliest span start
    max_end_us: np.ndarray  # int64: latest span end
    flags: np.ndarray  # uint64: bit b set when a span passed predicate b
    bits: Mapping[int, int]  # id(predicate) → its bit

    def matched(self, predicate: SpanPredicate) -> np.ndarray:
        """Whether any span of each trace passed the predicate."""
        bit = np.uint64(self.bits[id(predicate)])
        return ((self.flags >> bit) & np.uint64(1)).astype(bool)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: np.ndarray) -> Traces:
        """The traces at these positions."""
        return Traces(
            ids=[self.ids[i] for i in index.tolist()],
            spans=self.spans[index],
            min_start_us=self.min_start_us[index],
            max_end_us=self.max_end_us[index],
            flags=self.flags[index],
            bits=self.bits,
        )


@dataclass
class Verdict:
    """A policy's answer for each trace: keep, and (inverted matches only) a veto that drops whatever else says keep."""

    keep: np.ndarray
    veto: np.ndarray | None = None


class Policy:
    """One named policy: the predicates it needs and its verdict on a round's traces."""

    type = ""

    def __init__(self, name: str) -> None:
        self.name = name

    def predicates(self) -> list[SpanPredicate]:
        """The span tests the verdict reads (none by default)."""
        return []

    def decide(self, traces: Traces) -> Verdict:
        """Keep (and veto) per trace."""
        raise NotImplementedError


class AlwaysSample(Policy):
    """Keep every trace."""

    type = "always_sample"

    def decide(self, traces: Traces) -> Verdict:
        return Verdict(np.ones(len(traces), dtype=bool))


class StatusCode(Policy):
    """Keep traces with a span whose status is one of the listed codes (ERROR, OK, UNSET)."""

    type = "status_code"

    def __init__(self, name: str, codes: frozenset[int]) -> None:
        super().__init__(name)
        self.test = StatusIn(codes)

    def predicates(self) -> list[SpanPredicate]:
        return [self.test]

    def decide(self, traces: Traces) -> Verdict:
        return Verdict(traces.matched(self.test))


class Latency(Policy):
    """Keep traces lasting at least `threshold_ms` from their earliest start to their latest end (whole ms);
    with `upper_threshold_ms`, more than the threshold and at most the upper one (the Collector's rule)."""

    type = "latency"

    def __init__(self, name: str, threshold_ms: int, upper_threshold_ms: int) -> None:
        super().__init__(name)
        self.threshold_ms, self.upper_threshold_ms = threshold_ms, upper_threshold_ms

    def decide(self, traces: Traces) -> Verdict:
        took_ms = (traces.max_end_us - traces.min_start_us) // 1000
        if not self.upper_threshold_ms:
            return Verdict(took_ms >= self.threshold_ms)
        return Verdict((took_ms > self.threshold_ms) & (took_ms <= self.upper_threshold_ms))


class AttributeMatch(Policy):
    """Keep traces with a span or resource attribute that matches; inverted, veto those and keep the rest.

    As the Collector: an inverted policy that matches drops the trace whatever other policies say.
    """

    def __init__(self, name: str, test: AttributeTest, invert: bool) -> None:
        super().__init__(name)
        self.test, self.invert = test, invert

    def predicates(self) -> list[SpanPredicate]:
        return [self.test]

    def decide(self, traces: Traces) -> Verdict:
        matched = traces.matched(self.test)
        return Verdict(~matched, matched) if self.invert else Verdict(matched)


class StringAttribute(AttributeMatch):
    """A string value among `values` (or, with `enabled_regex_matching`, one a value finds as a regex).

    The Collector's `cache_max_size` (of regex results) is accepted and not needed here.
    """

    type = "string_attribute"


class NumericAttribute(AttributeMatch):
    """An int or double value within [min_value, max_value]."""

    type = "numeric_attribute"


class BooleanAttribute(AttributeMatch):
    """A bool value equal to `value`."""

    type = "boolean_attribute"


class SpanCount(Policy):
    """Keep traces of at least `min_spans` spans (and at most `max_spans`, when given)."""

    type = "span_count"

    def __init__(self, name: str, min_spans: int, max_spans: int) -> None:
        super().__init__(name)
        self.min_spans, self.max_spans = min_spans, max_spans

    def decide(self, traces: Traces) -> Verdict:
        keep = traces.spans >= self.min_spans
        if self.max_spans:
            keep &= traces.spans <= self.max_spans
        return Verdict(keep)


_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer over uint64s (wrapping arithmetic)."""
    x = (x ^ (x >> _S30)) * _M1
    x = (x ^ (x >> _S27)) * _M2
    return x ^ (x >> _S31)


def trace_hashes(ids: Sequence[bytes], salt: int) -> np.ndarray:
    """A 64-bit hash of each 16-byte trace id, the same in every process."""
    words = np.frombuffer(b"".join(ids), dtype="<u8").reshape(-1, 2) if ids else np.zeros((0, 2), np.uint64)
    return _mix(_mix(words[:, 0] ^ np.uint64(salt)) ^ words[:, 1])


class Probabilistic(Policy):
    """Keep `sampling_percentage` % of traces, chosen by a hash of the trace id (and `hash_salt`)."""

    type = "probabilistic"

    def __init__(self, name: str, percentage: float, salt: str) -> None:
        super().__init__(name)
        self.percentage = percentage
        self.salt = int.from_bytes(hashlib.blake2b(salt.encode(), digest_size=8).digest(), "little")
        self.threshold = np.uint64(min(int(percentage / 100 * 2.0**64), 2**64 - 1))

    def decide(self, traces: Traces) -> Verdict:
        if self.percentage >= 100:
            return Verdict(np.ones(len(traces), dtype=bool))
        return Verdict(trace_hashes(traces.ids, self.salt) < self.threshold)


class RateLimiting(Policy):
    """Keep traces while the spans kept in their second stay within `spans_per_second`.

    The second is the trace's own (its earliest span start): traces are taken in decision order and one
    that would pass the cap is not kept, so each second of trace time holds at most the cap's spans.
    """

    type = "rate_limiting"
    SECONDS_KEPT = 3600  # budgets remembered, newest seconds first

    def __init__(self, name: str, spans_per_second: int) -> None:
        super().__init__(name)
        self.spans_per_second = spans_per_second
        self.used: dict[int, int] = {}

    def decide(self, traces: Traces) -> Verdict:
        keep = np.zeros(len(traces), dtype=bool)
        used, limit = self.used, self.spans_per_second
        seconds = (traces.min_start_us // 1_000_000).tolist()
        for index, (second, count) in enumerate(zip(seconds, traces.spans.tolist(), strict=True)):
            total = used.get(second, 0) + count
            if total <= limit:
                used[second] = total
                keep[index] = True
        if len(used) > 2 * self.SECONDS_KEPT:
            newest = sorted(used)[-self.SECONDS_KEPT :]
            self.used = {second: used[second] for second in newest}
        return Verdict(keep)


class And(Policy):
    """Keep traces every sub-policy keeps (an inverted sub-policy keeps what does not match).

    Sub-policies are asked in order, each only about the traces all before it kept (so a rate limit
    after a filter spends its budget on what passed the filter), as the Collector does.
    """

    type = "and"

    def __init__(self, name: str, subs: list[Policy]) -> None:
        super().__init__(name)
        self.subs = subs

    def predicates(self) -> list[SpanPredicate]:
        return [p for sub in self.subs for p in sub.predicates()]

    def decide(self, traces: Traces) -> Verdict:
        keep = np.ones(len(traces), dtype=bool)
        for sub in self.subs:
            index = np.flatnonzero(keep)
            if not len(index):
                break
            keep[index] = sub.decide(traces.subset(index)).keep
        return Verdict(keep)


# ---- building from config entries ------------------------------------------------------------------


def _settings(entry: Mapping[str, Any], kind: str, allowed: set[str], where: str) -> Mapping[str, Any]:
    settings = entry.get(kind)
    if settings is None:
        settings = {}
    if not isinstance(settings, Mapping):
        raise ValueError(f"{where}: {kind} must be a mapping of its settings")
    unknown = sorted(set(map(str, settings)) - allowed)
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise ValueError(f"{where}: unknown {kind} setting {unknown[0]!r} (known: {known})")
    return settings


def _number(settings: Mapping[str, Any], key: str, where: str, default: float | None = None) -> float:
    value = settings.get(key, default)
    if value is None:
        raise ValueError(f"{where}: {key} is required")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: {key} must be a number, not {value!r}")
    return value


def _whole(settings: Mapping[str, Any], key: str, where: str, default: int | None = None) -> int:
    value = _number(settings, key, where, default)
    if value != int(value) or value < 0:
        raise ValueError(f"{where}: {key} must be a whole number of at least 0, not {value!r}")
    return int(value)


def _flag(settings: Mapping[str, Any], key: str, where: str) -> bool:
    value = settings.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"{where}: {key} must be true or false, not {value!r}")
    return value


def _key(settings: Mapping[str, Any], where: str) -> str:
    key = settings.get("key")
    if not isinstance(key, str) or not key:
        raise ValueError(f"{where}: key must be a non-empty string")
    return key


def _string_attribute(name: str, settings: Mapping[str, Any], where: str) -> Policy:
    key = _key(settings, where)
    values = settings.get("values")
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise ValueError(f"{where}: values must be a non-empty list of strings")
    if _flag(settings, "enabled_regex_matching", where):
        try:
            patterns = [re.compile(v) for v in values]
        except re.error as exc:
            raise ValueError(f"{where}: invalid regular expression: {exc}") from None

        def test(value: Any) -> bool:
            return isinstance(value, str) and any(p.search(value) for p in patterns)

        matcher = AttributeTest(key, test)
    else:
        wanted = frozenset(values)

        def test(value: Any) -> bool:
            return isinstance(value, str) and value in wanted

        matcher = AttributeTest(key, test, sorted(wanted))
    return StringAttribute(name, matcher, _flag(settings, "invert_match", where))


def _numeric_attribute(name: str, settings: Mapping[str, Any], where: str) -> Policy:
    key = _key(settings, where)
    low, high = _number(settings, "min_value", where), _number(settings, "max_value", where)
    if low > high:
        raise ValueError(f"{where}: min_value {low} is above max_value {high}")

    def test(value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high

    return NumericAttribute(name, AttributeTest(key, test), _flag(settings, "invert_match", where))


def _boolean_attribute(name: str, settings: Mapping[str, Any], where: str) -> Policy:
    key = _key(settings, where)
    wanted = settings.get("value")
    if not isinstance(wanted, bool):
        raise ValueError(f"{where}: value must be true or false, not {wanted!r}")

    def test(value: Any) -> bool:
        return isinstance(value, bool) and value == wanted

    return BooleanAttribute(name, AttributeTest(key, test, [wanted]), _flag(settings, "invert_match", where))


def _status_code(name: str, settings: Mapping[str, Any], where: str) -> Policy:
    codes = settings.get("status_codes")
    if not isinstance(codes, list) or not codes:
        raise ValueError(f"{where}: status_codes must be a non-empty list of ERROR, OK, UNSET")
    unknown = [c for c in codes if not isinstance(c, str) or c.upper() not in STATUS_CODES]
    if unknown:
        raise ValueError(f"{where}: unknown status code {unknown[0]!r} (known: ERROR, OK, UNSET)")
    return StatusCode(name, frozenset(STATUS_CODES[c.upper()] for c in codes))


def _latency(name: str, settings: Mapping[str, Any], where: str) -> Policy:
    threshold = _whole(settings, "threshold_ms", where)
    upper = _whole(settings, "upper_threshold_ms", where, 0)
    if upper and upper < threshold:
        raise ValueError(f"{where}: upper_threshold_ms {upper} is below threshold_ms {threshold}")
    return Latency(name, threshold, upper)


def _probabilistic(name: str, settings: Mapping[str, Any], where: str) -> Policy:
    percentage = _number(settings, "sampling_percentage", where)
    if not 0 <= percentage <= 100:
        raise ValueError(f"{where}: sampling_percentage must be between 0 and 100, not {percentage!r}")
    salt = settings.get("hash_salt", "")
    if not isinstance(salt, str):
        raise ValueError(f"{where}: hash_salt must be a string")
    return Probabilistic(name, percentage, salt)


def _rate_limiting(name: str, settings: Mapping[str, Any], where: str) -> Policy:
    limit = _whole(settings, "spans_per_second", where)
    if limit < 1:
        raise ValueError(f"{where}: spans_per_second must be at least 1")
    return RateLimiting(name, limit)


def _span_count(name: str, settings: Mapping[str, Any], where: str) -> Policy:
    low, high = _whole(settings, "min_spans", where), _whole(settings, "max_spans", where, 0)
    if high and high < low:
        raise ValueError(f"{where}: max_spans {high} is below min_spans {low}")
    return SpanCount(name, low, high)


def _and(name: str, settings: Mapping[str, Any], where: str) -> Policy:
    subs = settings.get("and_sub_policy")
    if not isinstance(subs, list) or not subs:
        raise ValueError(f"{where}: and_sub_policy must be a non-empty list of policies")
    return And(name, [build(sub, f"{where}.and_sub_policy[{i}]", nested=True) for i, sub in enumerate(subs)])


_BUILDERS: dict[str, tuple[set[str], Callable[[str, Mapping[str, Any], str], Policy]]] = {
    "always_sample": (set(), lambda name, settings, where: AlwaysSample(name)),
    "status_code": ({"status_codes"}, _status_code),
    "latency": ({"threshold_ms", "upper_threshold_ms"}, _latency),
    "string_attribute": (
        {"key", "values", "enabled_regex_matching", "cache_max_size", "invert_match"},
        _string_attribute,
    ),
    "numeric_attribute": ({"key", "min_value", "max_value", "invert_match"}, _numeric_attribute),
    "boolean_attribute": ({"key", "value", "invert_match"}, _boolean_attribute),
    "probabilistic": ({"sampling_percentage", "hash_salt"}, _probabilistic),
    "rate_limiting": ({"spans_per_second"}, _rate_limiting),
    "span_count": ({"min_spans", "max_spans"}, _span_count),
    "and": ({"and_sub_policy"}, _and),
}
TYPES = tuple(_BUILDERS)


def build(entry: Any, where: str, nested: bool = False) -> Policy:
    """The policy of one config entry `{name, type, <type>: {...}}`; `ValueError` saying what is wrong."""
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: a policy is a mapping of name, type and its settings")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: every policy needs a name")
    where = f"{where} ({name})"
    kind = entry.get("type")
    if kind not in _BUILDERS or (nested and kind == "and"):
        supported = ", ".join(t for t in TYPES if not (nested and t == "and"))
        raise ValueError(f"{where}: unsupported policy type {kind!r} (supported: {supported})")
    extra = sorted(set(map(str, entry)) - {"name", "type", kind})
    if extra:
        raise ValueError(f"{where}: unexpected {extra[0]!r} beside name, type and {kind}")
    allowed, make = _BUILDERS[kind]
    return make(name, _settings(entry, kind, allowed, where), where)


def check_names(built: Sequence[Policy]) -> None:
    """Policy names must differ (the counts are kept by name)."""
    seen: set[str] = set()
    for policy in built:
        if policy.name in seen:
            raise ValueError(f"two policies are named {policy.name!r}: names must differ")
        seen.add(policy.name)


def predicate_bits(built: Sequence[Policy]) -> tuple[list[SpanPredicate], dict[int, int]]:
    """Every predicate the policies need, and the bit each is kept in."""
    found: list[SpanPredicate] = []
    for policy in built:
        for predicate in policy.predicates():
            if all(predicate is not p for p in found):
                found.append(predicate)
    if len(found) > MAX_PREDICATES:
        raise ValueError(f"at most {MAX_PREDICATES} attribute and status tests, not {len(found)}")
    return found, {id(p): bit for bit, p in enumerate(found)}
