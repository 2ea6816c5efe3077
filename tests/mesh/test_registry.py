"""The embedded registry: leases, indexes and blocking queries, the HTTP API, checks, auth and keep-alive."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from boutique.mesh.instance import CRITICAL, PASSING, Instance
from boutique.mesh.registry import (
    CheckSpec,
    LimitExceeded,
    RegistryClient,
    RegistryError,
    RegistryServer,
    RegistryState,
    serve_registry,
)
from tests.support import ManualClock, wait_until

FakeClock = ManualClock


def make_instance(service: str = "cart", instance_id: str = "cart-1", **ports: int) -> Instance:
    return Instance(
        service,
        instance_id,
        "127.0.0.1",
        ports or {"grpc": 50051, "metrics": 9100},
        {"pid": "4242", "started_at": "2024-01-01T00:00:00Z", "version": "1.2.3"},
    )


@pytest.fixture
async def client(registry: RegistryServer) -> AsyncIterator[RegistryClient]:
    async with RegistryClient(registry.url) as registry_client:
        yield registry_client


async def wait_for_status(
    client: RegistryClient, service: str, instance_id: str, status: str | None, timeout: float = 20.0
) -> list[Instance]:
    """Follow the service with blocking queries until the instance has `status` (None: is gone)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    index = 0
    while True:
        instances, index = await client.instances(service, index, wait=1.0, any_status=True)
        match = [i for i in instances if i.id == instance_id]
        if (status is None and not match) or (match and match[0].status == status):
            return instances
        if loop.time() > deadline:
            raise AssertionError(f"{instance_id} never became {status}: {instances}")


# ---- RegistryState on a logical clock ------------------------------------------------------------


def test_renewals_keep_the_lease_and_expiry_removes_the_instance() -> None:
    clock = FakeClock()
    state = RegistryState(clock=clock)
    first = state.register(make_instance(), ttl=10)
    assert first.created and first.record.expires_at == 10
    for _ in range(5):  # renew every 8 s: alive for 40 s on a 10 s lease
        clock.advance(8)
        renewed = state.register(make_instance(), ttl=10)
        assert not renewed.created
        assert renewed.index == first.index, "a pure renewal must not move the index"
        assert [i.id for i in state.instances("cart")[0]] == ["cart-1"]
    clock.advance(9.9)
    assert state.expire() == []
    clock.advance(0.1)
    assert [i.id for i in state.instances("cart")[0]] == [], "an expired lease is gone on read"
    assert state.index_of("cart") > first.index


def test_the_periodic_sweep_reports_what_expired() -> None:
    clock = FakeClock()
    state = RegistryState(clock=clock)
    removed: list[str] = []
    state.on_remove.append(lambda record: removed.append(record.instance.id))
    state.register(make_instance(instance_id="a"), ttl=5)
    state.register(make_instance(instance_id="b"), ttl=20)
    clock.advance(6)
    assert [r.instance.id for r in state.expire()] == ["a"]
    assert removed == ["a"]
    assert state.counts() == (1, 1)


def test_changes_move_the_index_and_it_never_goes_back() -> None:
    state = RegistryState(clock=FakeClock())
    empty_index = state.index_of("cart")
    seen = [state.register(make_instance(), ttl=10).index]
    assert seen[0] > empty_index
    changed = Instance("cart", "cart-1", "127.0.0.1", {"grpc": 50052}, {"version": "2"})
    seen.append(state.register(changed, ttl=10).index)
    seen.append(state.register(changed, ttl=30).index)
    assert state.set_status("cart", "cart-1", CRITICAL)
    seen.append(state.index_of("cart"))
    assert not state.set_status("cart", "cart-1", CRITICAL), "the same status again is no change"
    seen.append(state.index_of("cart"))
    assert state.instances("cart")[0] == [], "critical instances are left out by default"
    assert state.instances("cart", any_status=True)[0][0].status == CRITICAL
    state.deregister("cart", "cart-1")
    seen.append(state.index_of("cart"))
    seen.append(state.register(make_instance(), ttl=10).index)
    assert seen == sorted(seen) and len(set(seen)) == len(seen) - 1, seen
    other = state.index_of("cart")
    state.register(make_instance("ads", "ads-1"), ttl=10)
    assert state.index_of("cart") == other, "another service's change leaves this index alone"
    assert state.index >= state.index_of("ads") > other


