"""Live fan-in of every process's mesh status stream, for the Mesh page (what Turbine is to Hystrix).

While at least one subscriber watches, the feed polls the service registry for processes with a
`metrics` port, keeps one Server-Sent-Events subscription per process to its `/mesh/stream` (one
breaker event per dependency per second), polls its `/mesh/status` (instances and balancer state),
and publishes one merged snapshot per second to every subscriber. Everything is bounded, and when
the last subscriber leaves every task stops and the HTTP client closes. Parsing lives in `mesh_wire`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx

from boutique.backoff import AROUND, backoff_delay
from boutique.observatory.ui.mesh_wire import (
    MAX_DEPENDENCIES,
    MAX_PROCESSES,
    MAX_SUBSCRIBERS,
    FeedError,
    FeedSettings,
    MeshSnapshot,
    Process,
    TooManySubscribers,
    breaker_view,
    clean_text,
    describe,
    fetch_json,
    http_problem,
    parse_memory,
    parse_services,
    parse_status,
    sse_events,
)
from boutique.tokens import bearer_headers

log = logging.getLogger(__name__)


@dataclass
class _Heard:
    """A breaker event and when it arrived (wall clock seconds)."""

    at: float
    event: dict[str, Any]


@dataclass
class ProcessWatch:
    """The live subscription to one process: its stream, its status poll, and what they last said."""

    process: Process
    client: httpx.AsyncClient
    settings: FeedSettings
    headers: Mapping[str, str]
    caller: str = ""
    breakers: dict[str, _Heard] = field(default_factory=dict)
    status: dict[str, dict[str, Any]] | None = None
    status_at: float | None = None
    status_error: str | None = None
    rss_bytes: int | None = None  # resident memory, from the last status answer
    connected: bool = False
    stream_error: str | None = None
    reconnects: int = 0
    last_event_at: float | None = None
    polled: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        """Subscribe to the stream and start polling (nothing to do without a metrics port)."""
        if self.process.status_url is None:
            self.polled.set()
            return
        name = self.process.key
        self.tasks = [
            asyncio.create_task(self._stream(), name=f"mesh feed stream {name}"),
            asyncio.create_task(self._poll(), name=f"mesh feed status {name}"),
        ]

    def cancel(self) -> list[asyncio.Task[None]]:
        """Stop both loops; returns the tasks so the owner can wait for them."""
        for task in self.tasks:
            task.cancel()
        return self.tasks

    async def _stream(self) -> None:
        """Follow /mesh/stream, reconnecting with exponential backoff (and jitter) when it breaks."""
        settings = self.settings
        url = f"{self.process.status_url}/mesh/stream"
        timeout = httpx.Timeout(settings.request_timeout, read=settings.stream_read_timeout)
        attempt = 0  # reconnections since the stream last carried an event
        while True:
            try:
                async with self.client.stream("GET", url, headers=self.headers, timeout=timeout) as response:
                    if response.status_code != 200:
                        raise http_problem(response.status_code)
                    async for kind, data in sse_events(response.aiter_bytes()):
                        self._heard(kind, data)
                        attempt = 0
                raise FeedError("the stream ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stream_error = describe(exc)
            finally:
                self.connected = False
            self.reconnects += 1
            await asyncio.sleep(backoff_delay(attempt, settings.backoff_first, settings.backoff_max, AROUND))
            attempt += 1

    def _heard(self, kind: str, data: str) -> None:
        """Take one stream event: a breaker's numbers, or a keep-alive ping."""
        now = time.time()
        self.connected, self.stream_error, self.last_event_at = True, None, now
        if kind != "message":
            return
        try:
            event = json.loads(data)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        group = clean_text(event.get("group") or event.get("name"))
        if group in self.breakers or len(self.breakers) < MAX_DEPENDENCIES:
            self.breakers[group] = _Heard(now, event)
        if event.get("caller"):
            self.caller = clean_text(event["caller"])

    async def _poll(self) -> None:
        """Read /mesh/status every few seconds."""
        url = f"{self.process.status_url}/mesh/status"
        while True:
            try:
                body = await fetch_json(self.client, url, self.headers, self.settings.request_timeout)
                caller, self.status = parse_status(body)
                self.rss_bytes = parse_memory(body)
                self.caller = caller or self.caller
                self.status_at, self.status_error = time.time(), None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.status_error = describe(exc)
            finally:
                self.polled.set()
            await asyncio.sleep(self.settings.status_interval)

    def view(self, now: float) -> dict[str, Any]:
        """This process for the snapshot: registry facts, stream health and every dependency."""
        forget = now - self.settings.forget_breaker_after
        for group in [g for g, heard in self.breakers.items() if heard.at < forget]:
            del self.breakers[group]
        dependencies: dict[str, dict[str, Any]] = {}
        for name, entry in (self.status or {}).items():
            breaker = entry["breaker"]
            dependencies[name] = {
                "name": name,
                "balancer": entry["balancer"],
                "instances": entry["instances"],
                "breaker": breaker_view(breaker) if breaker else None,
                "breaker_age": now - self.status_at if breaker and self.status_at else None,
            }
        for group, heard in self.breakers.items():
            known = dependencies.get(group)
            if known is None:
                if len(dependencies) >= MAX_DEPENDENCIES:
                    continue
                known = dependencies[group] = {"name": group, "balancer": None, "instances": []}
            age = known.get("breaker_age")
            if age is None or now - heard.at <= age:
                known["breaker"], known["breaker_age"] = breaker_view(heard.event), now - heard.at
        freshest = max(self.last_event_at or 0.0, self.status_at or 0.0)
        has_metrics = self.process.status_url is not None
        return {
            **self.process.to_json(),
            "caller": self.caller or self.process.service,
            "metrics": has_metrics,
            "stream": {
                "connected": self.connected,
                "error": self.stream_error,
                "reconnects": self.reconnects,
                "last_event_age": round(now - self.last_event_at, 1) if self.last_event_at else None,
            },
            "status_error": self.status_error,
            "rss_bytes": self.rss_bytes,
            "stale": has_metrics and now - freshest > self.settings.stale_after,
            "dependencies": [
                {**dependencies[name], "breaker_age": _round(dependencies[name].get("breaker_age"))}
                for name in sorted(dependencies)
            ],
        }


