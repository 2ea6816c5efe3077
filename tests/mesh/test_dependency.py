"""The integrated dependency client against real grpc.aio and HTTP servers on loopback.

Every instance is a real server whose behaviour the test steers (answer, fail UNAVAILABLE, fail with
the caller's error, hang) and whose calls it counts; each answer names the instance that served it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from boutique.asgi_server import BackgroundServer
from boutique.mesh import GrpcServer, ProcessInfo, ServiceBinding, deadline
from boutique.mesh.dependency import CallPolicy
from boutique.mesh.discovery import Resolver
from boutique.mesh.errors import SERVED_BY, SHED, BulkheadFull, CircuitOpen, NoInstances
from boutique.mesh.grpc_client import GrpcDependency
from boutique.mesh.http_client import HttpDependency, ServerError
from boutique.mesh.instance import Instance
from boutique.mesh.resilience import BreakerConfig, BreakerState, RetryBudget
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.proto import demo_pb2_grpc
from tests.support import wait_until

SERVICE_DESCRIPTOR = pb.DESCRIPTOR.services_by_name["ProductCatalogService"]
STUB = demo_pb2_grpc.ProductCatalogServiceStub
_names = itertools.count()


def unique(prefix: str) -> str:
    """A dependency name no other test uses, so process-wide metrics start from zero for it."""
    return f"{prefix}-{next(_names)}-{time.monotonic_ns() % 1_000_000}"


def sample(name: str, **labels: str) -> float:
    """The current value of one Prometheus sample (0 when it was never set)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


# ---- controllable instances ---------------------------------------------------------------------


