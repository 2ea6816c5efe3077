"""Faults around the fork server of `boutique up`: a forked service killed -9 is forked again by the
supervisor; `boutique chaos` stops and kills the forked process itself; when the fork server is killed
-9 the services go on and restarts start plainly (said once); when `up` itself is killed -9 the fork
server and every forked service go with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from boutique.run import chaos
from tests.e2e.harness import Up, eventually, start_up

FALLBACK_NOTE = "starting services plainly from now on"


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """One `boutique up` (fork server, no observatory) for the module; the last test kills its fork server."""
    running = start_up(tmp_path_factory.mktemp("forkserver"), "--no-observatory")
    try:
        yield running
    finally:
        running.stop()


def entry(up: Up, instance: str) -> dict[str, Any]:
    """The up.json entry of one instance."""
    return next(p for p in up.state()["processes"] if p["instance"] == instance)


def serving_again(up: Up, instance: str, old_pid: int) -> dict[str, Any] | None:
    """The entry once the instance serves as a process other than `old_pid`."""
    found = entry(up, instance)
    return found if found["state"] == "SERVING" and found["pid"] not in (None, old_pid) else None


def is_stopped(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_STOPPED
    except psutil.NoSuchProcess:
        return False


def chaos_command(up: Up, *args: str) -> list[str]:
    return [sys.executable, "-m", "boutique.cli", "chaos", *args, "--data-dir", str(up.data_dir)]


def test_a_forked_service_killed_is_forked_again(up: Up) -> None:
    old = entry(up, "currency-0")
    assert old["spawned"] == "fork" and old["state"] == "SERVING"
    os.kill(old["pid"], signal.SIGKILL)
    new = eventually(lambda: serving_again(up, "currency-0", old["pid"]), "currency-0 to serve again")
    assert new["spawned"] == "fork" and new["restarts"] >= 1
    assert psutil.Process(new["pid"]).ppid() == up.process.pid
    assert "currency-0: exited -9" in up.text()


def test_chaos_kill_and_stop_act_on_the_forked_process(up: Up) -> None:
    victim = entry(up, "payment-0")
    assert chaos.find(up.data_dir, "payment").pid == victim["pid"]
    done = subprocess.run(chaos_command(up, "kill", "payment"), capture_output=True, text=True, timeout=90)
    print(done.stdout, done.stderr)
    assert done.returncode == 0, done.stderr
    assert f"killed payment-0 (pid {victim['pid']}, SIGKILL)" in done.stdout
    again = entry(up, "payment-0")
    assert again["pid"] != victim["pid"] and again["spawned"] == "fork"
    assert f"payment-0 is SERVING again as pid {again['pid']}" in done.stdout

    target = entry(up, "shipping-0")
    others = [p["pid"] for p in up.state()["processes"] if p["instance"] != "shipping-0"]
    server = up.state()["spawn"]["fork_server_pid"]
    stopping = subprocess.Popen(
        chaos_command(up, "stop", "shipping", "--for", "2s"), stdout=subprocess.PIPE, text=True
    )
    eventually(lambda: is_stopped(target["pid"]), "shipping-0 to be stopped", every=0.02)
    assert not [pid for pid in [*others, server] if is_stopped(pid)], "only the forked process is stopped"
    stopping.communicate(timeout=30)
    assert stopping.returncode == 0
    eventually(lambda: entry(up, "shipping-0")["state"] == "SERVING", "shipping-0 to serve again")
    assert entry(up, "shipping-0")["pid"] == target["pid"]


def test_when_the_fork_server_dies_services_go_on_and_restart_plainly(up: Up) -> None:
    before = {p["instance"]: p["pid"] for p in up.state()["processes"]}
    server = up.state()["spawn"]["fork_server_pid"]
    os.kill(server, signal.SIGKILL)
    eventually(lambda: FALLBACK_NOTE in up.text(), "up to say it starts services plainly")
    spawn = up.state()["spawn"]
    assert spawn["fork_server_pid"] is None and "fork server exited" in spawn["plain_since"]
    for instance in ("email-0", "ad-0"):
        old = before[instance]
        assert entry(up, instance)["pid"] == old, "forked services outlive the fork server"
        os.kill(old, signal.SIGKILL)
        new = eventually(lambda i=instance, o=old: serving_again(up, i, o), f"{instance} to serve again")
        assert new["spawned"] == "plain"
        assert "BOUTIQUE_INSTANCE_ID" in psutil.Process(new["pid"]).environ(), "executed, not forked"
    assert up.text().count(FALLBACK_NOTE) == 1
    assert all(p["state"] == "SERVING" for p in up.state()["processes"])


def test_up_killed_takes_the_fork_server_and_every_service_with_it(tmp_path: Path) -> None:
    up = start_up(tmp_path, "--no-observatory")
    state = up.state()
    forked = [p["pid"] for p in state["processes"] if p["spawned"] == "fork" and p["service"] != "registry"]
    registry = next(p["pid"] for p in state["processes"] if p["service"] == "registry")
    server = state["spawn"]["fork_server_pid"]
    try:
        up.process.kill()
        up.process.wait(10)

        def all_gone() -> bool:
            return not [pid for pid in [server, *forked] if psutil.pid_exists(pid) and _alive(pid)]

        eventually(all_gone, "the fork server and the forked services to exit", timeout=30)
    finally:
        for pid in [registry, server, *forked]:  # the registry does not follow its parent (nor when plain)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
