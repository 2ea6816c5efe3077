"""What always-on profiling costs the shop: checkout latency and CPU with the profiler on vs off, in one run.

Two whole shops run at once (`boutique up --plain --no-load`), both traced as a user gets them, each with
its own observatory: "off" with BOUTIQUE_PROFILING=off, "on" with the profiler at its default rate (or
`--hz`). One HTTP session per shop adds a product to its cart, then checks out; only the checkout POST is
timed. Rounds alternate the order (off on, on off, ...). The CPU time of every process of each shop is
summed over the rounds, the shop's services apart from the observatory (which stores the profiles
too). The profiler counts its own ticks (`/metrics`: `boutique_mesh_profiler_ticks_total`); the effective rate each
process reached during the rounds is printed: under load the sampler waits for the interpreter lock, so
it falls below the rate asked for.
Usage: python benchmarks/profiling_overhead.py [--rounds 30] [--per-round 10] [--hz 100]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from tracing_overhead import Ratio, Samples, Shop, checkout, checkout_form, cpu_spent, start_shop

from boutique.run.scenarios.target import Target

SHOPS = ("off", "on")
TICKS = "boutique_mesh_profiler_ticks_total"
OBSERVATORY = "observatory"


def service_pids(shop: Shop) -> dict[int, str]:
    """The shop's processes by pid, with their service names (up.json)."""
    target = Target.load(shop.data_dir)
    return {process.pid: process.service for process in target.processes if process.pid}


def split_cpu(shop: Shop, before: dict[int, float], after: dict[int, float]) -> tuple[float, float]:
    """CPU seconds of the shop's services and of its observatory between two snapshots."""
    services = service_pids(shop)
    observatory = {pid for pid, service in services.items() if service == OBSERVATORY}
    spent = {pid: seconds - before.get(pid, 0.0) for pid, seconds in after.items()}
    mine = sum(seconds for pid, seconds in spent.items() if pid in observatory)
    return sum(spent.values()) - mine, mine


def ticks(shop: Shop) -> dict[str, tuple[float, float]]:
    """The profiler's tick count of every process that serves /metrics, and when it was read, by instance."""
    found: dict[str, tuple[float, float]] = {}
    for process in Target.load(shop.data_dir).processes:
        if not process.metrics:
            continue
        url = process.metrics if "://" in process.metrics else f"http://{process.metrics}"
        with contextlib.suppress(httpx.HTTPError):
            text = httpx.get(f"{url.rstrip('/')}/metrics", timeout=5.0).text
            for line in text.splitlines():
                if line.startswith(TICKS):
                    found[process.instance] = (float(line.rsplit(" ", 1)[1]), time.monotonic())
    return found


def main() -> None:
    """Start both shops, warm them, measure interleaved rounds, print the ratios and the rates reached."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="interleaved rounds")
    parser.add_argument("--per-round", type=int, default=10, help="checkouts per shop per round")
    parser.add_argument("--warmup-checkouts", type=int, default=20, help="per shop")
    parser.add_argument("--hz", type=int, default=100, help="the profiler's rate in the 'on' shop")
    args = parser.parse_args()
    envs = {"off": {"BOUTIQUE_PROFILING": "off"}, "on": {"BOUTIQUE_PROFILING_HZ": str(args.hz)}}
    with tempfile.TemporaryDirectory(prefix="profiling-bench-") as tmp:
        shops: dict[str, Shop] = {}
        sessions: dict[str, httpx.Client] = {}
        try:
            began = time.monotonic()
            for name in SHOPS:
                shops[name] = start_shop(name, Path(tmp), traced=True, env=envs[name])
            print(f"both shops up in {time.monotonic() - began:.1f}s; warming up", flush=True)
            form = checkout_form()
            for name, shop in shops.items():
                sessions[name] = httpx.Client(base_url=shop.url, follow_redirects=True, timeout=30.0)
            for _ in range(args.warmup_checkouts):
                for session in sessions.values():
                    checkout(session, form)
            results = {name: Samples() for name in SHOPS}
            cpu_before = {name: shop.cpu_seconds() for name, shop in shops.items()}
            ticks_before = ticks(shops["on"])
            for number in range(args.rounds):
                for name in SHOPS if number % 2 == 0 else SHOPS[::-1]:
                    gc.collect()
                    results[name].add([checkout(sessions[name], form) for _ in range(args.per_round)])
                if (number + 1) % 10 == 0 or number + 1 == args.rounds:
                    print(f"    round {number + 1}/{args.rounds}", flush=True)
            ticks_after = ticks(shops["on"])
            cpu = {
                name: split_cpu(shop, cpu_before[name], shop.cpu_seconds()) for name, shop in shops.items()
            }
            total = {name: cpu_spent(cpu_before[name], shops[name].cpu_seconds()) for name in SHOPS}
        finally:
            for session in sessions.values():
                session.close()
            for shop in shops.values():
                shop.stop()
    checkouts = args.rounds * args.per_round
    print(
        f"checkout latency, {args.rounds} interleaved rounds of {args.per_round} per shop (timed: POST"
        " /cart/checkout only; CPU: every process of the shop, incl. the add-to-cart before each checkout)"
    )
    for name in SHOPS:
        samples, (services, observatory) = results[name], cpu[name]
        print(
            f"  {name:<3} mean {samples.mean():6.1f} ms  p50 {samples.pct(50):6.1f} ms  p99 {samples.pct(99):6.1f} ms"
            f"  CPU {services / checkouts * 1000:6.1f} ms/checkout in the services,"
            f" {observatory / checkouts * 1000:5.1f} in the observatory"
        )
    ratio = Ratio.of(results["on"], results["off"])
    print(f"  on/off latency: {ratio.text()}")
    print(f"  on/off CPU per checkout, services: {cpu['on'][0] / cpu['off'][0]:.3f}")
    print(f"  on/off CPU per checkout, observatory: {cpu['on'][1] / max(cpu['off'][1], 1e-9):.3f}")
    print(f"  on/off CPU per checkout, everything: {total['on'] / total['off']:.3f}")
    rates = {
        instance: (count - ticks_before[instance][0]) / (at - ticks_before[instance][1])
        for instance, (count, at) in ticks_after.items()
        if instance in ticks_before
    }
    if rates:
        ordered = sorted(rates.items(), key=lambda item: item[1])
        print(
            f"  effective sample rate over the rounds (asked {args.hz} Hz), {len(rates)} processes:"
            f" median {statistics.median(rates.values()):.1f} Hz, lowest {ordered[0][0]} {ordered[0][1]:.1f} Hz,"
            f" highest {ordered[-1][0]} {ordered[-1][1]:.1f} Hz"
        )
        for instance, rate in ordered:
            print(f"    {instance:<24} {rate:6.1f} Hz")
    else:
        print(f"  no process served {TICKS}: was the profiler on?")
    print(
        f"ratio profiled/off: checkout latency {ratio.mean:.3f} (mean), services CPU {cpu['on'][0] / cpu['off'][0]:.3f}"
    )


if __name__ == "__main__":
    main()