def test_limits_and_validation() -> None:
    state = RegistryState(clock=FakeClock(), max_instances=2, max_services=2)
    state.register(make_instance("a", "a-1"), ttl=10)
    state.register(make_instance("b", "b-1"), ttl=10)
    with pytest.raises(LimitExceeded):
        state.register(make_instance("a", "a-2"), ttl=10)
    state.register(make_instance("a", "a-1"), ttl=10)  # renewing is fine when full
    state.deregister("b", "b-1")
    state.register(make_instance("a", "a-2"), ttl=10)  # room again
    one_service = RegistryState(clock=FakeClock(), max_services=1)
    one_service.register(make_instance("a", "a-1"), ttl=10)
    with pytest.raises(LimitExceeded, match="services"):
        one_service.register(make_instance("b", "b-1"), ttl=10)
    one_service.register(make_instance("a", "a-2"), ttl=10)
    bad: list[tuple[Instance, float]] = [
        (make_instance("-cart"), 10),
        (make_instance("cart", "x" * 129), 10),
        (make_instance("cart", "bad id"), 10),
        (make_instance("cart\n"), 10),
        (make_instance(), 0.5),
        (make_instance(), 3601),
        (make_instance(), math.nan),
        (make_instance(grpc=0), 10),
        (make_instance(grpc=70000), 10),
        (Instance("cart", "c", "not a host!", {"grpc": 1}), 10),
        (Instance("cart", "c", "127.0.0.1", {}), 10),
    ]
    fresh = RegistryState(clock=FakeClock())
    for instance, ttl in bad:
        with pytest.raises(ValueError):
            fresh.register(instance, ttl)
    with pytest.raises(ValueError, match="check port"):
        fresh.register(make_instance(), 10, CheckSpec("http", "nope"))
    assert fresh.counts() == (0, 0)


async def test_wait_for_change_wakes_on_change_and_on_expiry() -> None:
    clock = FakeClock()
    state = RegistryState(clock=clock)
    _, index = state.instances("cart")
    waiter = asyncio.create_task(state.wait_for_change("cart", index, timeout=60))
    await wait_until(lambda: state.waiting("cart") == 1)
    state.register(make_instance(), ttl=5)
    instances, new_index = await asyncio.wait_for(waiter, 30)
    assert [i.id for i in instances] == ["cart-1"] and new_index > index
    waiter = asyncio.create_task(state.wait_for_change("cart", new_index, timeout=60))
    await wait_until(lambda: state.waiting("cart") == 1)
    clock.advance(5)
    state.expire()
    instances, last = await asyncio.wait_for(waiter, 30)
    assert instances == [] and last > new_index
    assert await state.wait_for_change("cart", last, timeout=0.05) == ([], last)
    assert state.waiting() == 0


# ---- the HTTP API with the real client -----------------------------------------------------------


async def test_register_list_and_deregister(registry: RegistryServer, client: RegistryClient) -> None:
    lease = await client.register(make_instance(), ttl=10)
    assert lease.created and lease.ttl == 10 and 0 < lease.expires_in <= 10
    assert lease.instance == make_instance()
    await client.register(make_instance("cart", "cart-2", grpc=50052), ttl=10)
    async with httpx.AsyncClient(base_url=registry.url) as http:
        raw = await http.put("/v1/services/ads/instances/ads-1", json=_body(ttl="30s"))
    assert raw.status_code == 200, raw.text
    answer = raw.json()
    assert answer["instance"]["address"] == "127.0.0.1" and answer["instance"]["status"] == PASSING
    assert answer["lease"]["ttl"] == 30 and answer["created"] is True and answer["check"] is None
    assert raw.headers["X-Registry-Index"] == str(answer["index"])
    services = await client.services()
    assert sorted(services) == ["ads", "cart"]
    assert [i.id for i in services["cart"]] == ["cart-1", "cart-2"]
    assert services["cart"][0].metadata["version"] == "1.2.3"
    instances, index = await client.instances("cart")
    assert [i.endpoint() for i in instances] == ["127.0.0.1:50051", "127.0.0.1:50052"]
    assert await client.health() == {"status": "ok", "services": 2, "instances": 3}
    await client.deregister("cart", "cart-1")
    instances, after = await client.instances("cart")
    assert [i.id for i in instances] == ["cart-2"] and after > index
    with pytest.raises(RegistryError) as excinfo:
        await client.deregister("cart", "cart-1")
    assert excinfo.value.status == 404 and "not registered" in excinfo.value.reason


