"""Process faults of `boutique chaos` as markers on the charts of the service they hit."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from boutique.observatory.ui.chaos_log import read_actions
from boutique.run.chaos import LOG_FILE, Target, record
from tests.observatory.test_ui_flags import ui_client
from tests.observatory.test_ui_services import charts_of

MARKER = re.compile(r'<g class="marker" data-event="([^"]*)">\s*<title>([^<]*)</title>')


def target(service: str, instance: str) -> Target:
    """An instance as `boutique chaos` names it in its log."""
    return Target(service, instance, pid=4242, state="running", started=time.time() - 60, up_pid=1)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory with the log `boutique chaos` writes: faults on checkout and on cart."""
    directory = tmp_path / "up"
    directory.mkdir()
    record(directory, "kill", target("checkout", "checkout-0"), 0.0, "ann", signal="SIGKILL")
    record(directory, "recovered", target("checkout", "checkout-0"), 1.4, "ann", new_pid=4343)
    record(directory, "slow", target("checkout", "checkout-0"), 20.0, "ann", cpu=0.25, period=0.1)
    record(directory, "stop", target("cart", "cart-1"), 15.0, "ann")
    with (directory / LOG_FILE).open("a") as log:
        log.write('{"time": "yesterday", "action": "kill"}\n')  # not a record: skipped
        log.write('{"time": 1, "act')  # a line torn by a crash: skipped
    return directory


@pytest.fixture
async def http(tmp_path: Path, data_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the UI's routes, reading the chaos log of `data_dir`."""
    async for client in ui_client(tmp_path, chaos_log=data_dir / LOG_FILE):
        yield client


async def test_the_faults_on_a_service_are_markers_on_its_charts(http: httpx.AsyncClient) -> None:
    page = (await http.get("/services/checkout", params={"lookback": "1h"})).text
    charts = charts_of(page)
    assert list(charts) == ["rate", "errors", "latency"]
    for chart in charts.values():
        markers = MARKER.findall(chart)
        assert [label for label, _ in markers] == [
            "kill checkout-0",
            "recovered checkout-0",
            "slow checkout-0",
        ]
        tooltips = [tooltip for _, tooltip in markers]
        assert "chaos: kill checkout-0, by ann" in tooltips[0]
        assert "chaos: slow checkout-0 at 25% CPU for 20s, by ann" in tooltips[2]
        assert "cart-1" not in chart  # a fault on another service is not this service's
    assert "also mark 3 process faults on this service" in page


async def test_faults_outside_the_window_and_without_a_log_mark_nothing(
    tmp_path: Path, data_dir: Path
) -> None:
    now = time.time()
    assert read_actions(data_dir / LOG_FILE, "checkout", now - 3600, now - 600) == []
    assert read_actions(tmp_path / "no-such" / LOG_FILE, "checkout", 0, now) == []
    assert [a.action for a in read_actions(data_dir / LOG_FILE, "cart", 0, now)] == ["stop"]


async def test_no_chaos_log_no_markers(tmp_path: Path) -> None:
    async for client in ui_client(tmp_path):
        page = (await client.get("/services/checkout", params={"lookback": "1h"})).text
    assert 'class="marker"' not in page and "process fault" not in page
