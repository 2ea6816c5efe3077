"""Links into the observatory's pages: the trace search of a window, one trace, a service, the Mesh page,
a profile."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

from boutique.run.scenarios.search import Search


def search_url(base: str, search: Search, start_us: int, end_us: int) -> str:
    """The search page finding `search`'s traces between start and end (µs), as the page's form would."""
    params: dict[str, Any] = {"service": search.service}
    if search.tags:
        params["tags"] = json.dumps(dict(search.tags), separators=(",", ":"))
    if search.errors:
        params["errors"] = "true"
    if search.min_duration:
        params["minDuration"] = search.min_duration
    params |= {"start": start_us, "end": end_us, "limit": 50}
    return f"{base}/search?{urlencode(params)}"


def trace_url(base: str, trace_id: str) -> str:
    """One trace's page."""
    return f"{base}/trace/{trace_id}"


def service_url(base: str, service: str) -> str:
    """One service's RED charts over the last 15 minutes."""
    return f"{base}/services/{quote(service)}?lookback=15m"


def mesh_url(base: str) -> str:
    """The Mesh page: instances, balancers and breakers, live."""
    return f"{base}/mesh"


def profile_url(base: str, service: str, kind: str, start_us: int, end_us: int) -> str:
    """The Profiles page: `service`'s `kind` flame graph (cpu, wall, tasks) between start and end (µs)."""
    return (
        f"{base}/profiles?{urlencode({'service': service, 'type': kind, 'start': start_us, 'end': end_us})}"
    )
