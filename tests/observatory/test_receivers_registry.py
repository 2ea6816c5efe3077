"""The receiver registry: unique names, paths and services, and every receiver served by a started observatory."""

from __future__ import annotations

import ast
from collections import Counter
from dataclasses import fields
from pathlib import Path

import grpc
import httpx
import pytest
from starlette.routing import Route

import boutique.observatory
from boutique.observatory.config import ObservatoryConfig, Ports
from boutique.observatory.pipeline import Pipeline
from boutique.observatory.receivers import RECEIVERS, GrpcReceiver, HttpReceiver, Limits
from boutique.observatory.server import Observatory
from boutique.observatory.store.duckdb_store import DuckDBStore

TOKEN = "registry-test-token"
HTTP = [r for r in RECEIVERS if isinstance(r, HttpReceiver)]
GRPC = [r for r in RECEIVERS if isinstance(r, GrpcReceiver)]


def http_routes(receiver: HttpReceiver, pipeline: Pipeline) -> list[Route]:
    """The receiver's routes (every one a plain `Route`: receivers take POSTed payloads)."""
    routes = receiver.routes(pipeline, Limits())
    assert all(isinstance(route, Route) for route in routes), receiver.name
    return [route for route in routes if isinstance(route, Route)]


@pytest.fixture
def pipeline(tmp_path: Path) -> Pipeline:
    """An unstarted pipeline: building routes and services needs one, serving them is not tested here."""
    return Pipeline(DuckDBStore(tmp_path / "registry.duckdb"))


def test_the_registry_holds_each_kind_of_receiver_once() -> None:
    names = [r.name for r in RECEIVERS]
    assert len(set(names)) == len(names), names
    assert {"otlp_grpc", "otlp_http", "zipkin"} <= set(names)
    assert all(r.decoders for r in RECEIVERS), "every receiver names the decoder of what it takes"
    assert len({r.service for r in GRPC}) == len(GRPC)
    # An HTTP port and a gRPC port are different sockets: no receiver names a port of the other kind.
    assert not {r.port for r in HTTP} & {r.port for r in GRPC}
    assert {r.port for r in RECEIVERS} <= {f.name for f in fields(Ports)}


def test_no_two_http_routes_share_a_path_or_a_name(pipeline: Pipeline) -> None:
    routes = [(r.port, route) for r in HTTP for route in http_routes(r, pipeline)]
    paths = Counter(route.path for _, route in routes)
    assert [path for path, count in paths.items() if count > 1] == []
    builders = Counter(r.routes.__name__ for r in HTTP)
    assert [name for name, count in builders.items() if count > 1] == []
    for receiver in GRPC:
        assert set(receiver.methods(pipeline)), receiver.name


def test_no_two_route_functions_of_the_observatory_share_a_name() -> None:
    """Route builders are found by grep: `*_routes` names one function in the whole observatory."""
    root = Path(boutique.observatory.__file__).parent
    defined: Counter[str] = Counter()
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        defined.update(
            node.name
            for node in tree.body
            if isinstance(node, ast.FunctionDef) and node.name.endswith("_routes")
        )
    assert "otlp_http_routes" in defined and "query_routes" in defined  # the walk found the modules
    assert [name for name, count in defined.items() if count > 1] == []


def test_a_receiver_naming_an_unknown_port_is_refused() -> None:
    with pytest.raises(ValueError, match="port must be one of otlp_grpc, otlp_http, zipkin, query"):
        HttpReceiver(name="jaeger", port="jaeger_http", decoders={}, routes=lambda pipeline, limits: [])


async def test_every_receiver_is_served_on_its_port_behind_the_token(tmp_path: Path) -> None:
    """Each receiver's routes and methods answer on the port it names: refused without the token, and
    with it an empty body gets the receiver's own 400 (so the route, not a 404, answered)."""
    observatory = Observatory(ObservatoryConfig(ports=Ports(0, 0, 0, 0), data_dir=tmp_path, token=TOKEN))
    bound = await observatory.start()
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            for receiver in HTTP:
                port = getattr(bound, receiver.port)
                for route in http_routes(receiver, observatory.pipeline):
                    url = f"http://127.0.0.1:{port}{route.path}"
                    for content_type in receiver.decoders:
                        headers = {"Content-Type": content_type} if content_type else {}
                        denied = await client.post(url, content=b"", headers=headers)
                        assert denied.status_code == 401, (receiver.name, route.path)
                        headers["Authorization"] = f"Bearer {TOKEN}"
                        answered = await client.post(url, content=b"", headers=headers)
                        print(receiver.name, route.path, content_type or "(none)", answered.status_code)
                        assert answered.status_code == 400, (receiver.name, route.path, answered.text)
                        assert "the request body is empty" in answered.text
        for receiver in GRPC:
            target = f"127.0.0.1:{getattr(bound, receiver.port)}"
            async with grpc.aio.insecure_channel(target) as channel:
                for method in receiver.methods(observatory.pipeline):
                    call = channel.unary_unary(f"/{receiver.service}/{method}")
                    with pytest.raises(grpc.aio.AioRpcError) as denied:
                        await call(b"", timeout=10)
                    assert denied.value.code() is grpc.StatusCode.UNAUTHENTICATED
                    # An empty request is a valid one with no spans: the method answers it.
                    reply = await call(b"", timeout=10, metadata=(("authorization", f"Bearer {TOKEN}"),))
                    print(receiver.name, method, "OK", len(reply))
    finally:
        await observatory.stop()