def _round(value: float | None) -> float | None:
    """Seconds to one decimal, None kept."""
    return None if value is None else round(value, 1)


# ---- one period of watching ----------------------------------------------------------------------------


class _Run:
    """One period of watching, from the first subscriber to the last: client, polls, streams, publisher."""

    def __init__(self, feed: MeshFeed) -> None:
        self.feed = feed
        settings = feed.settings
        self.client = httpx.AsyncClient(
            trust_env=False,
            timeout=settings.request_timeout,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=MAX_PROCESSES),
        )
        self.watches: dict[str, ProcessWatch] = {}
        self.retired: set[asyncio.Task[None]] = set()
        self.registry_ok: bool | None = None
        self.registry_error: str | None = None
        self.registry_ok_at: float | None = None
        self.first_poll = asyncio.Event()
        self.tasks = [
            asyncio.create_task(self._registry_loop(), name="mesh feed registry"),
            asyncio.create_task(self._publish_loop(), name="mesh feed publisher"),
        ]

    def cancel(self) -> None:
        """Stop every loop of this run (synchronously: safe from a cancelled request)."""
        for task in self.tasks:
            task.cancel()
        for watch in self.watches.values():
            self.retired.update(watch.cancel())

    async def aclose(self) -> None:
        """Wait for every cancelled loop, then close the HTTP client."""
        await asyncio.gather(*self.tasks, *self.retired, return_exceptions=True)
        await self.client.aclose()

    async def _registry_loop(self) -> None:
        """Ask the registry for the processes every few seconds."""
        while True:
            await self._poll_registry()
            self.first_poll.set()
            await asyncio.sleep(self.feed.settings.registry_interval)

    async def _poll_registry(self) -> None:
        """One look at the registry, then start and stop watches to match it."""
        feed = self.feed
        try:
            body = await fetch_json(
                self.client,
                f"{feed.registry_url}/v1/services",
                feed.registry_headers,
                feed.settings.request_timeout,
            )
            processes = parse_services(body)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.registry_ok, self.registry_error = False, describe(exc)
            return
        self.registry_ok, self.registry_error, self.registry_ok_at = True, None, time.time()
        self._reconcile(processes)

    def _reconcile(self, processes: list[Process]) -> None:
        """Watch new processes, drop departed ones, restart a watch whose address changed."""
        current = {p.key: p for p in processes}
        for key in [k for k in self.watches if k not in current]:
            self._retire(self.watches.pop(key))
        for key, process in current.items():
            watch = self.watches.get(key)
            if watch is not None and watch.process.status_url == process.status_url:
                watch.process = process
                continue
            if watch is not None:
                self._retire(watch)
            watch = ProcessWatch(process, self.client, self.feed.settings, self.feed.status_headers)
            self.watches[key] = watch
            watch.start()

    def _retire(self, watch: ProcessWatch) -> None:
        """Cancel a watch; its tasks are awaited when the run closes, or forgotten once done."""
        for task in watch.cancel():
            self.retired.add(task)
            task.add_done_callback(self.retired.discard)

    async def _publish_loop(self) -> None:
        """Publish a snapshot every interval, the first once the registry and processes had a chance."""
        settings = self.feed.settings
        patience = settings.request_timeout + 1.0
        try:
            await asyncio.wait_for(self.first_poll.wait(), patience)
            pending = [w.polled.wait() for w in self.watches.values()]
            if pending:
                await asyncio.wait_for(asyncio.gather(*pending), patience)
        except TimeoutError:
            pass
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            self.feed.publish(self.snapshot())
            next_at += settings.publish_interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at = max(next_at, loop.time() - settings.publish_interval)

    def snapshot(self) -> MeshSnapshot:
        """The merged view of every process right now."""
        now = time.time()
        processes = [watch.view(now) for _, watch in sorted(self.watches.items())]
        data = {
            "generated_at": round(now, 3),
            "registry": {
                "configured": True,
                "url": self.feed.registry_url,
                "ok": self.registry_ok,
                "error": self.registry_error,
                "last_ok_age": _round(now - self.registry_ok_at if self.registry_ok_at else None),
            },
            "services": sorted({p["service"] for p in processes}),
            "processes": processes,
        }
        return MeshSnapshot(data, json.dumps(data, separators=(",", ":")))


