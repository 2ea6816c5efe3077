"""Drives a real fork server from a process of its own, for tests/run/test_forkserver.py.

A child subreaper is needed to adopt forked processes, and a test process should not become one (every
orphan of the whole test session would come to it), so the tests run this instead:

    python -m tests.run.forkdriver probe DIR      fork two tests.run.forkprobe, report what they saw
    python -m tests.run.forkdriver churn DIR N    fork the currency service N times: serve, kill -9, again

It prints one JSON object on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from boutique.run.plan import ProcessPlan
from boutique.run.ports import free_port
from boutique.run.probes import UNREACHABLE, Prober
from boutique.run.spawners import ForkSpawner

PROBE = "tests.run.forkprobe"


async def probe(work: Path) -> dict[str, Any]:
    """Fork two probes (the second exiting 3, and leaving an orphan behind) and report their lines, exit
    codes, our own pids, and the exited orphans handed to us before and after reaping strays."""
    spawner = ForkSpawner(work, lambda line: print(line, file=sys.stderr))
    await spawner.start()
    results = []
    for index, code in enumerate((0, 3)):
        log = work / f"probe-{index}.log"
        env = {**os.environ, "PROBE_VALUE": f"value-{index}", "PROBE_EXIT": str(code)}
        if index:
            env["PROBE_ORPHAN"] = "1"
        forked = await spawner.fork([sys.executable, "-m", PROBE, f"arg-{index}"], env, log)
        assert forked is not None, "the fork server did not fork"
        exit_code = await forked.wait()
        results.append({"pid": forked.pid, "exit": exit_code, "log": log.read_text()})
    state = spawner.state()
    deadline = time.monotonic() + 10
    while not _zombies() and time.monotonic() < deadline:  # noqa: ASYNC110 - polls /proc, no event
        await asyncio.sleep(0.05)
    before = _zombies()
    spawner.reap_strays(set())
    after = _zombies()
    await spawner.close()
    return {
        "driver": os.getpid(),
        "server": state["fork_server_pid"],
        "probes": results,
        "orphans": {"before": before, "after": after},
    }


def _zombies() -> list[str]:
    """Our children that have exited and are not reaped yet."""
    found = []
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if child.status() == psutil.STATUS_ZOMBIE:
                found.append(child.name())
    return found


async def churn(work: Path, rounds: int) -> dict[str, Any]:
    """Fork currency `rounds` times; each must serve (gRPC health) before it is killed with SIGKILL."""
    spawner = ForkSpawner(work, lambda line: print(line, file=sys.stderr), ("boutique.cli",))
    await spawner.start()
    prober = Prober()
    served, pids, seconds = 0, [], []
    env = {"BIND_HOST": "127.0.0.1", "BOUTIQUE_DISCOVERY": "static", "OTEL_TRACES_EXPORTER": "none"}
    try:
        for index in range(rounds):
            plan = ProcessPlan(
                "currency", index, "grpc", free_port(), env=dict(env), metrics_port=free_port()
            )
            plan.env |= {"PORT": str(plan.port), "METRICS_PORT": str(plan.metrics_port)}
            plan.env["BOUTIQUE_INSTANCE_ID"] = plan.instance
            began = time.monotonic()
            process, how = await spawner.spawn(plan, work / f"{plan.instance}.log")
            assert how == "fork", f"round {index}: started {how}"
            pids.append(process.pid)
            while time.monotonic() - began < 30 and process.returncode is None:
                try:
                    if await prober.state(plan) == "SERVING":
                        served += 1
                        seconds.append(round(time.monotonic() - began, 3))
                        break
                except UNREACHABLE:
                    pass
                await asyncio.sleep(0.02)
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    finally:
        await prober.close()
        await spawner.close()
    return {"rounds": rounds, "served": served, "pids": pids, "seconds": seconds}


def main() -> None:
    """Run the scenario named on the command line; print its result."""
    scenario, work = sys.argv[1], Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(probe(work) if scenario == "probe" else churn(work, int(sys.argv[3])))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
