"""What tail sampling costs per span: the ingest path with and without the sampler, same payloads, one run.

Payloads are the ingest benchmark's (`ingest.payloads`: shop traces, 512 spans per request, one service
each). Every mode decodes each payload with the span walker and offers it to a `Pipeline` (card
redactor, group commit) over a `DuckDBStore` of its own, waiting for every batch's future. The sampled
modes put a `TailSampler` between the pipeline and the store, built as the observatory builds it, and
end each round with `flush()`: every held trace decided and the kept spans committed, so a round's time
holds the whole cost (journal write and sync, hold, policies, storing what is kept). Rounds alternate
the modes' order. Printed: µs per span (rounds plus the closing checkpoint), the ratio of each sampled
mode's time per span to the plain pipeline's (overall, and the median of the rounds paired with the
plain pipeline's round on the same payloads), and what each kept.
Usage: python benchmarks/sampling.py [--spans 200000] [--rounds 8] [--dir DIR]
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import ingest

from boutique.observatory.otlp import walk
from boutique.observatory.pipeline import Pipeline
from boutique.observatory.processors.redact import CardRedactor
from boutique.observatory.sampling import TailSampler, journal_directory, parse
from boutique.observatory.store.duckdb_store import DuckDBStore

ERRORS = {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}
SLOW = {"name": "slow", "type": "latency", "latency": {"threshold_ms": 30}}
TEN_PERCENT = {"name": "ten-percent", "type": "probabilistic", "probabilistic": {"sampling_percentage": 10}}
CHECKOUT = {
    "name": "checkout",
    "type": "string_attribute",
    "string_attribute": {"key": "http.route", "values": ["/cart/checkout"]},
}
NOT_GOLD = {
    "name": "not-gold",
    "type": "string_attribute",
    "string_attribute": {"key": "app.user.tier", "values": ["gold"], "invert_match": True},
}
MODES: dict[str, list[dict[str, Any]] | None] = {
    "plain pipeline (no sampling)": None,
    "errors + slow + 10%": [ERRORS, SLOW, TEN_PERCENT],
    "... + two attribute policies": [ERRORS, SLOW, TEN_PERCENT, CHECKOUT, NOT_GOLD],
    "always_sample (keeps all)": [{"name": "all", "type": "always_sample"}],
}


@dataclass
class Mode:
    """One pipeline, its store and sampler, and its accumulated figures."""

    run: Callable[[list[bytes]], int]
    store: DuckDBStore
    pipeline: Pipeline
    sampler: TailSampler | None
    spans: int = 0
    wall_ns: int = 0
    rounds: list[float] = field(default_factory=list)  # µs per span, each round
    checkpoint_ns: int = 0


def build(folder: Path, name: str, policies: list[dict[str, Any]] | None) -> Mode:
    """A pipeline over a new store, through a sampler when `policies` are given."""
    store = DuckDBStore(folder / f"{len(list(folder.iterdir()))}.duckdb", threads=1)
    sampler = None
    if policies is not None:
        config = parse({"decision_wait": "1s", "policies": policies}, name)
        sampler = TailSampler(store, config, journal_directory(store.path))
        sampler.start()
    pipeline = Pipeline(sampler or store, [CardRedactor()])
    pipeline.start()
    offer = ingest.through_pipeline(pipeline, walk.walk)

    def run(chunk: list[bytes]) -> int:
        spans = offer(chunk)
        if sampler is not None:
            sampler.flush()
        return spans

    return Mode(run, store, pipeline, sampler)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument(
        "--dir", type=Path, default=None, help="where the stores go (default: a temporary one)"
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(dir=args.dir))
    try:
        data = ingest.payloads(args.spans + 20_000)
        warm, data = data[:40], data[40:]
        modes = {name: build(folder, name, policies) for name, policies in MODES.items()}
        for mode in modes.values():
            mode.run(warm)
            mode.store.checkpoint()
        per_round = -(-len(data) // args.rounds)
        order = list(modes)
        for number, start in enumerate(range(0, len(data), per_round)):
            chunk = data[start : start + per_round]
            for name in order if number % 2 == 0 else order[::-1]:
                mode = modes[name]
                gc.collect()
                began = time.perf_counter_ns()
                spans = mode.run(chunk)
                took = time.perf_counter_ns() - began
                mode.spans, mode.wall_ns = mode.spans + spans, mode.wall_ns + took
                mode.rounds.append(took / 1000 / spans)
        report(modes)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def report(modes: dict[str, Mode]) -> None:
    """Stop everything, checkpoint each store, print µs per span and the ratios."""
    for mode in modes.values():
        mode.pipeline.stop()
        if mode.sampler is not None:
            mode.sampler.stop()
        began = time.perf_counter_ns()
        mode.store.checkpoint()
        mode.checkpoint_ns = time.perf_counter_ns() - began
    plain = next(iter(modes.values()))
    plain_us = (plain.wall_ns + plain.checkpoint_ns) / 1000 / plain.spans
    walker = "compiled" if walk.COMPILED else "pure-Python"
    print(f"{plain.spans:,} spans per mode, {len(plain.rounds)} interleaved rounds, {walker} span walker")
    for name, mode in modes.items():
        us = (mode.wall_ns + mode.checkpoint_ns) / 1000 / mode.spans
        stored = mode.store.stats()["spans"]
        paired = sorted(m / p for m, p in zip(mode.rounds, plain.rounds, strict=True))
        line = f"  {name:<32} {us:6.2f} µs/span  ({1e6 / us:>9,.0f} spans/s)  ratio {us / plain_us:4.2f}"
        line += f" (paired rounds median {statistics.median(paired):.2f}, {paired[0]:.2f}-{paired[-1]:.2f})"
        line += f"; {stored:,} spans stored"
        if mode.sampler is not None:
            us_over = us - plain_us
            kept = mode.sampler.snapshot()["spans"]
            line += f" ({kept['stored'] / kept['journaled']:.0%} kept); sampling adds {us_over:+.2f} µs/span"
        print(line)
        mode.store.close()


if __name__ == "__main__":
    main()
