"""Time from `boutique up --no-load` to every service SERVING, and the RSS of all its processes.

The ratio printed is the start-up time over the floor this machine sets: the time to launch the same
number of bare Python interpreters that only import grpc and the shop's protobuf module, in parallel,
measured in the same run. Usage: python benchmarks/startup.py [--runs 3]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

from boutique.run.ports import free_port

SERVICES = 10  # nine backends and one frontend


def bare_interpreters(count: int) -> float:
    """Seconds to run `count` interpreters importing grpc + the protos, all at once."""
    began = time.perf_counter()
    code = "import grpc, grpc_health.v1.health, boutique.shop.proto.demo_pb2_grpc"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(count)]
    for proc in procs:
        proc.wait()
    return time.perf_counter() - began


def one_up() -> tuple[float, float, int]:
    """Start `boutique up --no-load`; return (seconds to all SERVING, total RSS MiB, process count)."""
    with tempfile.TemporaryDirectory() as data_dir:
        command = [sys.executable, "-m", "boutique.cli", "up", "--plain", "--no-load"]
        command += [
            "--frontend-port",
            str(free_port()),
            "--registry-port",
            str(free_port()),
            "--data-dir",
            data_dir,
            "--observatory-ports",
            ",".join(str(free_port()) for _ in range(4)),
        ]
        began = time.perf_counter()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            if "Boutique is up" in line:
                break
        else:
            raise SystemExit("boutique up exited before it was ready")
        took = time.perf_counter() - began
        time.sleep(1.0)  # let every process finish its first requests before reading memory
        root = psutil.Process(proc.pid)
        family = [root, *root.children(recursive=True)]
        rss = sum(p.memory_info().rss for p in family) / 2**20
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        return took, rss, len(family)


def main() -> None:
    """Run the comparison and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    ups, floors, rsses, counts = [], [], [], []
    for run in range(runs):
        floors.append(bare_interpreters(SERVICES))
        took, rss, count = one_up()
        ups.append(took)
        rsses.append(rss)
        counts.append(count)
        print(
            f"run {run + 1}: up {took:.2f}s, floor {floors[-1]:.2f}s, RSS {rss:.0f} MiB in {count} processes"
        )
    up, floor = statistics.median(ups), statistics.median(floors)
    print(f"boutique up --no-load: all {SERVICES} services SERVING in {up:.2f}s (median of {runs})")
    print(f"floor ({SERVICES} bare interpreters importing grpc + protos in parallel): {floor:.2f}s")
    print(f"ratio up/floor: {up / floor:.2f}")
    print(
        f"total RSS: {statistics.median(rsses):.0f} MiB across {counts[-1]} processes (incl. the supervisor)"
    )


if __name__ == "__main__":
    main()
