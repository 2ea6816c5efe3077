"""The Mesh page's feed and routes against real small HTTP servers: a registry and processes' status endpoints.

The registry is the real one (boutique.mesh.registry) and each process serves the real status app
(boutique.mesh.status) over a stand-in mesh whose breakers are real CircuitBreakers, so the feed is
checked against the very JSON and event stream the shop's processes send.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

import boutique.mesh.status as mesh_status
from boutique.asgi_server import BackgroundServer
from boutique.mesh.instance import Instance
from boutique.mesh.registry.server import RegistryServer
from boutique.mesh.resilience.breaker import BreakerConfig, BreakerOpenError, CircuitBreaker
from boutique.observatory.ui import mesh
from boutique.observatory.ui.mesh_feed import MeshFeed
from boutique.observatory.ui.mesh_wire import (
    FeedError,
    FeedSettings,
    breaker_view,
    parse_services,
    sse_events,
)
from boutique.run.ports import free_port

FAST = FeedSettings(
    registry_interval=0.2,
    status_interval=0.2,
    publish_interval=0.2,
    request_timeout=1.0,
    stream_read_timeout=1.5,
    backoff_first=0.1,
    backoff_max=0.4,
    stale_after=3.0,
    linger=0.0,
)
Snapshot = dict[str, Any]


# ---- a stand-in for a process's mesh, served by the real status app ---------------------------------


@dataclass
class FakeDependency:
    """What the status app reads from a dependency: name, instances, breaker, snapshot()."""

    name: str
    caller: str
    breaker: CircuitBreaker | None
    instances: list[dict[str, Any]] = field(default_factory=list)

    def snapshot(self) -> dict[str, Any]:
        """The same shape as boutique.mesh.dependency.Dependency.snapshot()."""
        return {
            "dependency": self.name,
            "caller": self.caller,
            "balancer": "p2c",
            "instances": self.instances,
            "breaker": self.breaker.snapshot() if self.breaker else None,
        }


@dataclass
class FakeMesh:
    """What the status app reads from a process's mesh: the caller and its dependencies."""

    caller: str
    dependencies: dict[str, FakeDependency] = field(default_factory=dict)

    def add(self, name: str, breaker: bool = True, instances: int = 1) -> CircuitBreaker | None:
        """A dependency with `instances` endpoints and (optionally) a breaker; returns the breaker."""
        made = CircuitBreaker(f"{self.caller}->{name}", BreakerConfig(), group=name) if breaker else None
        endpoints = [
            {
                "id": f"{name}-{i}",
                "endpoint": f"127.0.0.1:{50000 + i}",
                "outstanding": i,
                "ejected": i == 1,
                "consecutive_failures": 2 if i == 1 else 0,
            }
            for i in range(instances)
        ]
        self.dependencies[name] = FakeDependency(name, self.caller, made, endpoints)
        return made

    def snapshot(self) -> list[dict[str, Any]]:
        """Every dependency's state, like Mesh.snapshot()."""
        return [d.snapshot() for d in self.dependencies.values()]


class FakeProcess:
    """A process's status endpoints on a fixed loopback port; can stop and come back on the same port."""

    def __init__(self, service: str, instance_id: str, token: str | None = None) -> None:
        self.service = service
        self.id = instance_id
        self.mesh = FakeMesh(service)
        self.token = token
        self.port = free_port()
        self.server: BackgroundServer | None = None

    async def start(self) -> None:
        """Serve /mesh/status and /mesh/stream."""
        app: Starlette = mesh_status.build_app(self.mesh, self.token)  # type: ignore[arg-type]
        self.server = BackgroundServer(app, "127.0.0.1", self.port, "status")
        await self.server.start()

    async def stop(self) -> None:
        """Stop serving and drop every open connection, as when the process dies."""
        if self.server is not None:
            embedded = self.server._server
            if embedded is not None:
                for connection in list(embedded.server_state.connections):
                    connection.transport.close()
            await self.server.stop()
            self.server = None

    def instance(self) -> Instance:
        """How it registers."""
        return Instance(
            self.service,
            self.id,
            "127.0.0.1",
            {"grpc": self.port + 1, "metrics": self.port},
            {"pid": "4242", "started_at": "2024-05-01T10:00:00+00:00", "version": "1.2.3"},
        )


