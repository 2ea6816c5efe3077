"""Graceful overload: what the shop serves when offered more home pages than it can make.

Starts one real shop per limiter mode (`boutique up --no-load` with BOUTIQUE_LIMITER=off and =on by
default, free ports, temporary data directories), both running side by side, and measures against each:

1. the unloaded latency: one request at a time for a few seconds (p50/p99);
2. the saturation rate: a closed-loop ramp (1, 2, 4, … requests in flight), the most pages/s served;
3. open-loop steps at 0.5x, 1x, 2x and 4x the saturation rate of the first mode (requests sent at a
   constant rate whatever the answers, as arriving shoppers do; latency counted from the planned send
   time, so a slow sender cannot hide a queue). Each step runs on one shop, then on the other (the
   order alternating from step to step, so drift on the shared machine hits both alike), each shop
   first left to drain its queues.

Per step it prints the offered rate, the goodput (successful pages/s), the shed requests (503 with
Retry-After) and their latency, the other failures, and the p50/p99 of successes; then a table of ratios
side by side for the modes. Targets at 4x with the limiter on: goodput >= 80 % of the saturation rate,
p99 of successes <= 3x the unloaded p99, shed requests answered in < 50 ms.

The HTTP client is a minimal HTTP/1.1 keep-alive client on asyncio streams, so the load generator, which
shares the machine's cores with the shop, spends little CPU per request.
Usage: python benchmarks/overload.py [--modes off,on] [--step 10] [--multipliers 0.5,1,2,4] [--rate R]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil
from failover import Shop, start_shop, stop_shop
from prometheus_client.parser import text_string_to_metric_families

from boutique.run.ports import free_port

SHED_METRIC = "boutique_mesh_concurrency_shed"


@dataclass
class Answer:
    """One request's outcome: "ok", "shed" (503 + Retry-After), or a failure kind; latency in seconds."""

    kind: str
    latency: float


class StaleConnection(Exception):
    """The connection was closed before any answer came (an idle keep-alive the server let go)."""


class Connections:
    """Keep-alive HTTP/1.1 connections to one host:port, opened on demand up to `limit`."""

    def __init__(self, host: str, port: int, limit: int) -> None:
        self.host, self.port, self.limit = host, port, limit
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.open = 0
        self.request = f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: overload-bench\r\n\r\n".encode()

    async def get(self, timeout: float) -> Answer:
        """GET / once; the answer's kind and how long it took from now.

        A kept-alive connection the server closed meanwhile (uvicorn closes idle ones after 5 s) fails
        before any answer; then the request goes once more on a new connection, as browsers do.
        """
        began = time.monotonic()
        for reuse in (bool(self.idle), False):
            if reuse:
                reader, writer = self.idle.pop()
            elif self.open >= self.limit:
                return Answer("client limit", 0.0)
            else:
                self.open += 1
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(self.host, self.port), timeout
                    )
                except (OSError, TimeoutError):
                    self.open -= 1
                    return Answer("connect error", time.monotonic() - began)
            try:
                status, headers, keep = await asyncio.wait_for(self._exchange(reader, writer), timeout)
                break
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, StaleConnection) as exc:
                self._discard(writer)
                if not (reuse and isinstance(exc, StaleConnection)):
                    kind = "timeout" if isinstance(exc, TimeoutError) else "broken"
                    return Answer(kind, time.monotonic() - began)
        else:
            return Answer("broken", time.monotonic() - began)
        took = time.monotonic() - began
        if keep:
            self.idle.append((reader, writer))
        else:
            self._discard(writer)
        if status == 200:
            return Answer("ok", took)
        if status == 503 and "retry-after" in headers:
            return Answer("shed", took)
        return Answer(f"HTTP {status}", took)

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[int, dict[str, str], bool]:
        """Send the request, read the whole response; (status, headers, connection reusable)."""
        writer.write(self.request)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            raise StaleConnection from exc
        except ConnectionError as exc:
            raise StaleConnection from exc
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            await reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, headers.get("connection", "").lower() != "close"

    def _discard(self, writer: asyncio.StreamWriter) -> None:
        self.open -= 1
        writer.close()

    async def close(self) -> None:
        """Close every idle connection (busy ones close when their request ends)."""
        while self.idle:
            _, writer = self.idle.pop()
            self._discard(writer)
        await asyncio.sleep(0)


