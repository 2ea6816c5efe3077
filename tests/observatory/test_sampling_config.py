"""Tail-sampling settings: the Collector's config shape and the flags are read; every mistake is one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from boutique.observatory.sampling.config import SamplingFlags, from_options, load, parse, parse_duration

VALID_YAML = """
processors:
  batch: {}
  tail_sampling:
    decision_wait: 1m30s
    num_traces: 2000
    expected_new_traces_per_sec: 10
    decision_cache: {sampled_cache_size: 500, non_sampled_cache_size: 0}
    policies:
      [
        {name: errors, type: status_code, status_code: {status_codes: [ERROR]}},
        {name: slow, type: latency, latency: {threshold_ms: 5000}},
        {name: ten, type: probabilistic, probabilistic: {sampling_percentage: 10, hash_salt: abc}},
        {name: cap, type: rate_limiting, rate_limiting: {spans_per_second: 35}},
        {name: key, type: numeric_attribute, numeric_attribute: {key: key1, min_value: 50, max_value: 100}},
        {name: both, type: and, and: {and_sub_policy: [
          {name: svc, type: string_attribute, string_attribute: {key: service.name, values: [a, b]}},
          {name: many, type: span_count, span_count: {min_spans: 2, max_spans: 10}}]}},
      ]
"""


def test_a_collector_config_is_read_with_its_defaults_and_durations(tmp_path: Path) -> None:
    path = tmp_path / "collector.yaml"
    path.write_text(VALID_YAML)
    config = load(path)
    assert config.decision_wait == 90.0
    assert (config.num_traces, config.expected_new_traces_per_sec) == (2000, 10)
    assert (config.sampled_cache_size, config.non_sampled_cache_size) == (500, 0)
    assert [p.type for p in config.build()] == [
        "status_code",
        "latency",
        "probabilistic",
        "rate_limiting",
        "numeric_attribute",
        "and",
    ]
    bare = parse({"policies": [{"name": "all", "type": "always_sample"}]})
    assert (bare.decision_wait, bare.num_traces) == (10.0, 50_000)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10.0), ("1m30s", 90.0), ("250ms", 0.25), ("1.5h", 5400.0), ("2", 2.0), ("500us", 0.0005)],
)
def test_durations_are_go_durations_or_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "policies must be a non-empty list"),
        ({"policies": [], "decision_wait": "1s"}, "policies must be a non-empty list"),
        (
            {"policies": [{"name": "a", "type": "always_sample"}], "decision_wait": "soon"},
            "decision_wait: not a duration",
        ),
        (
            {"policies": [{"name": "a", "type": "always_sample"}], "num_traces": 0},
            "num_traces must be a whole number",
        ),
        ({"policies": [{"name": "a", "type": "always_sample"}], "bogus": 1}, "unknown setting 'bogus'"),
        ({"policies": [{"type": "always_sample"}]}, "policies[0]: every policy needs a name"),
        (
            {"policies": [{"name": "x", "type": "composite"}]},
            "policies[0] (x): unsupported policy type 'composite'",
        ),
        ({"policies": [{"name": "x", "type": "latency"}]}, "policies[0] (x): threshold_ms is required"),
        (
            {"policies": [{"name": "x", "type": "latency", "latency": {"threshold_ms": "slow"}}]},
            "threshold_ms must be a number",
        ),
        (
            {"policies": [{"name": "x", "type": "latency", "latency": {"treshold_ms": 5}}]},
            "unknown latency setting 'treshold_ms'",
        ),
        (
            {"policies": [{"name": "x", "type": "status_code", "status_code": {"status_codes": ["FAILED"]}}]},
            "unknown status code 'FAILED'",
        ),
        (
            {
                "policies": [
                    {"name": "x", "type": "probabilistic", "probabilistic": {"sampling_percentage": 150}}
                ]
            },
            "sampling_percentage must be between 0 and 100",
        ),
        (
            {
                "policies": [
                    {
                        "name": "x",
                        "type": "string_attribute",
                        "string_attribute": {"key": "k", "values": ["("], "enabled_regex_matching": True},
                    }
                ]
            },
            "invalid regular expression",
        ),
        (
            {"policies": [{"name": "a", "type": "always_sample"}, {"name": "a", "type": "always_sample"}]},
            "two policies are named 'a'",
        ),
        (
            {
                "policies": [
                    {"name": "x", "type": "and", "and": {"and_sub_policy": [{"name": "y", "type": "and"}]}}
                ]
            },
            "and_sub_policy[0] (y): unsupported policy type 'and'",
        ),
    ],
)
def test_each_mistake_is_named(data: object, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse(data, "f.yaml")
    text = str(raised.value)
    assert text.startswith("tail sampling config f.yaml: ") and message in text, text
    assert "\n" not in text


def test_flags_add_policies_to_a_file_and_set_the_wait(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"decision_wait": "30s", "policies": [{"name": "all", "type": "always_sample"}]}')
    flags = SamplingFlags(
        errors=True,
        slower_than="500ms",
        percent=12.5,
        spans_per_second=100,
        attributes=("service.name=checkoutservice",),
        decision_wait="2s",
    )
    config = from_options(path, flags)
    assert config is not None and config.decision_wait == 2.0
    assert [(p["name"], p["type"]) for p in config.policies] == [
        ("all", "always_sample"),
        ("errors", "status_code"),
        ("slower-than-500ms", "latency"),
        ("12.5-percent", "probabilistic"),
        ("100-spans-per-second", "rate_limiting"),
        ("service.name=checkoutservice", "string_attribute"),
    ]
    assert config.policies[2]["latency"] == {"threshold_ms": 500}
    assert from_options(None, SamplingFlags()) is None


def run_observatory(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`boutique observatory` with these arguments on free ports, to its exit (it must not start)."""
    command = [sys.executable, "-m", "boutique.cli", "observatory", "--data-dir", str(tmp_path / "data")]
    command += ["--port", "0", "--otlp-grpc-port", "0", "--otlp-http-port", "0", "--zipkin-port", "0", *args]
    env = {k: v for k, v in os.environ.items() if k != "BOUTIQUE_TAIL_SAMPLING"}
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)


def test_config_errors_stop_the_observatory_with_one_clear_line(tmp_path: Path) -> None:
    broken_yaml = tmp_path / "broken.yaml"
    broken_yaml.write_text("policies: [ {name: a, type: always_sample\n")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("decision_wait: 5s\npolicies: [{name: tail, type: ottl_condition}]\n")
    cases = {
        ("--tail-sampling", str(tmp_path / "missing.yaml")): "missing.yaml: No such file or directory",
        ("--tail-sampling", str(broken_yaml)): "broken.yaml: not valid YAML (line",
        ("--tail-sampling", str(unknown)): "policies[0] (tail): unsupported policy type 'ottl_condition'",
        ("--sample-percent", "150"): "sampling_percentage must be between 0 and 100",
        ("--sample-slower-than", "fast"): "--sample-slower-than: not a duration: 'fast'",
        ("--sample-attribute", "service.name"): "--sample-attribute: expected KEY=VALUE",
        ("--sample-decision-wait", "5s"): "--sample-decision-wait needs --tail-sampling or a --sample-*",
    }
    for args, message in cases.items():
        done = run_observatory(tmp_path, *args)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2, (args, done.stderr)
        assert len(lines) == 1 and lines[0].startswith("boutique observatory: ") and message in lines[0], (
            lines
        )
    assert not (tmp_path / "data" / "observatory.duckdb.sampling").exists()
