"""Tail-sampling settings: a YAML or JSON file in the shape of the Collector's `tail_sampling` processor, or flags.

The file holds the processor's block (`decision_wait`, `num_traces`, `expected_new_traces_per_sec`,
`decision_cache`, `policies`), either at the top level, under `tail_sampling:`, or under
`processors: tail_sampling:` as in a Collector configuration. Durations are Go's (`10s`, `1m30s`,
`500ms`) or a number of seconds. Every mistake is a `ValueError` with one line saying where and what.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from boutique.observatory.sampling import policies as policy_types

DEFAULT_DECISION_WAIT = 10.0  # seconds: two of the SDK batch processor's 5 s export delays
DEFAULT_NUM_TRACES = 50_000
DEFAULT_CACHE_SIZE = 100_000
_TOP_KEYS = {"decision_wait", "num_traces", "expected_new_traces_per_sec", "decision_cache", "policies"}
_CACHE_KEYS = {"sampled_cache_size", "non_sampled_cache_size"}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(value: Any) -> float:
    """Seconds of a Go duration (`10s`, `1m30s`, `250ms`) or of a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r} (try 10s or 500ms)")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(f"not a duration: {value!r} (try 10s or 500ms)") from None
            seconds = sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {value!r}")
    return seconds


@dataclass(frozen=True)
class SamplingConfig:
    """What the tail-sampling stage is told: the wait, the memory bound, the decision cache and the policies.

    `policies` are the validated policy entries (`{name, type, <type>: {...}}` mappings); the stage builds
    its evaluators from them, so one config can start several stages, each with its own rate budgets.
    """

    policies: tuple[Mapping[str, Any], ...]
    decision_wait: float = DEFAULT_DECISION_WAIT
    num_traces: int = DEFAULT_NUM_TRACES
    expected_new_traces_per_sec: int = 0
    sampled_cache_size: int = DEFAULT_CACHE_SIZE
    non_sampled_cache_size: int = DEFAULT_CACHE_SIZE
    source: str = field(default="flags", compare=False)  # the file it came from, for messages

    def build(self) -> list[policy_types.Policy]:
        """Fresh evaluators of the policies (rate budgets start empty); `ValueError` if they cannot work."""
        built = [policy_types.build(entry, f"policies[{i}]") for i, entry in enumerate(self.policies)]
        policy_types.check_names(built)
        policy_types.predicate_bits(built)
        return built

    def describe(self) -> list[dict[str, str]]:
        """Each policy's name and type (what /api/sampling lists)."""
        return [{"name": str(p["name"]), "type": str(p["type"])} for p in self.policies]