# ---- the feed and its subscribers ------------------------------------------------------------------------


class Subscription:
    """One subscriber's queue of snapshots; only the newest waits (a slow reader skips old ones)."""

    def __init__(self, feed: MeshFeed) -> None:
        self.feed = feed
        self.closed = False
        self._queue: asyncio.Queue[MeshSnapshot] = asyncio.Queue(maxsize=1)

    def offer(self, snapshot: MeshSnapshot) -> None:
        """Hand over a snapshot, replacing one not read yet."""
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(snapshot)

    async def next(self) -> MeshSnapshot:
        """Wait for the next snapshot."""
        return await self._queue.get()

    def close(self) -> None:
        """Leave the feed (synchronous, so it is safe while the request is being cancelled)."""
        if not self.closed:
            self.closed = True
            self.feed.unsubscribe(self)

    def __enter__(self) -> Subscription:
        """Use as `with feed.subscribe() as updates:`."""
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Leave the feed."""
        self.close()

    def __aiter__(self) -> Subscription:
        """Iterate over snapshots as they come."""
        return self

    async def __anext__(self) -> MeshSnapshot:
        """The next snapshot."""
        return await self.next()


class MeshFeed:
    """The shared fan-in for one registry: runs while anyone subscribes, lingers briefly, then stops."""

    def __init__(
        self,
        registry_url: str,
        settings: FeedSettings | None = None,
        registry_token: str | None = None,
        status_token: str | None = None,
    ) -> None:
        registry_url = registry_url.strip().rstrip("/")
        self.registry_url = registry_url if "://" in registry_url else f"http://{registry_url}"
        self.settings = settings or FeedSettings()
        registry_token = registry_token or os.environ.get("BOUTIQUE_REGISTRY_TOKEN") or None
        status_token = status_token or os.environ.get("BOUTIQUE_STATUS_TOKEN") or None
        self.registry_headers = bearer_headers(registry_token)
        self.status_headers = bearer_headers(status_token)
        self.subscribers: set[Subscription] = set()
        self._run: _Run | None = None
        self._latest: MeshSnapshot | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def running(self) -> bool:
        """Whether the feed is watching the mesh now."""
        return self._run is not None

    @property
    def full(self) -> bool:
        """Whether another subscriber would be refused."""
        return len(self.subscribers) >= MAX_SUBSCRIBERS

    def subscribe(self) -> Subscription:
        """Start receiving snapshots (the newest one at once, if the feed is already running)."""
        if self.full:
            raise TooManySubscribers(f"at most {MAX_SUBSCRIBERS} watchers at a time")
        subscription = Subscription(self)
        self.subscribers.add(subscription)
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self._run is None:
            self._latest = None
            self._run = _Run(self)
        elif self._latest is not None:
            subscription.offer(self._latest)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop sending to a subscriber; the last one out stops the feed (after the linger)."""
        self.subscribers.discard(subscription)
        if self.subscribers or self._run is None:
            return
        if self.settings.linger > 0:
            if self._linger is None:
                self._linger = asyncio.get_running_loop().call_later(self.settings.linger, self._stop_if_idle)
        else:
            self._stop_if_idle()

    def _stop_if_idle(self) -> None:
        """Stop watching when nobody subscribes; the cleanup finishes in the background."""
        self._linger = None
        if self.subscribers or self._run is None:
            return
        run, self._run = self._run, None
        run.cancel()
        self._latest = None
        closing = asyncio.get_running_loop().create_task(run.aclose(), name="mesh feed close")
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    async def stopped(self) -> None:
        """Wait until earlier runs have finished closing (for tests and shutdown)."""
        while self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)

    async def aclose(self) -> None:
        """Stop now whoever still watches (server shutdown)."""
        for subscription in list(self.subscribers):
            subscription.close()
        if self._linger is not None:
            self._linger.cancel()
        self._stop_if_idle()
        await self.stopped()

    def publish(self, snapshot: MeshSnapshot) -> None:
        """Give a snapshot to every subscriber and keep it for newcomers."""
        self._latest = snapshot
        for subscription in list(self.subscribers):
            subscription.offer(snapshot)


def unconfigured_snapshot() -> dict[str, Any]:
    """What /api/mesh answers when the observatory was started without a registry URL."""
    return {
        "generated_at": round(time.time(), 3),
        "registry": {
            "configured": False,
            "url": None,
            "ok": None,
            "error": "no registry configured: start with --registry-url or BOUTIQUE_REGISTRY_URL",
            "last_ok_age": None,
        },
        "services": [],
        "processes": [],
    }
