"""What the flag tests share: switching flags in a running `up` and asking its observatory for the evidence."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from boutique.flags import Change, FlagFile
from tests.e2e.harness import Up


def flag_file(up: Up) -> FlagFile:
    """The flag file every process of this `up` evaluates."""
    return FlagFile(up.data_dir / "flags.json")


def set_flag(up: Up, name: str, variant: str, **targeting: Any) -> Change:
    """Set a flag the way `boutique flags set` does (targeting: when={...}, percent=...)."""
    return flag_file(up).set(name, variant, by="test", **targeting)


def reset_flags(up: Up) -> None:
    """Every flag back as shipped."""
    flag_file(up).reset(by="test")


def observatory(up: Up) -> str:
    """The observatory's query API and UI base URL."""
    url = up.state()["observatory_url"]
    assert url, "this up runs no observatory"
    return str(url)


def now_us() -> int:
    """Now in microseconds, the unit of the Jaeger API's start/end."""
    return int(time.time() * 1_000_000)


def traces(
    up: Up, service: str, tags: dict[str, str] | None = None, since_us: int = 0, limit: int = 50
) -> list[dict]:
    """Traces through `service` since `since_us` whose spans match `tags` (Jaeger API /api/traces)."""
    params: dict[str, Any] = {"service": service, "limit": limit, "lookback": "1h"}
    if tags:
        params["tags"] = json.dumps(tags)
    if since_us:
        params["start"], params["end"] = since_us, now_us() + 1_000_000
    answer = httpx.get(f"{observatory(up)}/api/traces", params=params, timeout=10)
    answer.raise_for_status()
    return list(answer.json()["data"])


def spans_of(trace: dict, service: str) -> list[dict]:
    """The spans of one Jaeger-JSON trace that `service` made."""
    processes = {key: process["serviceName"] for key, process in trace["processes"].items()}
    return [span for span in trace["spans"] if processes[span["processID"]] == service]


def tag(span: dict, key: str) -> Any:
    """A span tag's value (None when absent)."""
    return next((t["value"] for t in span.get("tags", []) if t["key"] == key), None)


def flagged_spans(up: Up, service: str, flag: str, since_us: int = 0) -> list[dict]:
    """Spans of `service` that recorded an evaluation of `flag` that changed behaviour."""
    found = []
    for trace in traces(up, service, {"feature_flag.key": flag}, since_us):
        found += [s for s in spans_of(trace, service) if tag(s, "feature_flag.key") == flag]
    return found


def mesh_status(up: Up) -> dict:
    """The observatory's view of every instance's mesh status (breakers, instances)."""
    answer = httpx.get(f"{observatory(up)}/api/mesh", timeout=10)
    answer.raise_for_status()
    return dict(answer.json())