async def test_renewals_hold_the_instance_past_its_ttl_and_expiry_removes_it(
    registry: RegistryServer, client: RegistryClient
) -> None:
    keepalive = client.keep_registered(make_instance(), ttl=1.5)
    assert await keepalive.wait_registered(10)
    _, index = await client.instances("cart")
    # No change at all for over two TTLs: renewals held the lease and did not move the index.
    held, held_index = await client.instances("cart", index, wait=3.5)
    assert held_index == index and [i.id for i in held] == ["cart-1"]
    await keepalive.stop(deregister=False)
    # The sweep expires the lease and wakes the watcher without any read in between.
    loop = asyncio.get_running_loop()
    started = loop.time()
    gone, gone_index = await client.instances("cart", index, wait=30)
    assert loop.time() - started < 15, "the expiry did not wake the blocking query"
    assert gone == [] and gone_index > index
    assert await client.health() == {"status": "ok", "services": 0, "instances": 0}


async def test_blocking_query_answers_as_soon_as_an_instance_registers(
    registry: RegistryServer, client: RegistryClient
) -> None:
    instances, index = await client.instances("checkout")
    assert instances == []
    loop = asyncio.get_running_loop()
    started = loop.time()
    query = asyncio.create_task(client.instances("checkout", index, wait=30))
    await wait_until(lambda: registry.state.waiting("checkout") == 1)
    await client.register(make_instance("checkout", "checkout-1"), ttl=10)
    instances, new_index = await asyncio.wait_for(query, 60)
    assert loop.time() - started < 15, "the query waited for its timeout instead of the change"
    assert [i.id for i in instances] == ["checkout-1"] and new_index > index


async def test_blocking_query_returns_unchanged_when_the_wait_runs_out(
    registry: RegistryServer, client: RegistryClient
) -> None:
    await client.register(make_instance(), ttl=60)
    before, index = await client.instances("cart")
    loop = asyncio.get_running_loop()
    started = loop.time()
    after, same = await client.instances("cart", index, wait=0.5)
    assert loop.time() - started >= 0.45, "the query did not block"
    assert (after, same) == (before, index)
    async with httpx.AsyncClient(base_url=registry.url) as http:
        response = await http.get("/v1/services/cart", params={"index": str(index), "wait": "100ms"})
    assert response.headers["X-Registry-Index"] == str(index)
    assert response.json()["service"] == "cart" and response.json()["index"] == index


def _body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "address": "127.0.0.1",
        "ports": {"grpc": 50051, "metrics": 9100},
        "metadata": {"pid": "1", "started_at": "now", "version": "1"},
        "ttl": "10s",
    }
    for key, value in changes.items():
        if value is None:
            body.pop(key)
        else:
            body[key] = value
    return body


PUT = "/v1/services/cart/instances/cart-1"
BAD_REQUESTS: list[tuple[str, str, Any, str]] = [
    ("PUT", PUT, b"{not json", "malformed JSON"),
    ("PUT", PUT, b"\xff\xfe", "malformed JSON"),
    ("PUT", PUT, b"[" * 5000 + b"]" * 5000, "malformed JSON"),
    ("PUT", PUT, b'{"address": "127.0.0.1", "ports": {"grpc": 1}, "ttl": NaN}', "malformed JSON"),
    ("PUT", PUT, [], "JSON object"),
    ("PUT", PUT, _body(address=None), "address"),
    ("PUT", PUT, _body(ports=None), "ports"),
    ("PUT", PUT, _body(ttl=None), "ttl"),
    ("PUT", PUT, _body(address=127001), "address"),
    ("PUT", PUT, _body(address="bad host!"), "address"),
    ("PUT", PUT, _body(ports="50051"), "ports"),
    ("PUT", PUT, _body(ports={}), "ports"),
    ("PUT", PUT, _body(ports={"grpc": "50051"}), "integer"),
    ("PUT", PUT, _body(ports={"grpc": True}), "integer"),
    ("PUT", PUT, _body(ports={"grpc": 0}), "between 1 and 65535"),
    ("PUT", PUT, _body(ports={"grpc": 65536}), "between 1 and 65535"),
    ("PUT", PUT, _body(metadata={"pid": 1}), "metadata"),
    ("PUT", PUT, _body(metadata=["pid"]), "metadata"),
    ("PUT", PUT, _body(ttl="soon"), "ttl"),
    ("PUT", PUT, _body(ttl="500ms"), "ttl must be between"),
    ("PUT", PUT, _body(ttl=7200), "ttl must be between"),
    ("PUT", PUT, _body(ttl=True), "ttl"),
    ("PUT", PUT, _body(tll="10s"), "unknown field"),
    ("PUT", PUT, _body(service="ads"), "differs"),
    ("PUT", PUT, _body(check={"type": "tcp", "port": "grpc"}), "check type"),
    ("PUT", PUT, _body(check={"type": "http", "port": "admin"}), "check port"),
    ("PUT", PUT, _body(check={"type": "http", "port": "metrics", "interval": "1ms"}), "interval"),
    ("PUT", PUT, _body(check={"type": "http", "port": "metrics", "path": "healthz"}), "path"),
    ("PUT", PUT, _body(check="grpc"), "check"),
    ("PUT", PUT, b'{"pad": "' + b"x" * 70_000 + b'"}', "larger than 64 KiB"),
    ("PUT", "/v1/services/-cart/instances/cart-1", _body(), "service"),
    ("PUT", "/v1/services/cart/instances/bad%20id", _body(), "instance id"),
    ("PUT", f"/v1/services/cart/instances/{'x' * 129}", _body(), "instance id"),
    ("DELETE", "/v1/services/cart/instances/.hidden", None, "instance id"),
    ("GET", "/v1/services/cart?index=abc", None, "index"),
    ("GET", "/v1/services/cart?index=-1", None, "index"),
    ("GET", "/v1/services/cart?index=1&wait=forever", None, "wait"),
    ("GET", "/v1/services/cart?status=sick", None, "status"),
    ("GET", "/v1/services/c@rt", None, "service"),
]