class Controllable:
    """A ProductCatalogService instance the test steers: mode ok | unavailable | internal | invalid | hang."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self.mode = "ok"
        self.calls = 0
        self.in_flight = 0
        self.cancelled = 0
        self.release = asyncio.Event()

    async def GetProduct(
        self, request: pb.GetProductRequest, context: grpc.aio.ServicerContext
    ) -> pb.Product:
        """Count the call, then behave as the mode says; the answer names this instance."""
        self.calls += 1
        self.in_flight += 1
        try:
            if self.mode == "unavailable":
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.instance_id} is unavailable")
            if self.mode == "internal":
                await context.abort(grpc.StatusCode.INTERNAL, f"{self.instance_id} broke")
            if self.mode == "invalid":
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad product id {request.id!r}")
            if self.mode == "hang":
                await self.release.wait()
            return pb.Product(id=request.id, name=self.instance_id)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1

    async def ListProducts(
        self, request: pb.Empty, context: grpc.aio.ServicerContext
    ) -> pb.ListProductsResponse:
        """Unused by the tests; the service descriptor needs it."""
        return pb.ListProductsResponse()

    async def SearchProducts(
        self, request: pb.SearchProductsRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchProductsResponse:
        """Unused by the tests; the service descriptor needs it."""
        return pb.SearchProductsResponse()


@dataclass
class Backend:
    """One running instance: its server, servicer and how discovery describes it."""

    server: GrpcServer
    servicer: Controllable
    port: int

    @property
    def id(self) -> str:
        """The instance id (also what its answers carry in `name`)."""
        return self.servicer.instance_id

    @property
    def instance(self) -> Instance:
        """The discovery entry for this instance."""
        return Instance("catalog", self.id, "127.0.0.1", {"grpc": self.port})


Start = Callable[..., Awaitable[list[Backend]]]


@pytest.fixture
async def start_backends() -> AsyncIterator[Start]:
    """Start controllable instances on free loopback ports; stops them all after the test."""
    started: list[Backend] = []

    async def start(*ids: str) -> list[Backend]:
        backends = []
        for instance_id in ids:
            servicer = Controllable(instance_id)
            server = GrpcServer(
                ProcessInfo("catalog", instance_id), [ServiceBinding(SERVICE_DESCRIPTOR, servicer)], grace=0.2
            )
            backend = Backend(server, servicer, await server.start())
            started.append(backend)
            backends.append(backend)
        return backends

    yield start
    for backend in started:
        backend.servicer.release.set()
        await backend.server.stop()


class ManualResolver(Resolver):
    """Discovery the test drives: every `publish` is the next full instance set a watch yields."""

    def __init__(self, instances: Iterable[Instance] | None = None) -> None:
        super().__init__()
        self._sets: asyncio.Queue[list[Instance]] = asyncio.Queue()
        if instances is not None:
            self.publish(instances)

    def publish(self, instances: Iterable[Instance]) -> None:
        """Offer the next instance set."""
        self._sets.put_nowait(list(instances))

    async def watch(self, service: str) -> AsyncIterator[list[Instance]]:
        """Yield each published set until closed."""
        while not self.closed:
            yield await self._sets.get()


@pytest.fixture
async def dependencies() -> AsyncIterator[list[Any]]:
    """Dependencies a test builds; all closed afterwards."""
    made: list[Any] = []
    yield made
    for dependency in made:
        await dependency.close()


def grpc_dependency(
    made: list[Any], backends: Iterable[Backend], name: str = "", **policy: Any
) -> tuple[GrpcDependency, ManualResolver]:
    """A GrpcDependency on the backends (no breaker unless the policy names one)."""
    policy.setdefault("breaker", None)
    resolver = ManualResolver([b.instance for b in backends])
    dependency = GrpcDependency(
        name or unique("catalog"), resolver, STUB, CallPolicy(**policy), caller="test"
    )
    made.append(dependency)
    return dependency, resolver


def request(product: str = "OLJCESPC7Z") -> pb.GetProductRequest:
    """A GetProduct request."""
    return pb.GetProductRequest(id=product)


# ---- the servers themselves ----------------------------------------------------------------------


async def test_instances_name_themselves_in_the_served_by_trailer(start_backends: Start) -> None:
    (backend,) = await start_backends("a")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{backend.port}") as channel:
        call = STUB(channel).GetProduct(request())
        assert (await call).name == "a"
        assert (SERVED_BY, "a") in tuple(await call.trailing_metadata())


# ---- retries -----------------------------------------------------------------------------------------


async def test_idempotent_call_is_retried_on_another_instance(
    start_backends: Start, dependencies: list[Any]
) -> None:
    down, up = await start_backends("down", "up")
    down.servicer.mode = "unavailable"
    dependency, _ = grpc_dependency(dependencies, [down, up])  # least_request: random first picks
    dependency.detector.consecutive_failures = 10**6  # keep the failing instance in rotation

    for n in range(1, 21):
        tries_before = down.servicer.calls
        answer = await dependency.call("GetProduct", request(), idempotent=True)
        assert answer.name == "up"
        assert down.servicer.calls - tries_before <= 1, "a retry went back to the instance that failed"
        assert up.servicer.calls == n

    assert down.servicer.calls >= 1, "no first try ever went to the failing instance"
    retries = sample("boutique_mesh_client_retries_total", dependency=dependency.name, method="GetProduct")
    assert retries == down.servicer.calls


async def test_non_idempotent_call_is_not_retried(start_backends: Start, dependencies: list[Any]) -> None:
    down, up = await start_backends("down", "up")
    down.servicer.mode = "unavailable"
    dependency, _ = grpc_dependency(dependencies, [down, up], balancer="round_robin")

    successes = 0
    for _ in range(4):
        try:
            answer = await dependency.call("GetProduct", request(), idempotent=False)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() is grpc.StatusCode.UNAVAILABLE
            break
        assert answer.name == "up"
        successes += 1
    else:
        pytest.fail("no call ever reached the failing instance")

    assert down.servicer.calls == 1
    assert up.servicer.calls == successes, "the failed call was sent again to the healthy instance"


async def test_retry_budget_stops_retries_when_every_instance_fails(
    start_backends: Start, dependencies: list[Any]
) -> None:
    backends = await start_backends("a", "b")
    for backend in backends:
        backend.servicer.mode = "unavailable"
    dependency, _ = grpc_dependency(dependencies, backends, max_attempts=3, backoff_base=0.001)
    frozen = 100.0  # a clock that never moves: nothing leaves the budget's window during the test
    dependency.budget = RetryBudget(ratio=0.0, min_per_second=0.2, window_seconds=10.0, clock=lambda: frozen)
    assert dependency.budget.balance == pytest.approx(2.0)

    for _ in range(5):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await dependency.call("GetProduct", request(), idempotent=True)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE

    attempts = sum(b.servicer.calls for b in backends)
    # first call: 3 attempts (two retries, which is the whole budget); the other four: 1 attempt each
    assert attempts == 3 + 4, f"{attempts} attempts: retries did not stop when the budget ran out"
    assert sample("boutique_mesh_retry_budget_exhausted_total", dependency=dependency.name) == 4


# ---- outlier ejection ----------------------------------------------------------------------------


async def test_killed_instance_is_ejected_and_then_avoided(
    start_backends: Start, dependencies: list[Any]
) -> None:
    doomed, survivor = await start_backends("doomed", "survivor")
    dependency, _ = grpc_dependency(dependencies, [doomed, survivor], balancer="round_robin")
    dependency.detector.base_ejection = dependency.detector.max_ejection = 120.0  # outlasts the test
    for _ in range(4):  # both channels connected and used
        await dependency.call("GetProduct", request(), idempotent=True)
    assert doomed.servicer.calls >= 1 and survivor.servicer.calls >= 1
    ejections_before = sample("boutique_mesh_ejections_total", dependency=dependency.name)

    await doomed.server.stop()

    for _ in range(8):  # connection failures on the dead one are retried on the survivor
        answer = await dependency.call("GetProduct", request(), idempotent=True)
        assert answer.name == "survivor"
    status = {i["id"]: i for i in dependency.snapshot()["instances"]}
    assert status["doomed"]["ejected"] is True
    assert status["survivor"]["ejected"] is False
    assert sample("boutique_mesh_ejections_total", dependency=dependency.name) == ejections_before + 1

    doomed_endpoint = next(e for e in dependency.balancer.endpoints if e.id == "doomed")
    tries_on_doomed = doomed_endpoint.requests
    served_before = survivor.servicer.calls
    for _ in range(10):
        answer = await dependency.call("GetProduct", request(), idempotent=False)
        assert answer.name == "survivor"
    assert doomed_endpoint.requests == tries_on_doomed, "calls still went to the ejected instance"
    assert survivor.servicer.calls == served_before + 10


# ---- deadlines -----------------------------------------------------------------------------------


@dataclass
class Front:
    """A serving handler that calls the dependency while it serves; records how the outgoing call ended."""

    dependency: GrpcDependency
    incoming_remaining: list[float | None] = field(default_factory=list)
    outcome: asyncio.Future[tuple[BaseException | None, float]] | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    async def GetProduct(
        self, request: pb.GetProductRequest, context: grpc.aio.ServicerContext
    ) -> pb.Product:
        """Make the outgoing call in a shielded task, so only the deadline (not our cancellation) ends it."""
        self.incoming_remaining.append(deadline.remaining())
        task = asyncio.create_task(self._outgoing(request))  # copies the context, deadline included
        self.tasks.append(task)
        return await asyncio.shield(task)

    async def _outgoing(self, request: pb.GetProductRequest) -> pb.Product:
        began = time.monotonic()
        assert self.outcome is not None
        try:
            answer = await self.dependency.call("GetProduct", request, idempotent=True)
        except BaseException as exc:
            self.outcome.set_result((exc, time.monotonic() - began))
            raise
        self.outcome.set_result((None, time.monotonic() - began))
        return answer

    async def ListProducts(
        self, request: pb.Empty, context: grpc.aio.ServicerContext
    ) -> pb.ListProductsResponse:
        """Unused."""
        return pb.ListProductsResponse()

    async def SearchProducts(
        self, request: pb.SearchProductsRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchProductsResponse:
        """Unused."""
        return pb.SearchProductsResponse()


async def test_incoming_deadline_bounds_the_outgoing_call(
    start_backends: Start, dependencies: list[Any]
) -> None:
    policy_timeout = 60.0
    incoming_deadline = 1.0
    (hanging,) = await start_backends("hanging")
    hanging.servicer.mode = "hang"
    dependency, _ = grpc_dependency(dependencies, [hanging], timeout=policy_timeout)
    front = Front(dependency, outcome=asyncio.get_running_loop().create_future())
    front_server = GrpcServer(
        ProcessInfo("front", "front-1"), [ServiceBinding(SERVICE_DESCRIPTOR, front)], grace=0.2
    )
    port = await front_server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await STUB(channel).GetProduct(request(), timeout=incoming_deadline)
        assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED

        # Without propagation the outgoing call would run for the policy's 60 s and this would time out.
        error, took = await asyncio.wait_for(front.outcome, policy_timeout / 3)
    finally:
        hanging.servicer.release.set()
        await asyncio.gather(*front.tasks, return_exceptions=True)
        await front_server.stop()

    (remaining,) = front.incoming_remaining
    assert remaining is not None and 0 < remaining <= incoming_deadline * 1.5  # grpc-timeout rounds up
    assert isinstance(error, grpc.aio.AioRpcError), f"outgoing call ended with {error!r}"
    assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert took < policy_timeout / 3
    assert hanging.servicer.calls >= 1


async def test_explicit_timeout_cannot_outlive_the_incoming_deadline() -> None:
    with deadline.deadline_in(0.5):
        assert deadline.bound(30.0) <= 0.5
        with deadline.deadline_in(10.0):  # a nested, longer deadline never extends the outer one
            left = deadline.remaining()
            assert left is not None and left <= 0.5
    assert deadline.remaining() is None
    assert deadline.bound(30.0) == 30.0


# ---- circuit breaker and fallbacks -----------------------------------------------------------------

TRIPPY = BreakerConfig(window_size=4, minimum_calls=4, failure_rate_threshold=0.5, wait_open=60.0)


async def test_breaker_opens_then_fails_fast_without_the_network(
    start_backends: Start, dependencies: list[Any]
) -> None:
    (backend,) = await start_backends("flaky")
    backend.servicer.mode = "unavailable"
    dependency, _ = grpc_dependency(dependencies, [backend], breaker=TRIPPY)
    assert dependency.breaker is not None
    gauge = {"breaker": dependency.breaker.name}

    for _ in range(4):
        with pytest.raises(grpc.aio.AioRpcError):
            await dependency.call("GetProduct", request())
    assert dependency.breaker.state is BreakerState.OPEN
    assert sample("boutique_mesh_breaker_state", **gauge) == 1
    assert backend.servicer.calls == 4

    for _ in range(3):
        with pytest.raises(CircuitOpen):
            await dependency.call("GetProduct", request(), idempotent=True)
    assert backend.servicer.calls == 4, "an open breaker let a call through to the server"

    fallbacks = sample("boutique_mesh_fallbacks_total", dependency=dependency.name)
    reasons: list[BaseException] = []

    def featured(exc: BaseException) -> pb.Product:
        reasons.append(exc)
        return pb.Product(id="featured", name="fallback")

    answer = await dependency.call("GetProduct", request(), idempotent=True, fallback=featured)
    assert answer.name == "fallback"
    assert isinstance(reasons[0], CircuitOpen)
    assert sample("boutique_mesh_fallbacks_total", dependency=dependency.name) == fallbacks + 1
    assert backend.servicer.calls == 4
    snapshot = dependency.breaker.snapshot()
    assert snapshot["rollingCountShortCircuited"] == 4
    assert snapshot["rollingCountFallbackSuccess"] == 1


async def test_an_open_breaker_lets_a_dependency_that_answers_health_checks_in_early(
    start_backends: Start, dependencies: list[Any]
) -> None:
    (backend,) = await start_backends("flaky")
    backend.servicer.mode = "unavailable"
    dependency, _ = grpc_dependency(dependencies, [backend], breaker=TRIPPY)  # open for 60 s
    for _ in range(4):
        with pytest.raises(grpc.aio.AioRpcError):
            await dependency.call("GetProduct", request())
    assert dependency.breaker is not None and dependency.breaker.state is BreakerState.OPEN
    backend.servicer.mode = "ok"

    answers: list[pb.Product] = []

    async def answered() -> bool:
        with contextlib.suppress(CircuitOpen):
            answers.append(await dependency.call("GetProduct", request()))
        return bool(answers)

    give_up = time.monotonic() + 20  # a third of the open wait: only the health probe can cut it short
    while not await answered():
        assert time.monotonic() < give_up, "the breaker sat out its wait: no health probe let calls in"
        await asyncio.sleep(0.05)
    assert answers[0].name == "flaky"
    assert dependency.breaker.state is not BreakerState.OPEN


async def test_async_fallback_answers_a_failing_call(start_backends: Start, dependencies: list[Any]) -> None:
    (backend,) = await start_backends("broken")
    backend.servicer.mode = "internal"
    dependency, _ = grpc_dependency(dependencies, [backend])

    async def house_ad(exc: BaseException) -> pb.Product:
        assert isinstance(exc, grpc.aio.AioRpcError) and exc.code() is grpc.StatusCode.INTERNAL
        return pb.Product(id="house", name="fallback")

    answer = await dependency.call("GetProduct", request(), idempotent=True, fallback=house_ad)
    assert answer.name == "fallback"
    assert backend.servicer.calls == 1, "a server fault (not transient) was retried"
    assert sample("boutique_mesh_fallbacks_total", dependency=dependency.name) == 1


async def test_caller_errors_never_trip_the_breaker_nor_use_the_fallback(
    start_backends: Start, dependencies: list[Any]
) -> None:
    (backend,) = await start_backends("strict")
    backend.servicer.mode = "invalid"
    dependency, _ = grpc_dependency(dependencies, [backend], breaker=TRIPPY)
    assert dependency.breaker is not None
    used: list[BaseException] = []

    def fallback(exc: BaseException) -> pb.Product:
        used.append(exc)
        return pb.Product(name="fallback")

    for _ in range(12):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await dependency.call("GetProduct", request("nope"), idempotent=True, fallback=fallback)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT

    assert dependency.breaker.state is BreakerState.CLOSED
    assert used == []
    assert sample("boutique_mesh_fallbacks_total", dependency=dependency.name) == 0
    assert backend.servicer.calls == 12, "a caller error was retried"
    assert dependency.snapshot()["instances"][0]["consecutive_failures"] == 0


# ---- membership ---------------------------------------------------------------------------------


def record_closes(dependency: Any, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Make the dependency's connector note every connection it closes; returns that list."""
    closed: list[Any] = []
    close = dependency.connector.close

    async def recording_close(conn: Any) -> None:
        closed.append(conn)
        await close(conn)

    monkeypatch.setattr(dependency.connector, "close", recording_close)
    return closed


