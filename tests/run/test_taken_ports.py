"""A planned port taken by someone else before the service binds it: `up` moves the service elsewhere."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from boutique.run.plan import ProcessPlan
from boutique.run.ports import free_port, is_taken
from boutique.run.supervisor import Supervisor


@pytest.fixture
def squatter() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def currency_plan(port: int, metrics_port: int, movable: bool) -> ProcessPlan:
    """The currency service planned on these ports, discovering nothing (static), untraced."""
    env = {
        "PORT": str(port),
        "METRICS_PORT": str(metrics_port),
        "BIND_HOST": "127.0.0.1",
        "BOUTIQUE_INSTANCE_ID": "currency-0",
        "BOUTIQUE_DISCOVERY": "static",
        "OTEL_SDK_DISABLED": "true",
    }
    return ProcessPlan("currency", 0, "grpc", port, env=env, metrics_port=metrics_port, movable=movable)


def test_only_taken_ports_of_a_movable_plan_move(squatter: int) -> None:
    free = free_port()
    fixed = currency_plan(squatter, free, movable=False)
    assert fixed.move_taken_ports(lambda p: is_taken("127.0.0.1", p), free_port) == []
    assert fixed.port == squatter
    movable = currency_plan(squatter, free, movable=True)
    assert movable.move_taken_ports(lambda p: is_taken("127.0.0.1", p), free_port) == [squatter]
    assert movable.port != squatter and movable.env["PORT"] == str(movable.port)
    assert movable.metrics_port == free  # still free: kept


async def test_a_service_whose_port_was_taken_serves_on_another(squatter: int, tmp_path: Path) -> None:
    plan = currency_plan(squatter, free_port(), movable=True)
    supervisor = Supervisor([plan], tmp_path / "logs")
    try:
        await supervisor.start()
        assert await supervisor.wait_ready(60.0)
        assert plan.port != squatter
        assert supervisor.children[0].restarts >= 1
        log = (tmp_path / "logs" / "currency-0.log").read_text()
        assert f"127.0.0.1:{squatter}" in log  # the first attempt said which port was busy
    finally:
        await supervisor.stop()