def traffic(breaker: CircuitBreaker, successes: int, failures: int = 0) -> None:
    """Record finished calls on a breaker (failures stop once it trips)."""
    for _ in range(successes):
        breaker.acquire().success(0.012)
    for _ in range(failures):
        try:
            permit = breaker.acquire()
        except BreakerOpenError:
            return
        permit.failure(0.5, timeout=True)


@pytest.fixture(autouse=True)
def fast_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    """Processes stream an event burst every 0.1 s instead of every second."""
    monkeypatch.setattr(mesh_status, "STREAM_INTERVAL", 0.1)


@pytest.fixture
async def registry() -> AsyncIterator[RegistryServer]:
    """The real registry on a free loopback port."""
    server = RegistryServer("127.0.0.1", 0)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def processes(registry: RegistryServer) -> AsyncIterator[dict[str, FakeProcess]]:
    """A frontend (two dependencies with breakers) and a checkout (one), registered and serving."""
    frontend = FakeProcess("frontend", "frontend-0")
    recommendation = frontend.mesh.add("recommendation", instances=2)
    frontend.mesh.add("productcatalog", breaker=False)
    checkout = FakeProcess("checkout", "checkout-0")
    payment = checkout.mesh.add("payment")
    assert recommendation is not None and payment is not None
    traffic(recommendation, successes=30)
    traffic(payment, successes=2, failures=8)  # trips: 8 of 10 failed
    made = {"frontend": frontend, "checkout": checkout}
    for process in made.values():
        await process.start()
        registry.state.register(process.instance(), ttl=60)
    try:
        yield made
    finally:
        for process in made.values():
            await process.stop()


async def until(
    feed: MeshFeed, check: Callable[[Snapshot], bool], what: str, timeout: float = 10.0
) -> Snapshot:
    """Subscribe and read snapshots until one passes `check`; fails naming `what` after `timeout` s."""
    last: Snapshot | None = None
    with feed.subscribe() as updates:
        try:
            async with asyncio.timeout(timeout):
                async for snapshot in updates:
                    last = snapshot.data
                    if check(last):
                        return last
        except TimeoutError:
            pass
    raise AssertionError(f"no snapshot with {what} within {timeout}s; last: {json.dumps(last)[:3000]}")


def process_of(snapshot: Snapshot, key: str) -> dict[str, Any] | None:
    """The process with this service/id key, if the snapshot has it."""
    return next((p for p in snapshot["processes"] if p["key"] == key), None)


def field_of(snapshot: Snapshot, key: str, name: str, default: Any = None) -> Any:
    """One field of one process, or `default` when the process is absent."""
    process = process_of(snapshot, key)
    return default if process is None else process[name]


def dependency_of(snapshot: Snapshot, key: str, name: str) -> dict[str, Any] | None:
    """One dependency of one process, if present."""
    process = process_of(snapshot, key)
    if process is None:
        return None
    return next((d for d in process["dependencies"] if d["name"] == name), None)


def feed_tasks() -> list[asyncio.Task[Any]]:
    """Tasks of any mesh feed still alive in this loop."""
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("mesh feed") and not t.done()]


# ---- the feed ---------------------------------------------------------------------------------------