async def test_every_kind_of_bad_input_is_a_400_with_a_reason(
    registry: RegistryServer, client: RegistryClient
) -> None:
    async with httpx.AsyncClient(base_url=registry.url) as http:
        for method, path, body, reason in BAD_REQUESTS:
            content = body if isinstance(body, bytes) or body is None else None
            payload = None if content is not None or body is None else body
            response = await http.request(method, path, content=content, json=payload)
            assert response.status_code == 400, (method, path, body, response.text)
            assert reason in response.json()["error"], (path, body, response.json())
        for method, path in [("GET", "/v2/anything"), ("GET", "/v1/services/cart/instances/x/y")]:
            response = await http.request(method, path)
            assert response.status_code == 404 and response.json() == {"error": "not found"}
        response = await http.post("/v1/health")
        assert response.status_code == 405 and "error" in response.json()
    assert await client.health() == {"status": "ok", "services": 0, "instances": 0}
    await client.register(make_instance(), ttl=10)
    assert [i.id for i in (await client.instances("cart"))[0]] == ["cart-1"]


async def test_client_error_carries_the_servers_reason(client: RegistryClient) -> None:
    with pytest.raises(RegistryError) as excinfo:
        await client.register(make_instance(), ttl=0.1)
    assert excinfo.value.status == 400 and "ttl must be between" in excinfo.value.reason
    async with RegistryClient("http://127.0.0.1:1") as nowhere:
        with pytest.raises(RegistryError) as unreachable:
            await nowhere.services()
    assert unreachable.value.status is None and "unreachable" in unreachable.value.reason


async def test_a_client_leaving_a_blocking_query_leaks_nothing(
    registry: RegistryServer, client: RegistryClient
) -> None:
    _, index = await client.instances("cart")
    for _ in range(3):
        query = asyncio.create_task(client.instances("cart", index, wait=60))
        await wait_until(lambda: registry.state.waiting("cart") == 1)
        query.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await query
        await wait_until(lambda: registry.state.waiting() == 0)
    assert (await client.health())["status"] == "ok"
    query = asyncio.create_task(client.instances("cart", index, wait=60))
    await wait_until(lambda: registry.state.waiting("cart") == 1)
    await client.register(make_instance(), ttl=10)
    instances, _ = await asyncio.wait_for(query, 30)
    assert [i.id for i in instances] == ["cart-1"]


# ---- active health checks ------------------------------------------------------------------------


class TinyHealthEndpoint:
    """A minimal HTTP server whose every answer has the status code the test sets."""

    def __init__(self) -> None:
        self.code = 200
        self.hits = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            self.hits += request.startswith(b"GET /healthz ")
            reason = "OK" if self.code == 200 else "Unavailable"
            writer.write(
                f"HTTP/1.1 {self.code} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_http_check_marks_critical_and_passing_again(
    registry: RegistryServer, client: RegistryClient
) -> None:
    endpoint = TinyHealthEndpoint()
    port = await endpoint.start()
    try:
        check = {"type": "http", "port": "metrics", "path": "/healthz", "interval": "500ms"}
        await client.register(make_instance(grpc=50051, metrics=port), ttl=60, check=check)
        await wait_until(lambda: endpoint.hits >= 1)
        assert [i.status for i in (await client.instances("cart"))[0]] == [PASSING]
        endpoint.code = 503
        await wait_for_status(client, "cart", "cart-1", CRITICAL)
        assert (await client.instances("cart"))[0] == [], "a critical instance is not handed out"
        endpoint.code = 200
        await wait_for_status(client, "cart", "cart-1", PASSING)
        task = registry.checks.tracked()[("cart", "cart-1")]
        await client.deregister("cart", "cart-1")
        assert registry.checks.tracked() == {}
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)
        assert task.done()
    finally:
        await endpoint.stop()