@dataclass
class Step:
    """The answers of one load step."""

    label: str
    seconds: float
    offered: float | None = None  # requests/s sent (open loop); None for closed loop
    answers: list[Answer] = field(default_factory=list)

    def of(self, kind: str) -> list[float]:
        """Sorted latencies of the answers of one kind."""
        return sorted(a.latency for a in self.answers if a.kind == kind)

    @property
    def goodput(self) -> float:
        """Successful pages per second."""
        return len(self.of("ok")) / self.seconds

    def failures(self) -> dict[str, int]:
        """Answers that were neither a page nor a shed, by kind."""
        counts: dict[str, int] = {}
        for answer in self.answers:
            if answer.kind not in ("ok", "shed"):
                counts[answer.kind] = counts.get(answer.kind, 0) + 1
        return counts


def quantile(values: list[float], q: float) -> float:
    """The q-quantile of sorted values (nan when empty)."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


def ms(value: float) -> str:
    """Seconds as milliseconds for the tables."""
    return "-" if value != value else f"{value * 1000:.0f}" if value >= 0.1 else f"{value * 1000:.1f}"


async def closed_loop(
    pool: Connections, concurrency: int, seconds: float, timeout: float, label: str
) -> Step:
    """`concurrency` workers, each sending its next request when the last one is answered."""
    step = Step(label, seconds)
    ends = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < ends:
            answer = await pool.get(timeout)
            if time.monotonic() <= ends:
                step.answers.append(answer)
            if answer.kind == "client limit":
                await asyncio.sleep(0.01)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return step


async def open_loop(pool: Connections, rate: float, seconds: float, timeout: float, label: str) -> Step:
    """Requests sent at a constant `rate` for `seconds`; latency counted from each planned send time."""
    step = Step(label, seconds, offered=rate)
    interval, began = 1.0 / rate, time.monotonic()
    running: set[asyncio.Task[None]] = set()

    async def one(planned: float) -> None:
        answer = await pool.get(timeout)
        answer.latency = time.monotonic() - planned
        step.answers.append(answer)

    number = 0
    while (planned := began + number * interval) < began + seconds:
        delay = planned - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(planned))
        running.add(task)
        task.add_done_callback(running.discard)
        number += 1
    if running:
        await asyncio.wait(running, timeout=timeout + 5)
    return step


def limiter_env(mode: str) -> dict[str, str]:
    """The variables of a mode: `on`, `off`, or `fixed:N` (a fixed limit of N, for comparison)."""
    name, _, limit = mode.partition(":")
    env = {"BOUTIQUE_LIMITER": name}
    if limit:
        env.update(BOUTIQUE_LIMITER_INITIAL=limit, BOUTIQUE_LIMITER_MIN="1", BOUTIQUE_LIMITER_MAX=limit)
    return env


async def start_mode(mode: str, observatory: bool, ready_timeout: float) -> Shop:
    """A shop with BOUTIQUE_LIMITER=mode (and its own observatory, or none), once it is up."""
    ports = ["--observatory-ports", ",".join(str(free_port()) for _ in range(4))]
    options = ports if observatory else ["--no-observatory"]
    return await start_shop(options, ready_timeout, limiter_env(mode), label=mode)


async def watch_limit(http: httpx.AsyncClient, shop: Shop, seconds: float) -> list[int]:
    """The frontend's concurrency limit every 0.25 s for `seconds` (empty when it has none)."""
    url, seen = None, []
    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
        for instance in (await http.get(f"{shop.registry_url}/v1/services/frontend")).json()["instances"]:
            if instance["ports"].get("http") == shop.port and instance["ports"].get("metrics"):
                url = f"http://{instance['address']}:{instance['ports']['metrics']}/mesh/status"
    ends = time.monotonic() + seconds
    while url and time.monotonic() < ends:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, IndexError):
            seen.append(int((await http.get(url)).json()["limiters"][0]["limit"]))
        await asyncio.sleep(0.25)
    return seen