async def test_merges_several_processes(registry: RegistryServer, processes: dict[str, FakeProcess]) -> None:
    """Registry facts, balancer state and breakers of every process end up in one snapshot."""
    registry.state.register(Instance("redis", "redis-0", "127.0.0.1", {"redis": 6379}), ttl=60)
    feed = MeshFeed(registry.url, FAST)

    def complete(s: Snapshot) -> bool:
        return all(
            field_of(s, key, "stream", {}).get("connected")
            for key in ("frontend/frontend-0", "checkout/checkout-0")
        )

    snapshot = await until(feed, complete, "both processes streaming")
    assert snapshot["registry"] == {
        "configured": True,
        "url": registry.url,
        "ok": True,
        "error": None,
        "last_ok_age": snapshot["registry"]["last_ok_age"],
    }
    assert snapshot["services"] == ["checkout", "frontend", "redis"]
    frontend = process_of(snapshot, "frontend/frontend-0")
    assert frontend is not None
    assert frontend["pid"] == "4242" and frontend["version"] == "1.2.3"
    assert frontend["started_at"] == "2024-05-01T10:00:00+00:00"
    assert frontend["status"] == "passing" and frontend["address"] == "127.0.0.1"
    assert frontend["caller"] == "frontend" and frontend["stale"] is False
    assert [d["name"] for d in frontend["dependencies"]] == ["productcatalog", "recommendation"]

    recommendation = dependency_of(snapshot, "frontend/frontend-0", "recommendation")
    assert recommendation is not None
    assert recommendation["balancer"] == "p2c"
    assert [(i["id"], i["outstanding"], i["ejected"]) for i in recommendation["instances"]] == [
        ("recommendation-0", 0, False),
        ("recommendation-1", 1, True),
    ]
    breaker = recommendation["breaker"]
    assert breaker["state"] == "CLOSED" and breaker["open"] is False
    assert breaker["request_count"] == 30 and breaker["request_rate"] == 3.0
    assert breaker["error_percentage"] == 0 and breaker["latency_p50"] == pytest.approx(12.0)
    assert breaker["name"] == "frontend->recommendation"

    catalog = dependency_of(snapshot, "frontend/frontend-0", "productcatalog")
    assert catalog is not None and catalog["breaker"] is None

    payment = dependency_of(snapshot, "checkout/checkout-0", "payment")
    assert payment is not None
    assert payment["breaker"]["state"] == "OPEN" and payment["breaker"]["open"] is True
    assert payment["breaker"]["error_percentage"] == 80 and payment["breaker"]["timeout"] == 8

    redis = process_of(snapshot, "redis/redis-0")
    assert redis is not None and redis["metrics"] is False and redis["dependencies"] == []
    await feed.stopped()
    assert not feed.running and not feed_tasks()


async def test_follows_breaker_changes_live(
    registry: RegistryServer, processes: dict[str, FakeProcess]
) -> None:
    """A breaker that trips in a process shows OPEN, then short-circuited calls are counted."""
    feed = MeshFeed(registry.url, FAST)
    breaker = processes["frontend"].mesh.dependencies["recommendation"].breaker
    assert breaker is not None

    def state(s: Snapshot) -> str | None:
        found = dependency_of(s, "frontend/frontend-0", "recommendation")
        return found["breaker"]["state"] if found and found["breaker"] else None

    with feed.subscribe():
        await until(feed, lambda s: state(s) == "CLOSED", "the breaker closed")
        traffic(breaker, successes=0, failures=20)
        with pytest.raises(Exception, match="open"):
            breaker.acquire()
        opened = await until(feed, lambda s: state(s) == "OPEN", "the breaker open")
    found = dependency_of(opened, "frontend/frontend-0", "recommendation")
    assert found is not None and found["breaker"]["short_circuited"] >= 1
    await feed.stopped()


async def test_a_process_leaving(registry: RegistryServer, processes: dict[str, FakeProcess]) -> None:
    """A deregistered process leaves the snapshot and its stream and poll stop."""
    feed = MeshFeed(registry.url, FAST)
    with feed.subscribe():
        await until(feed, lambda s: process_of(s, "checkout/checkout-0") is not None, "checkout")
        tasks = [t for t in feed_tasks() if "checkout/checkout-0" in t.get_name()]
        assert len(tasks) == 2
        registry.state.deregister("checkout", "checkout-0")
        gone = await until(feed, lambda s: process_of(s, "checkout/checkout-0") is None, "checkout gone")
        assert process_of(gone, "frontend/frontend-0") is not None
        await asyncio.wait(tasks, timeout=2)
        assert all(t.done() for t in tasks)
    await feed.stopped()


