"""The fork server: a forked process is a process of its own (pid, session, log, environment, command line,
fresh state) that the supervising process adopts and sees exit; gRPC services forked from it serve time
after time; and `boutique up` forks every service that way, or starts all plainly with --spawn plain."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.e2e.harness import start_up

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
FORKED = ("registry", "grpc", "http")


def driver(work: Path, *args: str, timeout: float = 120.0) -> dict[str, Any]:
    """Run tests.run.forkdriver (its own process: it becomes a child subreaper) and parse its report."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.run.forkdriver", args[0], str(work), *args[1:]],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.splitlines()[-1]))


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_forked_process_is_a_process_of_its_own(tmp_path: Path) -> None:
    result = driver(tmp_path, "probe")
    probes = result["probes"]
    seen = [json.loads(probe["log"].splitlines()[0]) for probe in probes]
    for index, (probe, saw) in enumerate(zip(probes, seen, strict=True)):
        assert saw["pid"] == probe["pid"] and saw["pid"] not in (result["driver"], result["server"])
        assert saw["ppid"] == result["driver"], "adopted by the supervising process, not the fork server's"
        assert saw["pgid"] == saw["sid"] == saw["pid"], "leads its own session and process group"
        assert saw["argv"] == [f"arg-{index}"] and saw["main"] == "__main__"
        assert saw["cmdline"] == [sys.executable, "-m", "tests.run.forkprobe", f"arg-{index}"]
        assert saw["probe_value"] == f"value-{index}", "its own environment"
        assert saw["parent_variable"] == str(result["driver"])
        log = str(tmp_path / f"probe-{index}.log")
        assert (saw["stdin"], saw["stdout"], saw["stderr"]) == ("/dev/null", log, log)
        assert "to stderr" in probe["log"]
        assert saw["other_fds"] == [], "nothing of the fork server's protocol or imports left open"
        # SIGINT as a plain `python` started from here gets it: ignored only when this process inherited
        # it ignored (a background job of a non-interactive shell).
        inherited = "ignored" if signal.getsignal(signal.SIGINT) == signal.SIG_IGN else "default"
        assert saw["sigint"] == inherited and saw["sigterm_default"] and saw["root_handlers"] == 0
        assert saw["gc_enabled"] and saw["threads"] == 1
        assert saw["tracer_provider"] == "ProxyTracerProvider", "no OpenTelemetry SDK inherited"
    assert seen[0]["random"] != seen[1]["random"], "each has its own random state (trace and span ids)"
    assert [probe["exit"] for probe in probes] == [0, 3], "the exit code reaches the supervising process"
    orphans = result["orphans"]
    assert orphans["before"] == ["sleep"], "the probe's orphan was handed to the supervising process"
    assert orphans["after"] == [], "and reaped once it exited"


def test_grpc_services_forked_again_and_again_all_serve(tmp_path: Path) -> None:
    rounds = 20
    result = driver(tmp_path, "churn", str(rounds), timeout=300)
    print(f"seconds from fork to SERVING: {result['seconds']}")
    assert result["served"] == rounds, result
    assert len(set(result["pids"])) == rounds


def test_up_forks_every_service_as_its_own_process(tmp_path: Path) -> None:
    up = start_up(tmp_path)
    try:
        state = up.state()
        server = state["spawn"]["fork_server_pid"]
        assert state["spawn"]["mode"] == "fork" and server in {p.pid for p in up.descendants()}
        pids = [p["pid"] for p in state["processes"]]
        assert len(set(pids)) == len(pids) and not {up.process.pid, server} & set(pids)
        forked = [p for p in state["processes"] if p["service"] not in ("observatory", "redis")]
        assert len(forked) == 11  # the registry and the ten services
        assert {p["spawned"] for p in forked} == {"fork"}
        assert next(p for p in state["processes"] if p["service"] == "observatory")["spawned"] == "plain"
        for entry in forked:
            pid = entry["pid"]
            process = psutil.Process(pid)
            assert entry["state"] == "SERVING", entry
            assert process.ppid() == up.process.pid and os.getpgid(pid) == pid
            command = " ".join(process.cmdline())
            assert (
                "registry --port" if entry["service"] == "registry" else f"serve {entry['service']}"
            ) in command
            # forked, never executed: the environment the kernel recorded is the fork server's
            assert "BOUTIQUE_INSTANCE_ID" not in process.environ()
            log = Path(entry["log"]).read_text()
            own = f"registry-{pid}" if entry["service"] == "registry" else entry["instance"]
            assert f'"instance": "{own}"' in log, (
                f"{entry['instance']} wrote nothing of its own to {entry['log']}"
            )
        assert "ready" in (tmp_path / "logs" / "forkserver.log").read_text()
    finally:
        assert up.stop() == 0, up.text()[-3000:]


def test_sigterm_stops_every_child_and_the_fork_server(tmp_path: Path) -> None:
    up = start_up(tmp_path, "--no-observatory")
    family = up.descendants()
    server = up.state()["spawn"]["fork_server_pid"]
    assert server in {p.pid for p in family}
    began = time.monotonic()
    up.process.send_signal(signal.SIGTERM)
    assert up.process.wait(40) == 0
    print(f"up exited {time.monotonic() - began:.1f}s after SIGTERM")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not all(_gone(p.pid) for p in family):
        time.sleep(0.1)
    assert [p.pid for p in family if not _gone(p.pid)] == []
    assert "every process has exited" in up.text()


def test_spawn_plain_starts_every_process_plainly(tmp_path: Path) -> None:
    up = start_up(tmp_path, "--spawn", "plain", "--no-observatory")
    try:
        state = up.state()
        assert state["spawn"] == {"mode": "plain"}
        assert {p["spawned"] for p in state["processes"]} == {"plain"}
        commands = [" ".join(p.cmdline()) for p in up.descendants()]
        assert not [c for c in commands if "forkserver" in c], commands
        cart = psutil.Process(next(p["pid"] for p in state["processes"] if p["service"] == "cart"))
        assert cart.environ()["BOUTIQUE_INSTANCE_ID"] == "cart-0", "executed with its own environment"
        assert all(p["state"] == "SERVING" for p in state["processes"])
    finally:
        assert up.stop() == 0, up.text()[-3000:]