async def limiter_state(http: httpx.AsyncClient, shop: Shop) -> tuple[str, int]:
    """The frontend's limit now (text) and the requests shed by every process of the shop so far."""
    frontend, shed = "-", 0
    try:
        services = (await http.get(f"{shop.registry_url}/v1/services")).json()
    except (httpx.HTTPError, ValueError):
        return frontend, shed
    for instances in services.get("services", {}).values():
        for instance in instances:
            metrics = instance.get("ports", {}).get("metrics")
            if not metrics:
                continue
            base = f"http://{instance['address']}:{metrics}"
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                text = (await http.get(f"{base}/metrics")).text
                for family in text_string_to_metric_families(text):
                    if family.name == SHED_METRIC:
                        shed += int(sum(s.value for s in family.samples if s.name.endswith("_total")))
                if instance.get("ports", {}).get("http") == shop.port:
                    limiters = (await http.get(f"{base}/mesh/status")).json().get("limiters", [])
                    frontend = ", ".join(describe(x) for x in limiters) or "-"
    return frontend, shed


def describe(limiter: dict[str, Any]) -> str:
    """A limiter's state from /mesh/status, in a few words."""
    text = str(limiter.get("limit", "?"))
    if "sample_rtt_ms" in limiter:
        text += (
            f" (rtt {limiter['sample_rtt_ms']:.1f} ms, baseline {limiter['baseline_rtt_ms']:.1f} ms,"
            f" gradient {limiter['gradient']:.2f}, {limiter['probes']} probes)"
        )
    return text


async def drain(pool: Connections, quiet: float, timeout: float, limit: float = 60.0) -> float:
    """Wait until three requests in a row are answered within `quiet` s (the shop's queues are empty)."""
    began, calm = time.monotonic(), 0
    while calm < 3 and time.monotonic() - began < limit:
        answer = await pool.get(timeout)
        calm = calm + 1 if answer.kind == "ok" and answer.latency <= quiet else 0
        if calm == 0:
            await asyncio.sleep(0.2)
    return time.monotonic() - began


def row(step: Step, reference: float, extra: str = "") -> str:
    """One printed line per step."""
    ok, shed = step.of("ok"), step.of("shed")
    failures = step.failures()
    failed = sum(failures.values())
    offered = (
        f"{step.offered:7.1f}/s" if step.offered is not None else f"{len(step.answers) / step.seconds:7.1f}/s"
    )
    text = (
        f"  {step.label:<12} offered {offered}  goodput {step.goodput:6.1f}/s ({step.goodput / reference:4.0%})"
        f"  ok p50 {ms(quantile(ok, 0.5)):>6} p99 {ms(quantile(ok, 0.99)):>6} ms"
        f"  shed {len(shed):5d} (p50 {ms(quantile(shed, 0.5)):>5} p99 {ms(quantile(shed, 0.99)):>5} ms)"
        f"  failed {failed}"
    )
    if failures:
        text += " (" + ", ".join(f"{k} {v}" for k, v in sorted(failures.items())) + ")"
    return text + extra


@dataclass
class Result:
    """What one mode measured, and its shop."""

    mode: str
    shop: Shop
    pool: Connections
    unloaded: Step | None = None
    saturation: float = 0.0
    steps: list[Step] = field(default_factory=list)

    @property
    def unloaded_p50(self) -> float:
        """The median page time with one request in flight."""
        return quantile(self.unloaded.of("ok"), 0.5) if self.unloaded else float("nan")


