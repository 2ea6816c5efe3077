"""Time from `boutique up --no-load` to every service SERVING, against the floor, and the memory it takes.

The floor is what this machine allows: the time to launch as many bare Python interpreters as `up`
starts services, each importing only grpc and the shop's protobuf module, all at once, measured in the
same run. Memory is summed over `up` and every process under it, three ways: RSS (a page shared by ten
processes counts ten times), PSS (a shared page is split among its sharers: the sum is what the shop
really takes) and USS (pages only that process has). `--spawn fork,plain` starts `up` each way in every
run, side by side (default: `up`'s own default way).
Usage: python benchmarks/startup.py [--runs 3] [--spawn fork,plain]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from boutique.run.ports import free_port

SERVICES = 10  # nine backends and one frontend
READY_LINE = "Boutique is up"
READY_TIMEOUT = 180.0
SETTLE_SECONDS = 1.0  # every process finishes its first requests before memory is read


@dataclass(frozen=True)
class Start:
    """One `up` until all SERVING: how long it took, and the memory of its processes then (MiB)."""

    seconds: float
    rss: float
    pss: float
    uss: float
    processes: int


def bare_interpreters(count: int, python: str = sys.executable) -> float:
    """Seconds to run `count` interpreters importing grpc + the protos, all at once."""
    began = time.perf_counter()
    code = "import grpc, grpc_health.v1.health, boutique.shop.proto.demo_pb2_grpc"
    procs = [subprocess.Popen([python, "-c", code]) for _ in range(count)]
    for proc in procs:
        proc.wait()
    return time.perf_counter() - began


def tree_memory(root: psutil.Process) -> tuple[float, float, float, int]:
    """Total RSS, PSS and USS (MiB) of `root` and every process under it, and how many processes."""
    rss = pss = uss = 0
    family = [root, *root.children(recursive=True)]
    for process in family:
        try:
            full = process.memory_full_info()  # /proc/PID/smaps_rollup: PSS and USS beside RSS
        except psutil.NoSuchProcess:
            continue
        rss, pss, uss = rss + full.rss, pss + full.pss, uss + full.uss
    return rss / 2**20, pss / 2**20, uss / 2**20, len(family)


def one_up(
    python: str = sys.executable,
    spawn: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Start:
    """Start `boutique up --no-load` with `python` (its own ports and data directory) until all SERVING."""
    with tempfile.TemporaryDirectory() as data_dir:
        command = [python, "-m", "boutique.cli", "up", "--plain", "--no-load", "--data-dir", data_dir]
        command += ["--frontend-port", str(free_port()), "--registry-port", str(free_port())]
        command += ["--observatory-ports", ",".join(str(free_port()) for _ in range(4))]
        if spawn:
            command += ["--spawn", spawn]
        began = time.perf_counter()
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env=env or dict(os.environ),
            cwd=cwd,
        )
        ready, ended = threading.Event(), threading.Event()
        threading.Thread(target=_read_output, args=(proc, ready, ended), daemon=True).start()
        try:
            ended.wait(READY_TIMEOUT)  # the reader sets it at the ready line too
            if not ready.is_set():
                raise SystemExit(f"boutique up ({spawn or 'default'}) did not get ready: {' '.join(command)}")
            took = time.perf_counter() - began
            time.sleep(SETTLE_SECONDS)
            rss, pss, uss, count = tree_memory(psutil.Process(proc.pid))
        finally:
            _stop(proc)
        return Start(took, rss, pss, uss, count)


def _read_output(proc: subprocess.Popen[str], ready: threading.Event, ended: threading.Event) -> None:
    """Read what `up` prints (so its pipe never fills); at its ready line set both events, at its end `ended`."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if READY_LINE in line and not ready.is_set():
            ready.set()
            ended.set()  # wakes the waiter: nothing more to wait for
    ended.set()


def _stop(proc: subprocess.Popen[str]) -> None:
    """Ctrl-C for `up`, as a person stops it; its whole group is killed if it does not end in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def spawn_ways(text: str) -> list[str | None]:
    """The --spawn list: each way `up` is started in every run (None: its default)."""
    ways = [way.strip() for way in text.split(",") if way.strip()]
    return list(ways) if ways else [None]


def main() -> None:
    """Run the comparison and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--spawn",
        default="",
        help="comma-separated `boutique up --spawn` ways, e.g. fork,plain (default: up's)",
    )
    args = parser.parse_args()
    ways = spawn_ways(args.spawn)
    floors: list[float] = []
    starts: dict[str | None, list[Start]] = {way: [] for way in ways}
    for run in range(args.runs):
        floors.append(bare_interpreters(SERVICES))
        print(f"run {run + 1}: floor {floors[-1]:.2f}s", flush=True)
        for way in ways:
            start = one_up(spawn=way)
            starts[way].append(start)
            print(
                f"  up {way or 'default'}: {start.seconds:.2f}s ({start.seconds / floors[-1]:.2f}x the floor), "
                f"RSS {start.rss:.0f} MiB, PSS {start.pss:.0f} MiB, USS {start.uss:.0f} MiB "
                f"in {start.processes} processes",
                flush=True,
            )
    floor = statistics.median(floors)
    print(
        f"\nmedians of {args.runs} runs; floor ({SERVICES} bare interpreters importing grpc + protos in parallel)"
    )
    print(
        f"{'up --spawn':<12} {'SERVING':>8} {'floor':>6} {'ratio':>6} {'RSS MiB':>8} {'PSS MiB':>8} {'USS MiB':>8}"
        f" {'processes':>9}"
    )
    for way, measured in starts.items():
        took = statistics.median(s.seconds for s in measured)
        print(
            f"{way or 'default':<12} {took:>7.2f}s {floor:>5.2f}s {took / floor:>6.2f} "
            f"{statistics.median(s.rss for s in measured):>8.0f} {statistics.median(s.pss for s in measured):>8.0f} "
            f"{statistics.median(s.uss for s in measured):>8.0f} {measured[-1].processes:>9}"
        )
    print("(memory summed over `up` and every process under it)")


if __name__ == "__main__":
    main()
