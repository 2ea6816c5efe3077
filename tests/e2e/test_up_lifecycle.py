"""`boutique up` as a person uses it: Ctrl-C, busy ports, crashes, replicas."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import psutil
import pytest

from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.proto import demo_pb2_grpc as pb_grpc
from tests.e2e.harness import read_logs, start_up

pytestmark = pytest.mark.e2e


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_ctrl_c_leaves_no_child_running(tmp_path: Path) -> None:
    up = start_up(tmp_path)
    children = up.descendants()
    assert len(children) >= 10, [c.name() for c in children]
    currency = next(p for p in up.state()["processes"] if p["service"] == "currency")
    os.kill(currency["pid"], signal.SIGSTOP)  # a stopped process hears SIGTERM only once it is continued
    assert up.stop() == 0
    time.sleep(0.5)
    survivors = [c.pid for c in children if _alive(c)]
    assert survivors == [], f"processes left running after Ctrl-C: {survivors}"
    assert "Traceback" not in up.text(), up.text()
    assert "every process has exited" in up.text()
    logs = read_logs(tmp_path)
    for name, text in logs.items():
        assert "Traceback" not in text, f"{name} printed a traceback on shutdown"
    stopped = [text for name, text in logs.items() if name.startswith("currency")]
    assert stopped and '"event": "stopped"' in stopped[0], "the stopped process shut down cleanly, not killed"


def test_busy_frontend_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "boutique.cli", "up", "--plain", "--no-load", "--frontend-port", str(port),
             "--data-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 2
    assert f"port {port}" in result.stderr and "busy" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_replicas_option_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "boutique.cli", "up", "--replicas", "nosuch=2", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "nosuch" in result.stderr


def test_crashed_process_is_restarted_and_replicas_share_the_load(tmp_path: Path) -> None:
    up = start_up(tmp_path, "--replicas", "cart=3")
    try:
        carts = [p for p in up.state()["processes"] if p["service"] == "cart"]
        assert len(carts) == 3
        addresses = [p["address"] for p in carts]

        served_by = set()
        for address in addresses:
            with grpc.insecure_channel(address) as channel:
                stub = pb_grpc.CartServiceStub(channel)
                _, call = stub.GetCart.with_call(pb.GetCartRequest(user_id="u1"), timeout=5)
                served_by.add(dict(call.trailing_metadata())["x-served-by"])
        assert served_by == {"cart-0", "cart-1", "cart-2"}

        victim = next(p for p in up.state()["processes"] if p["instance"] == "currency-0")
        os.kill(victim["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = next(p for p in up.state()["processes"] if p["instance"] == "currency-0")
            if now["restarts"] >= 1 and now["state"] == "SERVING" and now["pid"] != victim["pid"]:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"currency-0 was not restarted: {now}")
        assert "currency-0: exited -9" in up.text()
    finally:
        assert up.stop() == 0


def test_cart_replicas_share_one_redis(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed: apt-get install redis-server")
    up = start_up(tmp_path, "--replicas", "cart=3")
    try:
        assert any(p["service"] == "redis" for p in up.state()["processes"])
        with httpx.Client(base_url=up.url, timeout=10) as browser:
            browser.get("/")
            added = browser.post("/cart", data={"product_id": "9SIQT8TOJO", "quantity": "3"})
            assert added.status_code == 302
            for _ in range(9):  # least-request spreads these over all three replicas
                assert "Grove Bamboo Glass Jar" in browser.get("/cart").text
    finally:
        assert up.stop() == 0