async def calibrate(result: Result, args: argparse.Namespace, say: Callable[[str], None]) -> None:
    """Warm up, then the unloaded latency and the closed-loop ramp to the saturation rate."""
    pool = result.pool
    await closed_loop(pool, 2, args.warmup, args.timeout, "warm-up")
    result.unloaded = unloaded = await closed_loop(pool, 1, args.unloaded, args.timeout, "unloaded")
    p50, p99 = quantile(unloaded.of("ok"), 0.5), quantile(unloaded.of("ok"), 0.99)
    say(f"\n== BOUTIQUE_LIMITER={result.mode} (shop on 127.0.0.1:{result.shop.port})")
    say(f"  unloaded (1 in flight): {len(unloaded.of('ok'))} pages, p50 {ms(p50)} ms, p99 {ms(p99)} ms")
    best = 0.0
    for concurrency in args.ramp:
        step = await closed_loop(pool, concurrency, args.ramp_step, args.timeout, f"closed {concurrency}")
        best = max(best, step.goodput)
        say(row(step, max(best, 1e-9)))
    result.saturation = best
    say(f"  saturation rate: {best:.1f} pages/s (closed-loop ramp)")


async def offer(
    result: Result,
    http: httpx.AsyncClient,
    rate: float,
    label: str,
    args: argparse.Namespace,
    reference: float,
) -> str:
    """One open-loop step against the mode's shop, once its queues are empty; its printed line."""
    waited = await drain(result.pool, max(0.05, 3 * result.unloaded_p50), args.timeout)
    await result.pool.close()
    front = frontend_process(result.shop)
    cpu = (time.process_time(), busy(front), time.monotonic())
    step, limits = await asyncio.gather(
        open_loop(result.pool, rate, args.step, args.timeout, label),
        watch_limit(http, result.shop, args.step),
    )
    elapsed = time.monotonic() - cpu[2]
    load = f"CPU: load generator {(time.process_time() - cpu[0]) / elapsed:.0%}"
    load += f", frontend {(busy(front) - cpu[1]) / elapsed:.0%}"
    result.steps.append(step)
    frontend, shed = await limiter_state(http, result.shop)
    if limits:
        frontend += f"; during the step {min(limits)}..{sorted(limits)[len(limits) // 2]}..{max(limits)}"
    return row(
        step,
        reference,
        f"\n      [{result.mode}: frontend limit {frontend}; shed in all {shed}; {load}; drained {waited:.1f}s]",
    )


def frontend_process(shop: Shop) -> psutil.Process | None:
    """The frontend's process, from up.json (None when it cannot be read)."""
    with contextlib.suppress(OSError, ValueError, KeyError, StopIteration, psutil.Error):
        state = json.loads((shop.data_dir / "up.json").read_text())
        return psutil.Process(next(p["pid"] for p in state["processes"] if p["service"] == "frontend"))
    return None


def busy(process: psutil.Process | None) -> float:
    """CPU seconds the process has used so far (0 when unknown)."""
    if process is None:
        return 0.0
    with contextlib.suppress(psutil.Error):
        times = process.cpu_times()
        return float(times.user + times.system)
    return 0.0


def verdict(result: Result, saturation: float, unloaded_p99: float) -> list[str]:
    """The three targets at the highest step."""
    step = result.steps[-1]
    ok_p99, shed_p99 = quantile(step.of("ok"), 0.99), quantile(step.of("shed"), 0.99)
    goodput = step.goodput / saturation
    return [
        f"goodput {goodput:.1%} of saturation (target >= 80%): {'met' if goodput >= 0.8 else 'NOT met'}",
        f"p99 of successes {ok_p99 / unloaded_p99:.1f}x unloaded p99 (target <= 3x): "
        f"{'met' if ok_p99 <= 3 * unloaded_p99 else 'NOT met'}",
        f"shed p99 {ms(shed_p99)} ms (target < 50 ms): "
        f"{'met' if shed_p99 < 0.05 else 'NOT met' if shed_p99 == shed_p99 else 'nothing shed'}",
    ]


