"""Times as the UI pages show them: the lookbacks they offer, how long ago something was, UTC text."""

from __future__ import annotations

import time
from datetime import UTC, datetime

MINUTE_US = 60_000_000
DEFAULT_LOOKBACK = "1h"
# Every lookback a page offers, shortest first: its length in µs, and its label.
LOOKBACKS = {
    "5m": 5 * MINUTE_US,
    "15m": 15 * MINUTE_US,
    "1h": 60 * MINUTE_US,
    "6h": 360 * MINUTE_US,
    "24h": 1440 * MINUTE_US,
}
LOOKBACK_LABELS = {
    "5m": "Last 5 minutes",
    "15m": "Last 15 minutes",
    "1h": "Last hour",
    "6h": "Last 6 hours",
    "24h": "Last 24 hours",
}


def now_us() -> int:
    """The current time in Unix microseconds."""
    return time.time_ns() // 1000


def ago(delta_us: int) -> str:
    """How long ago a moment `delta_us` before now was, roughly: `just now`, `42s ago`, `3m ago`, `2d ago`."""
    seconds = delta_us // 1_000_000
    if seconds < 1:
        return "just now"
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def utc_text(timestamp_us: int) -> str:
    """µs as a UTC time to the millisecond, for reading."""
    moment = datetime.fromtimestamp(timestamp_us // 1_000_000, UTC)
    return f"{moment:%Y-%m-%d %H:%M:%S}.{timestamp_us % 1_000_000 // 1000:03d} UTC"