async def test_membership_update_keeps_in_flight_calls(
    start_backends: Start, dependencies: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    leaving, staying = await start_backends("leaving", "staying")
    leaving.servicer.mode = "hang"
    dependency, resolver = grpc_dependency(dependencies, [leaving])
    closed = record_closes(dependency, monkeypatch)

    in_flight = asyncio.create_task(dependency.call("GetProduct", request(), idempotent=True, timeout=30.0))
    await wait_until(lambda: leaving.servicer.in_flight == 1)
    (leaving_conn,) = dependency.connections()

    resolver.publish([staying.instance])
    await wait_until(lambda: [i.id for i in dependency.instances] == ["staying"])
    for _ in range(3):
        assert (await dependency.call("GetProduct", request())).name == "staying"
    assert not in_flight.done()
    await asyncio.sleep(0.3)  # several of the retirer's polls: it must wait for the call
    assert closed == [], "the departed instance's channel was closed under an in-flight call"

    leaving.servicer.release.set()
    answer = await asyncio.wait_for(in_flight, 10)
    assert answer.name == "leaving"
    assert leaving.servicer.calls == 1 and leaving.servicer.cancelled == 0
    await wait_until(lambda: closed == [leaving_conn])
    assert leaving_conn[0].get_state() is grpc.ChannelConnectivity.SHUTDOWN


async def test_close_releases_a_channel_still_being_retired(
    start_backends: Start, dependencies: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    leaving, staying = await start_backends("leaving", "staying")
    leaving.servicer.mode = "hang"
    dependency, resolver = grpc_dependency(dependencies, [leaving])
    closed = record_closes(dependency, monkeypatch)
    in_flight = asyncio.create_task(dependency.call("GetProduct", request(), timeout=30.0))
    await wait_until(lambda: leaving.servicer.in_flight == 1)
    (leaving_conn,) = dependency.connections()
    resolver.publish([staying.instance])
    await wait_until(lambda: [i.id for i in dependency.instances] == ["staying"])
    (staying_conn,) = dependency.connections()

    await dependency.close()

    assert {id(c) for c in closed} == {id(leaving_conn), id(staying_conn)}
    with pytest.raises((grpc.aio.AioRpcError, asyncio.CancelledError)):  # grpc cancels calls on close
        await asyncio.wait_for(in_flight, 10)


async def test_empty_instance_set_is_no_instances(dependencies: list[Any]) -> None:
    dependency, _ = grpc_dependency(dependencies, [])
    with pytest.raises(NoInstances):
        await dependency.call("GetProduct", request(), idempotent=True)
    answer = await dependency.call("GetProduct", request(), fallback=lambda exc: pb.Product(name="fallback"))
    assert answer.name == "fallback"
    assert (
        sample(
            "boutique_mesh_client_calls_total",
            dependency=dependency.name,
            method="GetProduct",
            outcome="no_instances",
        )
        == 2
    )


async def test_full_bulkhead_refuses_at_once(start_backends: Start, dependencies: list[Any]) -> None:
    (slow,) = await start_backends("slow")
    slow.servicer.mode = "hang"
    dependency, _ = grpc_dependency(dependencies, [slow], max_concurrent=1)

    first = asyncio.create_task(dependency.call("GetProduct", request(), timeout=30.0))
    await wait_until(lambda: slow.servicer.in_flight == 1)
    with pytest.raises(BulkheadFull):
        await dependency.call("GetProduct", request(), idempotent=True)
    assert slow.servicer.calls == 1

    slow.servicer.release.set()
    assert (await asyncio.wait_for(first, 10)).name == "slow"
    assert (await dependency.call("GetProduct", request())).name == "slow"  # the slot came back


# ---- HTTP ----------------------------------------------------------------------------------------


@dataclass
class HttpInstance:
    """A small real HTTP server that answers 503 (down, or shed with the shed marker) or 200 naming
    itself, and counts by method."""

    instance_id: str
    down: bool = False
    shed: bool = False
    calls: dict[str, int] = field(default_factory=dict)
    server: BackgroundServer | None = None
    port: int = 0

    def app(self) -> Starlette:
        """The instance's one route."""

        async def item(request: Request) -> Response:
            self.calls[request.method] = self.calls.get(request.method, 0) + 1
            if self.down:
                return PlainTextResponse("down", status_code=503)
            if self.shed:  # as a concurrency limiter refuses a request before doing any work
                return PlainTextResponse("busy", status_code=503, headers={SHED: "concurrency-limit"})
            return PlainTextResponse(self.instance_id)

        return Starlette(routes=[Route("/item", item, methods=["GET", "POST"])])

    @property
    def instance(self) -> Instance:
        """The discovery entry (an "http" port)."""
        return Instance("web", self.instance_id, "127.0.0.1", {"http": self.port})


@contextlib.asynccontextmanager
async def serving(
    first: HttpInstance, second: HttpInstance
) -> AsyncIterator[tuple[HttpInstance, HttpInstance]]:
    """Both instances serving on loopback for the block."""
    pair = (first, second)
    for instance in pair:
        instance.server = BackgroundServer(instance.app(), "127.0.0.1", 0)
        instance.port = await instance.server.start()
    try:
        yield pair
    finally:
        for instance in pair:
            assert instance.server is not None
            await instance.server.stop()


@pytest.fixture
async def http_pair() -> AsyncIterator[tuple[HttpInstance, HttpInstance]]:
    """One instance answering 503 and one healthy, both serving on loopback."""
    async with serving(HttpInstance("down", down=True), HttpInstance("up")) as pair:
        yield pair


def http_dependency(made: list[Any], instances: Iterable[HttpInstance], **policy: Any) -> HttpDependency:
    """An HttpDependency over the instances, balanced round robin, no breaker unless the policy names one."""
    policy.setdefault("balancer", "round_robin")
    policy.setdefault("breaker", None)
    resolver = ManualResolver([i.instance for i in instances])
    dependency = HttpDependency(unique("web"), resolver, CallPolicy(**policy))
    made.append(dependency)
    return dependency


async def test_http_get_is_retried_on_another_instance_after_503(
    http_pair: tuple[HttpInstance, HttpInstance], dependencies: list[Any]
) -> None:
    down, up = http_pair
    dependency = http_dependency(dependencies, http_pair)
    for _ in range(4):
        response = await dependency.request("GET", "/item")
        assert response.status_code == 200 and response.text == "up"
    assert down.calls.get("GET", 0) >= 1
    assert up.calls["GET"] == 4


async def test_http_post_is_not_retried(
    http_pair: tuple[HttpInstance, HttpInstance], dependencies: list[Any]
) -> None:
    down, up = http_pair
    dependency = http_dependency(dependencies, http_pair)
    successes = 0
    for _ in range(4):
        try:
            response = await dependency.request("POST", "/item", json={"n": 1})
        except ServerError as exc:
            assert exc.response.status_code == 503
            break
        assert response.text == "up"
        successes += 1
    else:
        pytest.fail("no POST ever reached the failing instance")
    assert down.calls["POST"] == 1
    assert up.calls.get("POST", 0) == successes, "the failed POST was sent again"


async def test_http_shed_answers_are_retried_elsewhere_and_blame_no_one(dependencies: list[Any]) -> None:
    async with serving(HttpInstance("busy", shed=True), HttpInstance("free")) as (busy, free):
        dependency = http_dependency(dependencies, (busy, free), breaker=BreakerConfig(minimum_calls=2))
        for _ in range(6):
            response = await dependency.request("GET", "/item")
            assert response.status_code == 200 and response.text == "free"
        assert busy.calls["GET"] >= 1
        for _ in range(4):  # not idempotent: the shed answer reaches the caller
            try:
                await dependency.request("POST", "/item")
            except ServerError as exc:
                assert exc.response.status_code == 503
                break
        else:
            pytest.fail("no POST ever reached the shedding instance")

    assert dependency.detector.ejections_total == 0
    assert all(e.consecutive_failures == 0 for e in dependency.balancer.endpoints)
    assert dependency.breaker is not None and dependency.breaker.snapshot()["rollingCountFailure"] == 0
    labels = {"dependency": dependency.name, "method": "POST", "outcome": "overloaded"}
    assert sample("boutique_mesh_client_calls_total", **labels) == 1
    retries = sample("boutique_mesh_client_retries_total", dependency=dependency.name, method="GET")
    assert retries == busy.calls["GET"]