async def main_async(args: argparse.Namespace) -> None:
    """A shop per mode, side by side: calibrate each, then every step on each (alternating the order)."""
    began = time.monotonic()
    shops = await asyncio.gather(
        *(start_mode(mode, args.observatory, args.ready_timeout) for mode in args.modes),
        return_exceptions=True,
    )
    started = [shop for shop in shops if isinstance(shop, Shop)]
    try:
        failed = [shop for shop in shops if not isinstance(shop, Shop)]
        if failed:
            raise SystemExit(f"a shop did not start: {failed[0]}")
        results = [
            Result(shop.label, shop, Connections("127.0.0.1", shop.port, args.max_connections))
            for shop in started
        ]
        for result in results:
            await calibrate(result, args, print)
        rate0 = args.rate or results[0].saturation
        print(
            f"\n== open loop, offered rates relative to {rate0:.1f} pages/s ({results[0].mode}'s saturation)"
        )
        async with httpx.AsyncClient(timeout=3.0, trust_env=False) as http:
            for index, multiplier in enumerate(args.multipliers):
                order = results if index % 2 == 0 else results[::-1]
                for result in order:
                    print(await offer(result, http, rate0 * multiplier, f"open {multiplier:g}x", args, rate0))
        for result in results:
            await result.pool.close()
    finally:
        await asyncio.gather(*(stop_shop(shop) for shop in started))
    basis = results[0]
    assert basis.unloaded is not None
    saturation = rate0
    unloaded_p99 = quantile(basis.unloaded.of("ok"), 0.99)
    print(
        f"\n== ratios (saturation {saturation:.1f} pages/s and unloaded p99 {ms(unloaded_p99)} ms, "
        f"both measured with BOUTIQUE_LIMITER={basis.mode})"
    )
    header = f"  {'step':<9}" + "".join(
        f" | {r.mode + ': goodput/sat':>17} {'p99/unl.p99':>11} {'shed':>6} {'shed p99':>8} {'failed':>6}"
        for r in results
    )
    print(header)
    for index, multiplier in enumerate(args.multipliers):
        line = f"  {f'{multiplier:g}x':<9}"
        for result in results:
            step = result.steps[index]
            p99 = quantile(step.of("ok"), 0.99) / unloaded_p99
            line += (
                f" | {step.goodput / saturation:>17.2f} {p99:>11.1f} {len(step.of('shed')):>6}"
                f" {ms(quantile(step.of('shed'), 0.99)):>8} {sum(step.failures().values()):>6}"
            )
        print(line)
    for result in results:
        print(
            f"  at {args.multipliers[-1]:g}x, BOUTIQUE_LIMITER={result.mode}: "
            + "; ".join(verdict(result, saturation, unloaded_p99))
        )
    if len(results) == 2 and results[0].steps and results[1].steps:
        a, b = results[0].steps[-1], results[1].steps[-1]
        if a.goodput > 0:
            print(
                f"  goodput at {args.multipliers[-1]:g}x, {results[1].mode} / {results[0].mode}: "
                f"{b.goodput / a.goodput:.2f}"
            )
    print(f"whole run {time.monotonic() - began:.0f} s")


def numbers(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    """A comma-separated list parser for argparse."""
    return lambda text: [kind(part) for part in text.split(",") if part.strip()]


def main() -> None:
    """Parse the options and run, bounded in time (every loop and wait has a limit)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--modes",
        type=numbers(str),
        default=["off", "on"],
        help="BOUTIQUE_LIMITER values in order: on, off, fixed:N",
    )
    parser.add_argument("--multipliers", type=numbers(float), default=[0.5, 1.0, 2.0, 4.0])
    parser.add_argument(
        "--rate", type=float, default=0.0, help="saturation rate to use instead of measuring it"
    )
    parser.add_argument("--step", type=float, default=10.0, help="seconds per open-loop step")
    parser.add_argument(
        "--ramp", type=numbers(int), default=[1, 2, 4, 8, 16, 32], help="closed-loop concurrencies"
    )
    parser.add_argument("--ramp-step", type=float, default=3.0, help="seconds per ramp level")
    parser.add_argument("--unloaded", type=float, default=5.0, help="seconds of one-at-a-time requests")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up")
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds before a request counts as failed"
    )
    parser.add_argument("--max-connections", type=int, default=1000, help="client connections at most")
    parser.add_argument(
        "--no-observatory", dest="observatory", action="store_false", help="run without tracing backend"
    )
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    args = parser.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
