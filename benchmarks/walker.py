"""The span walkers alone against merely parsing: CPU time per span on benchmarks/ingest.py's payloads.

Three modes run on the same payloads, their order rotated every round: (A) `ExportTraceServiceRequest().
ParseFromString(payload)` with the real opentelemetry.proto class (parse-only, what ingest is measured
against), (B) the compiled span walker (when it is built) and (C) the pure-Python one, each turning
every payload into a `SpanBatch`. Times are this thread's CPU time (other processes on a shared machine
do not count); the process is pinned to one CPU. Printed: median microseconds per span and the
parse-only ÷ walker ratio (above 1: the walker is faster than parsing).
Usage: python benchmarks/walker.py [--spans 100000] [--rounds 7] [--cpu 0]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from boutique.observatory.otlp import walk

sys.path.insert(0, str(Path(__file__).parent))
from ingest import payloads  # the ingest benchmark's payloads: one builder for both


def parse_only(payload: bytes) -> None:
    """Parse with the full opentelemetry.proto class."""
    ExportTraceServiceRequest().ParseFromString(payload)


def cpu_per_span(run: Callable[[bytes], object], data: list[bytes], spans: int) -> float:
    """Microseconds of this thread's CPU per span for one pass over the payloads."""
    gc.collect()
    start = time.thread_time_ns()
    for payload in data:
        run(payload)
    return (time.thread_time_ns() - start) / spans / 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--cpu", type=int, default=0)
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    data = payloads(args.spans)
    spans = sum(len(walk.walk_python(p)) for p in data)
    modes: dict[str, Callable[[bytes], object]] = {"parse-only": parse_only}
    if walk.walk_compiled is not None:
        modes["compiled walker"] = walk.walk_compiled
    modes["pure-Python walker"] = walk.walk_python
    print(
        f"{len(data)} payloads, {spans} spans, {sum(map(len, data)) / spans:.0f} bytes per span; {walk.IMPLEMENTATION}"
    )
    times: dict[str, list[float]] = {name: [] for name in modes}
    names = list(modes)
    for number in range(args.rounds):
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(cpu_per_span(modes[name], data, spans))
    parse = statistics.median(times["parse-only"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:>20}: {median:6.3f} µs/span CPU   parse-only ÷ this = {parse / median:5.2f}")


if __name__ == "__main__":
    main()
