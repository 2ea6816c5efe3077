"""A *_SERVICE_ADDR the user set wins in every discovery mode, and `up` starts none of that service."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import httpx
import pytest
from rich.console import Console

from boutique.run.plan import (
    UpOptions,
    build_plan,
    check_replicas_against_external,
    external_services,
)
from boutique.run.status import external_line, table
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.proto import demo_pb2_grpc as pb_grpc
from boutique.shop.recommendation.client import FEATURED
from boutique.shop.services import BACKENDS
from tests.e2e.harness import eventually, start_up

SUNGLASSES = "OLJCESPC7Z"
# Catalog products that are not among the frontend's featured fallback, in an order of our own.
OURS = ["9SIQT8TOJO", "LS4PSXUNUM", "66VCHSJNUP"]
THEIRS = "127.0.0.1:9"


@pytest.mark.parametrize("discovery", ["registry", "static"])
def test_the_users_address_wins_and_no_process_is_planned(tmp_path: Path, discovery: str) -> None:
    options = UpOptions(
        data_dir=tmp_path, discovery=discovery, external={"recommendation": THEIRS}, load=False
    )
    plans = build_plan(options)
    assert "recommendation" not in {p.service for p in plans}
    assert len([p for p in plans if p.kind in ("grpc", "http")]) == 9  # ten services less the pinned one
    for plan in plans:
        assert plan.env["RECOMMENDATION_SERVICE_ADDR"] == THEIRS, plan.instance
    checkout = next(p for p in plans if p.service == "checkout")
    pinned = {k for k in checkout.env if k.endswith("_SERVICE_ADDR")}
    if discovery == "static":
        assert len(pinned) == len(BACKENDS)
        cart = next(p for p in plans if p.service == "cart")
        assert checkout.env["CART_SERVICE_ADDR"] == cart.address, "the shop's own services stay static"
    else:
        assert pinned == {"RECOMMENDATION_SERVICE_ADDR"}, "the rest are found through the registry"


def test_a_pinned_cart_gets_no_redis(tmp_path: Path) -> None:
    plans = build_plan(UpOptions(data_dir=tmp_path, redis=True, external={"cart": THEIRS}))
    assert not {"redis", "cart"} & {p.service for p in plans}
    assert all(p.env["CART_SERVICE_ADDR"] == THEIRS and "REDIS_ADDR" not in p.env for p in plans)


def test_external_services_reads_the_address_variables() -> None:
    environ = {
        "RECOMMENDATION_SERVICE_ADDR": " host.example:8080 ",
        "CART_SERVICE_ADDR": "",
        "AD_SERVICE_ADDR": "10.1.2.3:9555,10.1.2.4:9555",
        "UNRELATED_SERVICE_ADDR": "x:1",
    }
    assert external_services(environ) == {
        "recommendation": "host.example:8080",
        "ad": "10.1.2.3:9555,10.1.2.4:9555",
    }
    assert external_services({}) == {}
    for bad in ("host", "host:port", "127.0.0.1:0", ":8080"):
        with pytest.raises(ValueError, match="RECOMMENDATION_SERVICE_ADDR"):
            external_services({"RECOMMENDATION_SERVICE_ADDR": bad})


def test_replicas_of_a_pinned_service_are_refused() -> None:
    check_replicas_against_external({"cart": 2}, {"recommendation": THEIRS})
    with pytest.raises(ValueError, match="RECOMMENDATION_SERVICE_ADDR is set"):
        check_replicas_against_external({"recommendation": 2}, {"recommendation": THEIRS})


def test_the_status_table_shows_the_service_as_external() -> None:
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(table([], "Boutique", [], {"recommendation": THEIRS}))
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in console.export_text().splitlines()]
    row = next(r for r in rows if r and r[0] == "recommendation")
    state = "not started: RECOMMENDATION_SERVICE_ADDR is set"
    assert row == ["recommendation", "external", "-", THEIRS, state, "-", "-", "-"]
    assert external_line("recommendation", THEIRS) == (
        f"recommendation: external at {THEIRS} (not started: RECOMMENDATION_SERVICE_ADDR is set)"
    )


def _up_refuses(env: dict[str, str], *args: str) -> str:
    """Run `boutique up` expecting it to refuse its options; return what it printed."""
    command = [sys.executable, "-m", "boutique.cli", "up", "--plain", "--no-load", *args]
    done = subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stdout + done.stderr
    return done.stderr


def test_up_refuses_a_malformed_address_and_replicas_of_a_pinned_service(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path)]
    err = _up_refuses({"RECOMMENDATION_SERVICE_ADDR": "nohost"}, *data)
    assert "RECOMMENDATION_SERVICE_ADDR='nohost': not a host:port address" in err
    err = _up_refuses({"RECOMMENDATION_SERVICE_ADDR": "127.0.0.1:9"}, *data, "--replicas", "recommendation=2")
    assert "--replicas recommendation=2: RECOMMENDATION_SERVICE_ADDR is set" in err


class FixedRecommendations(pb_grpc.RecommendationServiceServicer):
    """A recommendation service of the user's own: always the same list, and a record of every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.lock = threading.Lock()

    def ListRecommendations(
        self, request: pb.ListRecommendationsRequest, context: grpc.ServicerContext
    ) -> pb.ListRecommendationsResponse:
        with self.lock:
            self.calls.append((request.user_id, list(request.product_ids)))
        return pb.ListRecommendationsResponse(product_ids=OURS)


@pytest.fixture
def users_recommendations() -> Iterator[tuple[FixedRecommendations, str]]:
    """The user's recommendation server on a free loopback port, and its address."""
    servicer = FixedRecommendations()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_RecommendationServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def test_static_up_sends_the_frontend_to_the_users_recommendation_service(
    tmp_path: Path, users_recommendations: tuple[FixedRecommendations, str]
) -> None:
    servicer, address = users_recommendations
    assert not set(OURS) & set(FEATURED), "the fallback list must not look like our answer"
    up = start_up(
        tmp_path, "--discovery", "static", "--no-observatory", env={"RECOMMENDATION_SERVICE_ADDR": address}
    )
    try:
        assert f"recommendation: external at {address}" in up.text()
        print(next(line for line in up.text().splitlines() if "Boutique is up" in line))
        state = up.state()
        assert state["external"] == [
            {"service": "recommendation", "address": address, "variable": "RECOMMENDATION_SERVICE_ADDR"}
        ]
        assert "recommendation" not in {p["service"] for p in state["processes"]}
        commands = [" ".join(p.cmdline()) for p in up.descendants()]
        assert not [c for c in commands if "serve recommendation" in c], commands
        assert any("serve frontend" in c for c in commands), commands

        with httpx.Client(base_url=up.url, timeout=10) as http:

            def page() -> list[str] | None:
                """The recommendation ids the product page shows, once they are the user's."""
                shown = re.findall(
                    r'data-recommendation="([A-Z0-9]+)"', http.get(f"/product/{SUNGLASSES}").text
                )
                return shown if shown == OURS else None

            shown = eventually(page, "the product page to show the user's recommendations", timeout=30)
            session = http.cookies.get("shop_session-id")
        assert shown == OURS
        with servicer.lock:
            calls = list(servicer.calls)
        print(f"calls to the user's recommendation service: {len(calls)}")
        assert (session, [SUNGLASSES]) in calls, calls
    finally:
        assert up.stop() == 0, up.text()[-3000:]
