"""Faults the flag file injects into the mesh, against real gRPC and HTTP servers on loopback.

Each test writes a real flag file that the process's OpenFeature provider watches, then calls through
the mesh: an abort fails the call unsent on the edge it targets and counts as a real answer would, a
delay uses up the deadline, a percentage splits traces, and a gray replica answers late.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from boutique.asgi_server import BackgroundServer
from boutique.flags import FlagFile, shipped
from boutique.mesh import GrpcServer, ProcessInfo, ServiceBinding, failure_of
from boutique.mesh.calls.outcome import CallStatus, status_of_error
from boutique.mesh.dependency import CallPolicy, Dependency
from boutique.mesh.discovery import Resolver
from boutique.mesh.discovery.static import StaticResolver
from boutique.mesh.errors import SERVED_BY, CircuitOpen, InjectedFault
from boutique.mesh.faults import (
    CALL_FAULT,
    GRAY_REPLICA,
    INJECTED,
    REASON,
    armed,
    can_fire,
    parse_call_fault,
    rule_answers,
)
from boutique.mesh.flags import FLAG_KEY, flags, install_flags
from boutique.mesh.grpc_client import GrpcDependency
from boutique.mesh.http_client import HttpDependency, ServerError
from boutique.mesh.instance import Instance
from boutique.mesh.resilience import BreakerConfig
from boutique.mesh.settings import FlagSettings
from boutique.mesh.tracing import sdk_installed
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.proto import demo_pb2_grpc
from tests.support import wait_until

CATALOG = pb.DESCRIPTOR.services_by_name["ProductCatalogService"]
STUB = demo_pb2_grpc.ProductCatalogServiceStub
tracer = TracerProvider().get_tracer("test")  # spans made current here, never exported


# ---- what the document arms -------------------------------------------------------------------------


def test_the_shipped_flags_arm_no_fault() -> None:
    document = shipped()["flags"]
    assert not can_fire(document[CALL_FAULT])
    assert not can_fire(document[GRAY_REPLICA])  # its rule names only "off" and the default (off)


def test_any_setting_that_can_fire_arms_the_flag(tmp_path: Path) -> None:
    file = FlagFile(tmp_path / "flags.json")
    file.seed()

    def fires(name: str) -> bool:
        return can_fire(file.read()["flags"][name])

    file.set(GRAY_REPLICA, "500ms", by="test")
    assert fires(GRAY_REPLICA)
    file.set(CALL_FAULT, "abortUnavailable", by="test", when={"caller": "frontend", "callee": "cart"})
    assert fires(CALL_FAULT)
    file.set(CALL_FAULT, "delay2s", by="test", percent=10)
    assert fires(CALL_FAULT)
    file.reset(by="test")
    assert not fires(CALL_FAULT) and not fires(GRAY_REPLICA)
    disabled = {**shipped()["flags"][GRAY_REPLICA], "defaultVariant": "2s", "state": "DISABLED"}
    assert not can_fire(disabled)
    computed = {**shipped()["flags"][CALL_FAULT], "targeting": {"cat": ["delay", {"var": "x"}]}}
    assert can_fire(computed), "a rule that computes the variant name cannot be judged: evaluate it"


@pytest.mark.parametrize(
    ("rule", "answers"),
    [
        (None, {None}),
        ("on", {"on"}),
        ({"if": [{"==": [{"var": "instance"}, "a"]}, None, "off"]}, {None, "off"}),
        ({"if": [True, "x", False, "y"]}, {"x", "y", None}),
        ({"if": [True, {"fractional": [["x", 50], ["off", 50]]}, "off"]}, {"x", "off", None}),
        ({"fractional": [{"var": "k"}, ["a", 1], ["b", 99]]}, {"a", "b", None}),
        ({"if": [True, {"var": "variant"}, "off"]}, None),
        ({"$ref": "shared"}, None),
    ],
)
def test_the_variants_a_rule_can_answer(rule: Any, answers: set[str | None] | None) -> None:
    assert rule_answers(rule) == answers


def test_variant_values_read_as_faults() -> None:
    def answer(code: grpc.StatusCode, message: str, served_by: Instance | None) -> Exception:
        return RuntimeError(message)

    assert parse_call_fault({}, answer) is None
    delay = parse_call_fault({"delayMs": 500}, answer)
    assert delay is not None and (delay.kind, delay.delay, delay.abort) == ("delay", 0.5, None)
    abort = parse_call_fault({"abort": "INTERNAL"}, answer)
    assert abort is not None and (abort.kind, abort.abort) == ("abort", grpc.StatusCode.INTERNAL)
    assert parse_call_fault({"abort": "TEAPOT"}, answer) is None
    assert parse_call_fault({"delayMs": "soon"}, answer) is None


def test_an_injected_fault_of_a_transport_without_an_error_type_keeps_its_status() -> None:
    fault = InjectedFault(grpc.StatusCode.INTERNAL, "injected")
    assert status_of_error(fault) == CallStatus(grpc.StatusCode.INTERNAL)


# ---- real servers ------------------------------------------------------------------------------------


class Catalog:
    """A ProductCatalogService instance that counts its calls and can fail every one UNAVAILABLE."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self.calls = 0
        self.unavailable = False

    async def GetProduct(
        self, request: pb.GetProductRequest, context: grpc.aio.ServicerContext
    ) -> pb.Product:
        """Count; fail or answer with this instance's id as the name."""
        self.calls += 1
        if self.unavailable:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.instance_id} is unavailable")
        return pb.Product(id=request.id, name=self.instance_id)

    async def ListProducts(self, request: pb.Empty, context: grpc.aio.ServicerContext) -> Any:
        """Unused; the descriptor needs it."""
        return pb.ListProductsResponse()

    async def SearchProducts(
        self, request: pb.SearchProductsRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        """Unused; the descriptor needs it."""
        return pb.SearchProductsResponse()


@pytest.fixture
def flag_file(tmp_path: Path) -> Iterator[FlagFile]:
    """A seeded flag file this process evaluates as frontend-0 (polled every 50 ms)."""
    file = FlagFile(tmp_path / "flags.json")
    file.seed()
    install_flags(FlagSettings(source_path=str(file.path), poll_ms=50), "frontend", "frontend-0")
    yield file
    file.reset(by="test")
    install_flags(FlagSettings())  # no provider: no flags for the tests after these


@pytest.fixture
async def servers() -> AsyncIterator[list[tuple[GrpcServer, Catalog]]]:
    """Catalog servers the test starts (see `serve`), stopped afterwards."""
    started: list[tuple[GrpcServer, Catalog]] = []
    yield started
    for server, _ in started:
        await server.stop()


@pytest.fixture
async def made() -> AsyncIterator[list[Dependency[Any]]]:
    """Dependencies the test builds, closed afterwards."""
    dependencies: list[Dependency[Any]] = []
    yield dependencies
    for dependency in dependencies:
        await dependency.close()


async def serve(started: list[tuple[GrpcServer, Catalog]], *ids: str) -> list[str]:
    """Start one catalog server per id on a free port; their addresses."""
    addresses = []
    for instance_id in ids:
        catalog = Catalog(instance_id)
        server = GrpcServer(
            ProcessInfo("catalog", instance_id), [ServiceBinding(CATALOG, catalog)], grace=0.2
        )
        addresses.append(f"127.0.0.1:{await server.start()}")
        started.append((server, catalog))
    return addresses


def catalog_client(
    made: list[Dependency[Any]], addresses: list[str], caller: str, **policy: Any
) -> GrpcDependency:
    """A mesh client of the catalog `caller` uses (no breaker unless the policy gives one)."""
    policy.setdefault("breaker", None)
    dependency = GrpcDependency("catalog", StaticResolver(addresses), STUB, CallPolicy(**policy), caller)
    made.append(dependency)
    return dependency


def get(product: str = "OLJCESPC7Z") -> pb.GetProductRequest:
    """A GetProduct request."""
    return pb.GetProductRequest(id=product)


async def flag_fires(key: str, expected: Any = None, **attributes: Any) -> None:
    """Wait until the process has read the change: the flag is armed and evaluates to `expected`
    (anything but off when None) for these attributes."""

    def fires() -> bool:
        if not armed().may_fire(key):
            return False
        value = flags().object(key, **attributes) if key == CALL_FAULT else flags().number(key)
        return bool(value) if expected is None else value == expected

    await wait_until(fires, timeout=10)


async def test_an_abort_fails_only_the_targeted_edge_unsent_as_the_callees_answer(
    flag_file: FlagFile, servers: list[tuple[GrpcServer, Catalog]], made: list[Dependency[Any]]
) -> None:
    addresses = await serve(servers, "catalog-0")
    catalog = servers[0][1]
    from_frontend = catalog_client(made, addresses, "frontend")
    from_checkout = catalog_client(made, addresses, "checkout")
    assert (await from_frontend.call("GetProduct", get())).name == "catalog-0"
    await wait_until(lambda: not armed().may_fire(CALL_FAULT), timeout=10)  # off: not even evaluated

    when = {"caller": "frontend", "callee": "catalog"}
    flag_file.set(CALL_FAULT, "abortUnavailable", by="test", when=when)
    await flag_fires(CALL_FAULT, caller="frontend", callee="catalog")
    before = catalog.calls
    with tracer.start_as_current_span("page") as span, pytest.raises(grpc.aio.AioRpcError) as caught:
        await from_frontend.call("GetProduct", get())
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert catalog.calls == before, "an aborted call was sent"
    failure = failure_of(caught.value, "catalog")
    assert failure.answered and failure.reason == REASON and failure.retryable
    assert (SERVED_BY, addresses[0]) in tuple(caught.value.trailing_metadata())
    assert not sdk_installed()  # no mesh span of its own here: the evaluation lands on the current span
    attributes = dict(span.attributes or {})
    assert attributes[INJECTED] == "abort" and attributes[FLAG_KEY] == CALL_FAULT

    assert (await from_checkout.call("GetProduct", get())).name == "catalog-0", "another edge was hit"
    assert catalog.calls == before + 1
    answer = await from_frontend.call("GetProduct", get(), fallback=lambda exc: pb.Product(name="fallback"))
    assert answer.name == "fallback"


def mesh_state(dependency: GrpcDependency) -> tuple[str, list[int], int]:
    """The breaker's state, each instance's failure streak and how many are ejected now."""
    snapshot = dependency.snapshot()
    instances = snapshot["instances"]
    return (
        snapshot["breaker"]["state"],
        sorted(i["consecutive_failures"] for i in instances),
        sum(i["ejected"] for i in instances),
    )


async def test_an_injected_abort_counts_as_a_real_unavailable_answer(
    flag_file: FlagFile, servers: list[tuple[GrpcServer, Catalog]], made: list[Dependency[Any]]
) -> None:
    healthy = await serve(servers, "h-0", "h-1")
    failing = await serve(servers, "f-0", "f-1")
    for _, catalog in servers[2:]:
        catalog.unavailable = True
    breaker = BreakerConfig(minimum_calls=4, window_size=4, wait_open=30.0)
    injected = catalog_client(made, healthy, "frontend", breaker=breaker, balancer="round_robin")
    real = catalog_client(made, failing, "mirror", breaker=breaker, balancer="round_robin")
    for dependency in (injected, real):
        dependency.detector.consecutive_failures = 2

    flag_file.set(CALL_FAULT, "abortUnavailable", by="test", when={"caller": "frontend"})
    await flag_fires(CALL_FAULT, caller="frontend", callee="catalog")
    for dependency in (injected, real):
        for _ in range(4):
            with pytest.raises(grpc.aio.AioRpcError):
                await dependency.call("GetProduct", get())
        with pytest.raises(CircuitOpen):
            await dependency.call("GetProduct", get())

    print(f"\ninjected: {mesh_state(injected)}  real: {mesh_state(real)}")
    assert mesh_state(injected) == mesh_state(real) == ("OPEN", [2, 2], 1)
    assert sum(catalog.calls for _, catalog in servers[:2]) == 0
    assert sum(catalog.calls for _, catalog in servers[2:]) == 4


async def test_a_delay_within_the_deadline_sends_late_and_one_past_it_never_sends(
    flag_file: FlagFile, servers: list[tuple[GrpcServer, Catalog]], made: list[Dependency[Any]]
) -> None:
    addresses = await serve(servers, "catalog-0")
    catalog = servers[0][1]
    client = catalog_client(made, addresses, "frontend")

    flag_file.set(CALL_FAULT, "delay500ms", by="test", when={"callee": "catalog", "method": "GetProduct"})
    await flag_fires(CALL_FAULT, caller="frontend", callee="catalog", method="GetProduct")
    began = time.monotonic()
    with tracer.start_as_current_span("page") as span:
        assert (await client.call("GetProduct", get(), timeout=3.0)).name == "catalog-0"
    print(f"\ndelayed call took {time.monotonic() - began:.3f}s")
    assert catalog.calls == 1
    assert (span.attributes or {})[INJECTED] == "delay"

    flag_file.set(CALL_FAULT, "delay2s", by="test", when={"callee": "catalog"})
    await flag_fires(CALL_FAULT, {"delayMs": 2000}, caller="frontend", callee="catalog")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.call("GetProduct", get(), timeout=0.3)
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert not failure_of(caught.value, "catalog").answered
    assert catalog.calls == 1, "a call whose delay outlasted its deadline was sent"


async def test_a_percentage_splits_traces_and_a_trace_decides_once(
    flag_file: FlagFile, servers: list[tuple[GrpcServer, Catalog]], made: list[Dependency[Any]]
) -> None:
    addresses = await serve(servers, "catalog-0")
    client = catalog_client(made, addresses, "frontend")
    flag_file.set(CALL_FAULT, "abortInternal", by="test", when={"callee": "catalog"}, percent=50)
    await flag_fires(CALL_FAULT, caller="frontend", callee="catalog")  # outside a trace: a random key

    async def fails() -> bool:
        try:
            await client.call("GetProduct", get())
        except grpc.aio.AioRpcError as exc:
            assert exc.code() is grpc.StatusCode.INTERNAL
            return True
        return False

    outcomes = []
    for _ in range(40):
        with tracer.start_as_current_span("page"):
            first = await fails()
            assert await fails() == first, "one trace met the fault on one call and not on the next"
            outcomes.append(first)
    print(f"\n{sum(outcomes)} of {len(outcomes)} traces aborted at 50 %")
    assert any(outcomes) and not all(outcomes)


async def test_a_gray_replica_answers_late_and_only_the_targeted_one(
    flag_file: FlagFile, servers: list[tuple[GrpcServer, Catalog]], made: list[Dependency[Any]]
) -> None:
    addresses = await serve(servers, "productcatalog-1")
    catalog = servers[0][1]
    client = catalog_client(made, addresses, "frontend")
    install_flags(
        FlagSettings(source_path=str(flag_file.path), poll_ms=50), "productcatalog", "productcatalog-1"
    )
    flag_file.set(GRAY_REPLICA, "2s", by="test")  # the shipped rule: only productcatalog-1
    await flag_fires(GRAY_REPLICA, 2000.0)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.call("GetProduct", get(), timeout=0.3)
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert catalog.calls == 0, "the late replica served a call its caller had given up on"

    flag_file.set(GRAY_REPLICA, "500ms", by="test")
    await flag_fires(GRAY_REPLICA, 500.0)
    began = time.monotonic()
    assert (await client.call("GetProduct", get(), timeout=3.0)).name == "productcatalog-1"
    print(f"\nthe gray replica answered in {time.monotonic() - began:.3f}s")
    assert catalog.calls == 1

    install_flags(
        FlagSettings(source_path=str(flag_file.path), poll_ms=50), "productcatalog", "productcatalog-0"
    )
    flag_file.set(GRAY_REPLICA, "2s", by="test")
    await flag_fires(GRAY_REPLICA, 0.0)  # armed, but this process is now another replica
    assert (await client.call("GetProduct", get(), timeout=0.3)).name == "productcatalog-1"


class OneInstance(Resolver):
    """Discovery of one HTTP instance."""

    def __init__(self, instance: Instance) -> None:
        super().__init__()
        self.instance = instance

    async def watch(self, service: str) -> AsyncIterator[list[Instance]]:
        """Yield the instance once."""
        yield [self.instance]


async def test_an_http_dependency_meets_the_fault_as_an_http_answer(
    flag_file: FlagFile, made: list[Dependency[Any]]
) -> None:
    calls: list[str] = []

    async def item(request: Request) -> PlainTextResponse:
        calls.append(request.url.path)
        return PlainTextResponse("ok")

    server = BackgroundServer(Starlette(routes=[Route("/item", item)]), "127.0.0.1", 0)
    port = await server.start()
    try:
        instance = Instance("web", "web-0", "127.0.0.1", {"http": port})
        client = HttpDependency("web", OneInstance(instance), CallPolicy(breaker=None), caller="frontend")
        made.append(client)
        assert (await client.request("GET", "/item")).text == "ok"
        flag_file.set(CALL_FAULT, "abortUnavailable", by="test", when={"callee": "web", "method": "GET"})
        await flag_fires(CALL_FAULT, caller="frontend", callee="web", method="GET")
        with pytest.raises(ServerError) as caught:
            await client.request("GET", "/item")
        assert caught.value.response.status_code == 503
        assert caught.value.response.headers[SERVED_BY] == "web-0"
        assert calls == ["/item"], "an aborted request was sent"
        assert (await client.request("POST", "/item")).status_code == 405, "POST is not targeted"
    finally:
        await server.stop()


async def test_the_flag_is_evaluated_only_while_it_can_fire(flag_file: FlagFile) -> None:
    await wait_until(lambda: not armed().may_fire(CALL_FAULT), timeout=10)
    flag_file.set(CALL_FAULT, "delay5s", by="test", when={"caller": "nobody"})
    await wait_until(lambda: armed().may_fire(CALL_FAULT), timeout=10)
    flag_file.reset(by="test")
    await wait_until(lambda: not armed().may_fire(CALL_FAULT), timeout=10)
