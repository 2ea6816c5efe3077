"""Durations as people write them ('250ms', '1.5s', '2m'), free of heavy imports for any process to use."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Parse '250ms', '1.5s', '2m' or a bare number of seconds into seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 200ms, 1.5s, 2m)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
