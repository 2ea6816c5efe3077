"""The process plan of `boutique up`: replicas, ports and the address variables it hands out."""

from __future__ import annotations

from pathlib import Path

import pytest

from boutique.mesh import StaticEndpoints
from boutique.run.plan import UpOptions, build_plan, parse_observatory_ports, parse_replicas


def test_parse_replicas_accepts_counts_and_names_bad_entries() -> None:
    assert parse_replicas("cart=3, currency=2") == {"cart": 3, "currency": 2}
    assert parse_replicas("") == {}
    for bad, word in [("cart", "service=count"), ("cart=x", "service=count"), ("nosuch=2", "nosuch"),
                      ("cart=0", "1..16"), ("cart=99", "1..16"), ("loadgen=2", "loadgen")]:  # fmt: skip
        with pytest.raises(ValueError, match=word):
            parse_replicas(bad)


def test_plan_lists_every_replica_in_the_address_variables(tmp_path: Path) -> None:
    options = UpOptions(
        data_dir=tmp_path, frontend_port=18080, replicas={"cart": 3, "frontend": 2}, discovery="static"
    )
    plans = build_plan(options)
    carts = [p for p in plans if p.service == "cart"]
    assert [p.instance for p in carts] == ["cart-0", "cart-1", "cart-2"]
    assert len({p.port for p in plans if p.port}) == len([p for p in plans if p.port]), (
        "ports must be distinct"
    )
    frontends = [p for p in plans if p.service == "frontend"]
    assert frontends[0].port == 18080 and frontends[1].port != 18080
    checkout = next(p for p in plans if p.service == "checkout")
    endpoints = StaticEndpoints.parse(checkout.env["CART_SERVICE_ADDR"])
    assert list(endpoints.addresses) == [p.address for p in carts]
    assert plans[-1].service == "loadgen"
    assert plans[-1].env["FRONTEND_URL"] == "http://127.0.0.1:18080"
    assert all(p.env["BIND_HOST"] == "127.0.0.1" for p in plans)


def test_no_load_leaves_the_load_generator_out(tmp_path: Path) -> None:
    plans = build_plan(UpOptions(data_dir=tmp_path, load=False))
    assert "loadgen" not in {p.service for p in plans}
    assert len(plans) == 12  # the registry, the observatory and ten services


def test_registry_discovery_starts_the_registry_first_and_pins_nothing(tmp_path: Path) -> None:
    plans = build_plan(UpOptions(data_dir=tmp_path, registry_port=17600, replicas={"cart": 2}))
    assert plans[0].kind == "registry" and plans[0].port == 17600
    assert plans[0].argv[-3:] == ["registry", "--port", "17600"]
    for plan in plans:
        assert plan.env["BOUTIQUE_REGISTRY_URL"] == "http://127.0.0.1:17600"
        assert plan.env["BOUTIQUE_DISCOVERY"] == "registry"
        assert not any(key.endswith("_SERVICE_ADDR") for key in plan.env)


def test_shared_redis_for_cart_replicas(tmp_path: Path) -> None:
    plans = build_plan(UpOptions(data_dir=tmp_path, replicas={"cart": 2}, redis=True))
    (redis,) = [p for p in plans if p.kind == "redis"]
    assert redis.argv[0] == "redis-server" and str(redis.port) in redis.argv
    assert (tmp_path / "redis").is_dir()
    carts = [p for p in plans if p.service == "cart"]
    assert all(p.env["REDIS_ADDR"] == redis.address for p in carts)
    assert all("REDIS_ADDR" not in p.env for p in plans if p.service != "cart")


def test_the_observatory_runs_with_its_four_ports_unless_left_out(tmp_path: Path) -> None:
    plans = build_plan(UpOptions(data_dir=tmp_path, observatory_ports=(14317, 14318, 19411, 16687)))
    observatory = next(p for p in plans if p.kind == "observatory")
    assert observatory.port == 16687
    assert observatory.argv[3:] == [
        "observatory", "--port", "16687", "--otlp-grpc-port", "14317", "--otlp-http-port", "14318",
        "--zipkin-port", "19411", "--data-dir", str(tmp_path), "--chaos-log", str(tmp_path / "chaos.jsonl"),
    ]  # fmt: skip
    assert all(
        p.port not in (14317, 14318, 19411) and p.metrics_port not in (14317, 14318, 19411) for p in plans
    )
    assert "observatory" not in {
        p.kind for p in build_plan(UpOptions(data_dir=tmp_path, observatory_ports=None))
    }


def test_observatory_ports_are_four_distinct_port_numbers() -> None:
    assert parse_observatory_ports("4317,4318,9411,16686") == (4317, 4318, 9411, 16686)
    for bad in ("4317,4318,9411", "1,2,3,x", "4317,4317,9411,16686", "0,1,2,3"):
        with pytest.raises(ValueError, match="--observatory-ports"):
            parse_observatory_ports(bad)
