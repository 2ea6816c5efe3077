"""Measure what each process of a running shop uses, the figures the Kubernetes resources come from.

Run from the repository root: `.venv/bin/python -m tests.deploy.measure_resources [SECONDS [USERS]]`.
It starts `boutique up` with Redis and the load generator (USERS shoppers, default 10, as `up`) on free
ports in a temporary data directory, lets the shoppers spawn, then samples every process (with its
children) for SECONDS (default 60): resident memory (peak) and CPU (mean over the window, and the
busiest 5 s). It prints one line per process and stops the shop.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.e2e.harness import Up, start_up

SETTLE = 10.0  # seconds for caches to warm before sampling, after the shoppers have spawned
STEP = 5.0


@dataclass
class Usage:
    """One process's figures over the sampling window."""

    name: str
    peak_rss: int = 0
    cpu_seconds: list[float] = field(default_factory=list)  # cumulative CPU time at each sample


def tree(pid: int) -> list[psutil.Process]:
    """The process and every child of it (Locust runs under the load generator)."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def sample(pid: int) -> tuple[int, float]:
    """RSS (bytes) and CPU seconds (user + system) of a process tree now."""
    rss, cpu = 0, 0.0
    for process in tree(pid):
        try:
            with process.oneshot():
                rss += process.memory_info().rss
                times = process.cpu_times()
                cpu += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return rss, cpu


def measure(up: Up, seconds: float) -> list[Usage]:
    """Sample every process of `up` each STEP seconds for `seconds`."""
    pids = {p["instance"]: p["pid"] for p in up.state()["processes"] if p.get("pid")}
    usages = {name: Usage(name) for name in pids}
    deadline = time.monotonic() + seconds
    while True:
        for name, pid in pids.items():
            rss, cpu = sample(pid)
            usage = usages[name]
            usage.peak_rss = max(usage.peak_rss, rss)
            usage.cpu_seconds.append(cpu)
        if time.monotonic() >= deadline:
            break
        time.sleep(STEP)
    return list(usages.values())


def report(usages: list[Usage], seconds: float) -> None:
    """One line per process: peak RSS, mean CPU and the busiest step's CPU, in Kubernetes units."""
    print(f"{'process':<18}{'peak RSS MiB':>14}{'mean CPU m':>12}{'peak 5s CPU m':>15}")
    for usage in sorted(usages, key=lambda u: u.name):
        steps = [b - a for a, b in zip(usage.cpu_seconds, usage.cpu_seconds[1:], strict=False)]
        mean = (usage.cpu_seconds[-1] - usage.cpu_seconds[0]) / seconds * 1000
        peak = max(steps, default=0.0) / STEP * 1000
        print(f"{usage.name:<18}{usage.peak_rss / 2**20:>14.0f}{mean:>12.0f}{peak:>15.0f}")


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    users = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    spawn_rate = 2.0
    with tempfile.TemporaryDirectory(prefix="boutique-measure-") as data:
        up = start_up(
            Path(data), "--load", "--redis", "on", "--users", str(users), "--spawn-rate", str(spawn_rate)
        )
        try:
            time.sleep(users / spawn_rate + SETTLE)
            usages = measure(up, seconds)
        finally:
            up.stop()
    print(f"{users} shoppers, {seconds:.0f} s sampled every {STEP:.0f} s")
    report(usages, seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
