"""What a scenario reads back: the observatory's query API, and what the mesh and the shop showed meanwhile.

The trace search and the RED figures are asked of the observatory after the fact (spans arrive a few
seconds late). Breakers, instances and process memory are a moving picture, so `MeshTimeline` follows
the observatory's `/api/mesh/stream` for the whole run and keeps every snapshot; `LimiterWatch` keeps
the frontend's concurrency limiter figures from its status endpoint (the Mesh snapshot does not carry
them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from boutique.run.scenarios.search import Search
from boutique.run.scenarios.shoppers import Tally
from boutique.run.scenarios.target import Target

OPEN_STATES = ("OPEN", "HALF_OPEN", "FORCED_OPEN")


def now_us() -> int:
    """Now in Unix microseconds (the unit of the trace API's start and end)."""
    return time.time_ns() // 1000


# ---- Jaeger-JSON traces ------------------------------------------------------------------------


def tag(span: dict[str, Any], key: str) -> Any:
    """A span tag's value (None when absent)."""
    return next((t["value"] for t in span.get("tags", []) if t["key"] == key), None)


def spans_of(trace: dict[str, Any], service: str | None = None) -> list[dict[str, Any]]:
    """The spans of a trace (only those `service` made, when given), each with its `service` added."""
    processes = trace.get("processes", {})
    found = []
    for span in trace.get("spans", []):
        process = processes.get(span.get("processID"), {})
        name = process.get("serviceName", "")
        if service is None or name == service:
            instance = next(
                (t["value"] for t in process.get("tags", []) if t["key"] == "service.instance.id"), ""
            )
            found.append({**span, "service": name, "instance": instance})
    return found


def is_error(span: dict[str, Any]) -> bool:
    """True for a span that ended in error."""
    return tag(span, "error") is True or tag(span, "otel.status_code") == "ERROR"


# ---- the observatory's query API ---------------------------------------------------------------


@dataclass
class Observatory:
    """The query API of the observatory that receives the shop's spans."""

    base_url: str
    client: httpx.AsyncClient

    async def traces(
        self,
        service: str,
        tags: Mapping[str, str | int | bool] | None = None,
        start_us: int = 0,
        end_us: int = 0,
        errors: bool = False,
        min_duration: str = "",
        limit: int = 20,
        instance: str = "",
    ) -> list[dict[str, Any]]:
        """Traces through `service` in the window with a span matching `tags` (Jaeger `/api/traces`)."""
        params: dict[str, Any] = {"service": service, "limit": limit, "lookback": "1h"}
        if tags:
            params["tags"] = json.dumps(dict(tags))
        if start_us:
            params["start"], params["end"] = start_us, end_us or now_us() + 1_000_000
        if errors:
            params["errors"] = "true"
        if min_duration:
            params["minDuration"] = min_duration
        if instance:
            params["instance"] = instance
        answer = await self.client.get(f"{self.base_url}/api/traces", params=params)
        answer.raise_for_status()
        return list(answer.json()["data"])

    async def find(self, search: Search, start_us: int, end_us: int, limit: int = 20) -> list[dict[str, Any]]:
        """The traces one `Search` finds in the window."""
        return await self.traces(
            search.service, search.tags, start_us, end_us, search.errors, search.min_duration, limit
        )

    async def red(
        self, metric: str, service: str, start_us: int, end_us: int, quantile: float | None = None
    ) -> list[float]:
        """One RED figure of a service's server spans, per second over the window (Jaeger metrics API)."""
        params: dict[str, Any] = {
            "service": service,
            "endTs": end_us // 1000,
            "lookback": max(1000, (end_us - start_us) // 1000),
            "step": 1000,
            "ratePer": 5000,
        }
        if quantile is not None:
            params["quantile"] = quantile
        answer = await self.client.get(f"{self.base_url}/api/metrics/{metric}", params=params)
        answer.raise_for_status()
        return [
            float(point["gaugeValue"]["doubleValue"])
            for series in answer.json()["metrics"]
            for point in series["metricPoints"]
        ]

    async def profile_share(
        self, service: str, function: str, kind: str, start_us: int, end_us: int
    ) -> tuple[float, str]:
        """The largest share (0-1) of `service`'s `kind` profile in the window spent in a function whose
        name contains `function` (its total, callees included), and that function's name ("" if none)."""
        params: dict[str, Any] = {"service": service, "type": kind, "start": start_us, "end": end_us}
        whole = await self.client.get(f"{self.base_url}/api/profiles", params=params)
        whole.raise_for_status()
        total = int(whole.json()["data"]["total"])
        answer = await self.client.get(f"{self.base_url}/api/profiles/top", params={**params, "limit": 500})
        answer.raise_for_status()
        matching = [entry for entry in answer.json()["data"] if function in str(entry["name"])]
        if not total or not matching:
            return 0.0, ""
        best = max(matching, key=lambda entry: int(entry["total"]))
        return int(best["total"]) / total, str(best["name"])


# ---- the Mesh page's stream --------------------------------------------------------------------


@dataclass
class MeshTimeline:
    """Every snapshot of the observatory's Mesh stream since `start()`, with when it arrived."""

    base_url: str
    client: httpx.AsyncClient
    snapshots: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    error: str = ""
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Follow the stream in the background until `stop()`."""
        self._task = asyncio.create_task(self._follow(), name="mesh timeline")

    async def stop(self) -> None:
        """Stop following."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self) -> None:
        timeout = httpx.Timeout(5.0, read=30.0)
        while True:
            try:
                async with self.client.stream(
                    "GET", f"{self.base_url}/api/mesh/stream", timeout=timeout
                ) as answer:
                    if answer.status_code != 200:
                        raise httpx.HTTPStatusError(
                            f"HTTP {answer.status_code}", request=answer.request, response=answer
                        )
                    async for line in answer.aiter_lines():
                        if line.startswith("data: "):
                            with contextlib.suppress(ValueError):
                                self.snapshots.append((time.time(), json.loads(line[6:])))
            except httpx.HTTPError as exc:
                self.error = str(exc) or type(exc).__name__
            await asyncio.sleep(1.0)

    def dependencies(self, caller: str, dependency: str) -> Iterator[tuple[float, str, dict[str, Any]]]:
        """(time, process key, dependency entry) of `caller`'s processes for `dependency`, oldest first."""
        for at, snapshot in self.snapshots:
            for process in snapshot.get("processes", []):
                if process.get("service") != caller:
                    continue
                for entry in process.get("dependencies", []):
                    if entry.get("name") == dependency:
                        yield at, str(process.get("key", "")), entry

    def breaker_states(self, caller: str, dependency: str) -> list[tuple[float, str]]:
        """(time, state) of the breakers `caller` keeps for `dependency`, oldest first."""
        return [
            (at, str((entry.get("breaker") or {}).get("state", "")))
            for at, _, entry in self.dependencies(caller, dependency)
            if entry.get("breaker")
        ]

    def processes(self, service: str) -> Iterator[tuple[float, dict[str, Any]]]:
        """(time, process entry) of every process of `service`, oldest first."""
        for at, snapshot in self.snapshots:
            for process in snapshot.get("processes", []):
                if process.get("service") == service:
                    yield at, process


def memory_bytes(process: dict[str, Any]) -> float | None:
    """A process's resident memory (bytes) as its Mesh entry reports it; None when it does not say."""
    value = process.get("rss_bytes")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# ---- the frontend's concurrency limiter ---------------------------------------------------------


@dataclass
class LimiterWatch:
    """The `http` limiter of every frontend instance (its `/mesh/status`), read once a second."""

    target: Target
    client: httpx.AsyncClient
    samples: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Poll in the background until `stop()`."""
        self._task = asyncio.create_task(self._poll(), name="limiter watch")

    async def stop(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        while True:
            for process in self.target.instances("frontend"):
                if not process.metrics:
                    continue
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
                    status = (await self.client.get(f"http://{process.metrics}/mesh/status")).json()
                    for limiter in status.get("limiters", []):
                        if limiter.get("name") == "http":
                            self.samples.append((time.time(), process.instance, limiter))
            await asyncio.sleep(1.0)

    def latest(self) -> str:
        """The last reading of each frontend limiter, for the progress line."""
        last: dict[str, dict[str, Any]] = {}
        for _, instance, limiter in self.samples:
            last[instance] = limiter
        return ", ".join(
            f"{name} limit {int(v.get('limit') or 0)} in flight {int(v.get('in_flight') or 0)}"
            for name, v in sorted(last.items())
        )

    def shed(self) -> int:
        """Requests the frontend limiters shed between the first and the last sample of each instance."""
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        for _, instance, limiter in self.samples:
            count = int(limiter.get("shed") or 0)
            first.setdefault(instance, count)
            last[instance] = count
        return sum(last[i] - first[i] for i in last)


# ---- everything a check may look at --------------------------------------------------------------


@dataclass
class Evidence:
    """The run's window, what the shoppers got, and the ways to ask the observatory and the shop."""

    target: Target
    observatory: Observatory | None
    timeline: MeshTimeline | None
    limiters: LimiterWatch
    tally: Tally
    start_us: int
    fault_end_us: int = 0  # when the faults were lifted (0 while they are on)
    before: Target | None = None
    notes: dict[str, Any] = field(default_factory=dict)  # what actions recorded (e.g. the killed instance)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)  # actions' watchers, ended with the run

    @property
    def end_us(self) -> int:
        """The end of the window to search: now, and a little after (clocks of processes differ)."""
        return now_us() + 2_000_000

    def need_observatory(self) -> Observatory:
        """The observatory (the runner refuses --check without one)."""
        assert self.observatory is not None, "this boutique up runs no observatory"
        return self.observatory