def _count(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{where} must be a whole number of at least {minimum}, not {value!r}")
    return value


def parse(data: Any, source: str = "flags") -> SamplingConfig:
    """A config from the processor's block (already loaded from YAML or JSON); `ValueError` names the mistake."""
    try:
        return _parse(_unwrap(data), source)
    except ValueError as exc:
        raise ValueError(f"tail sampling config {source}: {exc}") from None


def _unwrap(data: Any) -> Any:
    """The `tail_sampling` block of a whole Collector config, or of a file holding only that block."""
    if isinstance(data, Mapping) and isinstance(data.get("processors"), Mapping):
        data = data["processors"]
    if isinstance(data, Mapping) and not (_TOP_KEYS & set(data)):
        named = [key for key in data if str(key).split("/", 1)[0] == "tail_sampling"]
        if len(named) == 1:
            return data[named[0]]
        if len(named) > 1:
            raise ValueError(f"several tail_sampling blocks ({', '.join(map(str, named))}): keep one")
    return data


def _parse(data: Any, source: str) -> SamplingConfig:
    if not isinstance(data, Mapping):
        raise ValueError(
            f"expected a mapping with decision_wait, num_traces and policies, not {type(data).__name__}"
        )
    unknown = sorted(set(map(str, data)) - _TOP_KEYS)
    if unknown:
        raise ValueError(f"unknown setting {unknown[0]!r} (known: {', '.join(sorted(_TOP_KEYS))})")
    entries = data.get("policies")
    if not isinstance(entries, Sequence) or isinstance(entries, str) or not entries:
        raise ValueError("policies must be a non-empty list of {name, type, <type>: {...}}")
    config = SamplingConfig(policies=tuple(entries), source=source)
    if "decision_wait" in data:
        try:
            config = replace(config, decision_wait=parse_duration(data["decision_wait"]))
        except ValueError as exc:
            raise ValueError(f"decision_wait: {exc}") from None
    if "num_traces" in data:
        config = replace(config, num_traces=_count(data["num_traces"], "num_traces", 1))
    if "expected_new_traces_per_sec" in data:
        expected = _count(data["expected_new_traces_per_sec"], "expected_new_traces_per_sec", 0)
        config = replace(config, expected_new_traces_per_sec=expected)
    cache = data.get("decision_cache") or {}
    if not isinstance(cache, Mapping) or set(map(str, cache)) - _CACHE_KEYS:
        raise ValueError(f"decision_cache takes {' and '.join(sorted(_CACHE_KEYS))}")
    if "sampled_cache_size" in cache:
        size = _count(cache["sampled_cache_size"], "decision_cache.sampled_cache_size", 0)
        config = replace(config, sampled_cache_size=size)
    if "non_sampled_cache_size" in cache:
        size = _count(cache["non_sampled_cache_size"], "decision_cache.non_sampled_cache_size", 0)
        config = replace(config, non_sampled_cache_size=size)
    config.build()  # every policy is checked now, not at the first decision
    return config


def load(path: Path) -> SamplingConfig:
    """The config in a YAML or JSON file (by its suffix; YAML otherwise)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"tail sampling config {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"tail sampling config {path}: not UTF-8 text") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"tail sampling config {path}: not valid JSON: {exc}") from None
    else:
        try:
            import yaml
        except ImportError:
            raise ValueError(
                f"tail sampling config {path}: reading YAML needs PyYAML (pip install pyyaml); or write it as .json"
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            line = f" (line {where.line + 1})" if where is not None else ""
            raise ValueError(
                f"tail sampling config {path}: not valid YAML{line}: {_first_line(exc)}"
            ) from None
    return parse(data, str(path))


def _first_line(exc: Exception) -> str:
    problem = getattr(exc, "problem", None)
    return str(problem or exc).strip().splitlines()[0]


@dataclass(frozen=True)
class SamplingFlags:
    """The command line's shortcuts for the common policies (each given one adds a policy)."""

    errors: bool = False
    slower_than: str | None = None  # a duration: keep traces at least this long
    percent: float | None = None  # keep this share of traces, by trace id
    spans_per_second: int | None = None  # keep traces up to this many spans per second
    attributes: tuple[str, ...] = ()  # KEY=VALUE: keep traces with a span or resource attribute of that value
    decision_wait: str | None = None

    def given(self) -> bool:
        """Whether any flag asks for tail sampling."""
        return bool(
            self.errors
            or self.slower_than is not None
            or self.percent is not None
            or self.spans_per_second is not None
            or self.attributes
        )

    def policies(self) -> list[dict[str, Any]]:
        """The policy entries these flags stand for."""
        out: list[dict[str, Any]] = []
        if self.errors:
            out.append({"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}})
        if self.slower_than is not None:
            try:
                threshold = parse_duration(self.slower_than) * 1000
            except ValueError as exc:
                raise ValueError(f"--sample-slower-than: {exc}") from None
            out.append(
                {
                    "name": f"slower-than-{self.slower_than}",
                    "type": "latency",
                    "latency": {"threshold_ms": round(threshold)},
                }
            )
        if self.percent is not None:
            out.append(
                {
                    "name": f"{self.percent:g}-percent",
                    "type": "probabilistic",
                    "probabilistic": {"sampling_percentage": self.percent},
                }
            )
        if self.spans_per_second is not None:
            out.append(
                {
                    "name": f"{self.spans_per_second}-spans-per-second",
                    "type": "rate_limiting",
                    "rate_limiting": {"spans_per_second": self.spans_per_second},
                }
            )
        for pair in self.attributes:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise ValueError(f"--sample-attribute: expected KEY=VALUE, got {pair!r}")
            out.append(
                {
                    "name": pair,
                    "type": "string_attribute",
                    "string_attribute": {"key": key, "values": [value]},
                }
            )
        return out


def from_options(path: Path | None, flags: SamplingFlags) -> SamplingConfig | None:
    """The config of `--tail-sampling FILE` and the flags (their policies added to the file's); None if off."""
    if path is None and not flags.given():
        if flags.decision_wait is not None:
            raise ValueError("--sample-decision-wait needs --tail-sampling or a --sample-* policy flag")
        return None
    config = load(path) if path is not None else None
    added = flags.policies()
    if config is None:
        config = parse({"policies": added}, "flags")
    elif added:
        config = replace(config, policies=(*config.policies, *added))
        config.build()
    if flags.decision_wait is not None:
        try:
            config = replace(config, decision_wait=parse_duration(flags.decision_wait))
        except ValueError as exc:
            raise ValueError(f"--sample-decision-wait: {exc}") from None
    return config