async def test_a_stream_breaking_and_coming_back(
    registry: RegistryServer, processes: dict[str, FakeProcess]
) -> None:
    """When a process stops answering its stream is marked broken; when it is back the feed reconnects."""
    feed = MeshFeed(registry.url, FAST)
    frontend = processes["frontend"]

    def stream(s: Snapshot) -> dict[str, Any]:
        found = process_of(s, "frontend/frontend-0")
        return found["stream"] if found else {"connected": None}

    with feed.subscribe():
        await until(feed, lambda s: stream(s)["connected"] is True, "the stream connected")
        await frontend.stop()
        broken = await until(feed, lambda s: stream(s)["connected"] is False, "the stream broken")
        assert stream(broken)["error"]
        down = await until(
            feed, lambda s: bool(field_of(s, "frontend/frontend-0", "status_error")), "no status"
        )
        assert field_of(down, "checkout/checkout-0", "stream")["connected"] is True
        await frontend.start()
        back = await until(feed, lambda s: stream(s)["connected"] is True, "the stream back")
        assert stream(back)["reconnects"] >= 1 and stream(back)["error"] is None
        await until(feed, lambda s: field_of(s, "frontend/frontend-0", "status_error") is None, "status back")
    await feed.stopped()


async def test_a_silent_stream_is_noticed(registry: RegistryServer) -> None:
    """A process that accepts the connection but never sends (stopped, hung) counts as broken."""
    silent = await asyncio.start_server(lambda r, w: asyncio.sleep(60), "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    registry.state.register(Instance("stuck", "stuck-0", "127.0.0.1", {"metrics": port}), ttl=60)
    feed = MeshFeed(registry.url, FAST)
    try:
        snapshot = await until(
            feed,
            lambda s: bool(field_of(s, "stuck/stuck-0", "stream", {}).get("error")),
            "the silent stream noticed",
        )
        stuck = process_of(snapshot, "stuck/stuck-0")
        assert stuck is not None
        assert stuck["stream"]["error"] == "no answer in time" and stuck["stream"]["connected"] is False
    finally:
        silent.close()
        await feed.stopped()


async def test_registry_down_from_the_start() -> None:
    """No registry answering: the snapshot says so and lists nothing."""
    feed = MeshFeed(f"http://127.0.0.1:{free_port()}", FAST)
    snapshot = await until(feed, lambda s: s["registry"]["ok"] is False, "the registry down")
    assert snapshot["registry"]["error"].startswith("cannot connect")
    assert snapshot["processes"] == [] and snapshot["registry"]["last_ok_age"] is None
    await feed.stopped()


async def test_registry_going_down_keeps_known_processes(
    registry: RegistryServer, processes: dict[str, FakeProcess]
) -> None:
    """When the registry stops answering, processes already known stay, with their live figures."""
    feed = MeshFeed(registry.url, FAST)
    with feed.subscribe():
        await until(feed, lambda s: len(s["processes"]) == 2, "two processes")
        await registry.stop()
        down = await until(feed, lambda s: s["registry"]["ok"] is False, "the registry down")
        assert {p["key"] for p in down["processes"]} == {"frontend/frontend-0", "checkout/checkout-0"}
        assert down["registry"]["last_ok_age"] is not None
    await feed.stopped()


async def test_bearer_tokens(registry: RegistryServer) -> None:
    """The status token is sent to processes; without it the snapshot says a token is required."""
    guarded = FakeProcess("cart", "cart-0", token="s3cret")
    guarded.mesh.add("redis")
    await guarded.start()
    registry.state.register(guarded.instance(), ttl=60)
    try:
        denied = MeshFeed(registry.url, FAST, status_token="wrong")
        refused = await until(
            denied, lambda s: bool(s["processes"] and s["processes"][0]["status_error"]), "a refusal"
        )
        assert "BOUTIQUE_STATUS_TOKEN" in refused["processes"][0]["status_error"]
        await denied.stopped()
        allowed = MeshFeed(registry.url, FAST, status_token="s3cret")
        await until(
            allowed, lambda s: bool(dependency_of(s, "cart/cart-0", "redis")), "the guarded process's breaker"
        )
        await allowed.stopped()
    finally:
        await guarded.stop()


async def test_stops_when_the_last_subscriber_leaves(
    registry: RegistryServer, processes: dict[str, FakeProcess]
) -> None:
    """Every task ends and the client closes once nobody watches; a new watcher starts it again."""
    feed = MeshFeed(registry.url, FAST)
    first, second = feed.subscribe(), feed.subscribe()
    await asyncio.wait_for(first.next(), 5)
    await until(feed, lambda s: len(s["processes"]) == 2, "two processes")
    assert len(feed_tasks()) == 2 + 2 * 2  # registry poll, publisher, a stream and a poll per process
    first.close()
    assert feed.running
    second.close()
    assert not feed.running
    await feed.stopped()
    assert feed_tasks() == []
    again = await until(feed, lambda s: len(s["processes"]) == 2, "two processes again")
    assert again["registry"]["ok"] is True
    await feed.stopped()
    assert feed_tasks() == []


async def test_lingers_before_stopping(registry: RegistryServer) -> None:
    """With a linger, a watcher coming back soon finds the feed still running."""
    feed = MeshFeed(registry.url, FeedSettings(publish_interval=0.1, linger=0.3))
    with feed.subscribe() as updates:
        await asyncio.wait_for(updates.next(), 5)
    assert feed.running
    with feed.subscribe() as updates:
        await asyncio.wait_for(updates.next(), 1)  # the newest snapshot, at once
    await asyncio.sleep(0.5)
    assert not feed.running
    await feed.stopped()
    assert feed_tasks() == []


async def test_a_slow_subscriber_gets_only_the_newest(registry: RegistryServer) -> None:
    """Snapshots do not pile up for a subscriber that does not read."""
    feed = MeshFeed(registry.url, FAST)
    with feed.subscribe() as updates:
        await asyncio.sleep(1.0)
        assert updates._queue.qsize() == 1
        newest = await updates.next()
        assert newest.data["generated_at"] > 0
    await feed.stopped()


# ---- parsers ----------------------------------------------------------------------------------------


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    """Bytes as they might arrive over a socket."""
    for part in parts:
        yield part


async def test_sse_parser() -> None:
    """Events split across chunks, CRLF, comments, named events and multi-line data."""
    stream = chunks(
        b'retry: 2000\n\n: comment\r\ndata: {"a"',
        b": 1}\r\n\r\nevent: ping\ndata: x\ndata: y\n\n",
        b"data: z",
    )
    events = [e async for e in sse_events(stream)]
    assert events == [("message", '{"a": 1}'), ("ping", "x\ny")]


async def test_sse_parser_is_bounded() -> None:
    """A line or an event beyond the limit is refused rather than buffered."""
    with pytest.raises(FeedError):
        _ = [e async for e in sse_events(chunks(b"data: " + b"x" * 100), limit=50)]
    with pytest.raises(FeedError):
        _ = [e async for e in sse_events(chunks(b"data: 1234\n" * 20), limit=50)]


def test_breaker_view_of_a_real_snapshot() -> None:
    """The page's fields come from the mesh breaker's Hystrix-style event."""
    breaker = CircuitBreaker("a->b", BreakerConfig(), group="b")
    traffic(breaker, successes=8, failures=2)
    view = breaker_view(breaker.snapshot())
    assert view["state"] == "CLOSED" and view["open"] is False
    assert view["request_count"] == 10 and view["request_rate"] == 1.0
    assert view["error_percentage"] == 20 and view["failure"] == 2 and view["timeout"] == 2
    assert view["latency_p99"] == pytest.approx(500.0) and view["error_threshold"] == 50
    breaker.force_open()
    assert breaker_view(breaker.snapshot())["state"] == "FORCED_OPEN"
    assert breaker_view({"isCircuitBreakerOpen": True, "requestCount": "lots"})["state"] == "OPEN"
    assert breaker_view({"isCircuitBreakerOpen": True, "requestCount": "lots"})["request_count"] == 0


def test_registry_url_without_a_scheme_means_http() -> None:
    """`--registry-url 127.0.0.1:7600/` is read as http://127.0.0.1:7600."""
    assert MeshFeed(" 127.0.0.1:7600/ ").registry_url == "http://127.0.0.1:7600"
    assert MeshFeed("https://registry.example/").registry_url == "https://registry.example"


def test_registry_answer_parsing_skips_malformed_entries() -> None:
    """Odd entries are skipped, bad ports dropped, and a missing 'services' object is an error."""
    body = {
        "services": {
            "a": [
                {"id": "a-1", "address": "::1", "ports": {"metrics": 9100, "bad": "x", "huge": 70000}},
                "nonsense",
                {"address": "no id"},
            ],
            "b": "not a list",
        }
    }
    (found,) = parse_services(body)
    assert found.key == "a/a-1" and found.ports == {"metrics": 9100}
    assert found.status_url == "http://[::1]:9100" and found.status == "unknown"
    with pytest.raises(FeedError):
        parse_services({"oops": 1})


# ---- routes ---------------------------------------------------------------------------------------


async def test_page_without_a_registry_says_how_to_set_one() -> None:
    """The page explains --registry-url and `boutique up`; the JSON says it is not configured."""
    app = Starlette(routes=mesh.routes(None))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ui") as client:
        page = await client.get("/mesh")
        assert page.status_code == 200
        assert "boutique observatory --registry-url http://127.0.0.1:7600" in page.text
        assert "boutique up" in page.text and "BOUTIQUE_REGISTRY_URL" in page.text
        assert "mesh.js" not in page.text
        answer = await client.get("/api/mesh")
        assert answer.status_code == 200 and answer.json()["registry"]["configured"] is False
        stream = await client.get("/api/mesh/stream")
        assert stream.status_code == 404 and "registry" in stream.json()["error"]


async def test_page_and_one_shot_snapshot(
    registry: RegistryServer, processes: dict[str, FakeProcess]
) -> None:
    """/mesh is the live page (nav item marked), /api/mesh one snapshot as JSON."""
    feed = MeshFeed(registry.url, FAST)
    app = Starlette(routes=mesh.routes(registry.url, feed))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ui") as client:
        page = await client.get("/mesh")
        assert page.status_code == 200
        assert 'href="/mesh" aria-current="page"' in page.text
        assert 'data-stream="/api/mesh/stream"' in page.text and "/static/mesh.js" in page.text
        assert registry.url in page.text
        answer = await client.get("/api/mesh")
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
        body = answer.json()
        assert {p["key"] for p in body["processes"]} == {"frontend/frontend-0", "checkout/checkout-0"}
        payment = dependency_of(body, "checkout/checkout-0", "payment")
        assert payment is not None and payment["breaker"]["state"] == "OPEN"
    await feed.stopped()
    assert not feed.running


async def test_event_stream_over_http(registry: RegistryServer, processes: dict[str, FakeProcess]) -> None:
    """The browser's stream: a snapshot a second as SSE; the feed stops once the browser goes."""
    feed = MeshFeed(registry.url, FAST)
    server = BackgroundServer(Starlette(routes=mesh.routes(registry.url, feed)), "127.0.0.1", 0, "ui")
    port = await server.start()
    try:
        received: list[dict[str, Any]] = []
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client,
            client.stream("GET", "/api/mesh/stream") as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async for _, data in sse_events(response.aiter_bytes()):
                received.append(json.loads(data))
                if len(received) == 3:
                    break
        assert all(r["registry"]["ok"] for r in received)
        assert received[0]["generated_at"] < received[2]["generated_at"]
        async with asyncio.timeout(5):
            while feed.running:  # noqa: ASYNC110 - the server notices the closed stream on its next send
                await asyncio.sleep(0.05)
        await feed.stopped()
        assert feed_tasks() == []
    finally:
        await server.stop()