async def test_grpc_check_marks_critical_and_passing_again(
    registry: RegistryServer, client: RegistryClient
) -> None:
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        check = {"type": "grpc", "port": "grpc", "interval": 0.5}
        await client.register(make_instance(grpc=port), ttl=60, check=check)
        assert ("cart", "cart-1") in registry.checks.tracked()
        await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await wait_for_status(client, "cart", "cart-1", CRITICAL)
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        await wait_for_status(client, "cart", "cart-1", PASSING)
        await server.stop(None)
        await wait_for_status(client, "cart", "cart-1", CRITICAL)
    finally:
        await server.stop(None)


# ---- auth, ports and restarts --------------------------------------------------------------------


async def test_token_is_required_when_set() -> None:
    server = RegistryServer(port=0, token="s3cret")
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            assert (await http.get("/v1/health")).status_code == 401
            wrong = await http.get("/v1/health", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401 and "token" in wrong.json()["error"]
            right = await http.get("/v1/health", headers={"Authorization": "Bearer s3cret"})
            assert right.status_code == 200
        async with RegistryClient(server.url) as anonymous:
            with pytest.raises(RegistryError) as excinfo:
                await anonymous.register(make_instance(), ttl=10)
            assert excinfo.value.status == 401
        async with RegistryClient(server.url, token="s3cret") as trusted:
            await trusted.register(make_instance(), ttl=10)
            assert list(await trusted.services()) == ["cart"]
    finally:
        await server.stop()


async def test_refuses_to_serve_off_loopback_without_a_token() -> None:
    with pytest.raises(ValueError, match="token"):
        RegistryServer(host="0.0.0.0", port=0)
    with pytest.raises(ValueError, match="token"):
        await serve_registry("0.0.0.0", 0)
    RegistryServer(host="0.0.0.0", port=0, token="s3cret")  # allowed (not started)
    RegistryServer(host="localhost", port=0)


async def test_busy_port_is_a_clear_oserror(registry: RegistryServer) -> None:
    with pytest.raises(OSError, match=f"127.0.0.1:{registry.port}.*port busy"):
        await RegistryServer(port=registry.port).start()
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{registry.url}/v1/health")).status_code == 200


async def test_keep_registered_re_registers_after_a_registry_restart() -> None:
    first = RegistryServer(port=0)
    port = await first.start()
    second: RegistryServer | None = None
    async with RegistryClient(first.url) as client:
        keepalive = client.keep_registered(make_instance(), ttl=1)
        try:
            assert await keepalive.wait_registered(10)
            before = await client.instances("cart")
            pending = asyncio.create_task(client.instances("cart", before[1], wait=60))
            await wait_until(lambda: first.state.waiting("cart") == 1)
            await first.stop()
            # Shutting down answers pending blocking queries rather than cutting them off.
            assert await asyncio.wait_for(pending, 10) == before
            await wait_until(lambda: keepalive.failures >= 2)  # it keeps trying while the registry is down
            second = RegistryServer(port=port)
            await second.start()
            assert second.state.counts() == (0, 0)
            await wait_for_status(client, "cart", "cart-1", PASSING)
            assert keepalive.registrations >= 2
            await wait_until(lambda: keepalive.failures == 0)
        finally:
            await keepalive.stop(deregister=True)
        try:
            assert await client.services() == {}
        finally:
            if second is not None:
                await second.stop()


async def test_serve_registry_serves_until_cancelled_and_frees_its_port() -> None:
    probe = RegistryServer(port=0)
    port = await probe.start()
    await probe.stop()
    serving = asyncio.create_task(serve_registry("127.0.0.1", port))
    async with RegistryClient(f"http://127.0.0.1:{port}") as client:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while True:
            try:
                assert (await client.health())["status"] == "ok"
                break
            except RegistryError:
                assert loop.time() < deadline, "serve_registry never answered"
                await asyncio.sleep(0.05)
        await client.register(make_instance(), ttl=10)
    serving.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await serving
    again = RegistryServer(port=port)
    assert await again.start() == port, "the port was not released"
    await again.stop()
