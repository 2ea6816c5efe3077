"""Failover under load: kill -9 one of three cart replicas and count what the shopper and the mesh notice.

Starts `boutique up --no-load --replicas cart=3` (free ports, a temporary data directory), then drives
two steady streams of idempotent requests that need the cart service: GET /cart through the frontend
from several httpx clients, each with its own session cookie, and GetCart straight through a mesh
`GrpcDependency` that resolves "cart" in the registry. Mid-run one cart replica gets SIGKILL (its pid
from up.json). Printed: failed requests before and after the kill (HTTP status >= 500 or no answer from
the frontend; errors of the mesh client), and how long after the kill the dead instance left the
frontend's "cart" instance list or was ejected (its /mesh/status, polled 20 ms after each answer), and for
the benchmark's own mesh client. Targets (MESH.md): 0 failed requests, traffic off the instance within 1 s.
Usage: python benchmarks/failover.py [--rate 200] [--clients 8] [--mesh-rate 100] [--before 3] [--after 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from boutique.mesh.dependency import CallPolicy
from boutique.mesh.discovery.registry import RegistryResolver
from boutique.mesh.grpc_client import GrpcDependency
from boutique.run.ports import free_port
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.proto import demo_pb2_grpc as pb_grpc

SESSION_COOKIE = "shop_session-id"
REQUEST_TIMEOUT = 3.0
RETRIES = "boutique_mesh_client_retries"
OWN_POLL = 0.005  # the benchmark's own client is read in-process, so it can be watched closely


@dataclass
class Shop:
    """A running `boutique up` and what the benchmarks need to know about it (overload.py uses it too)."""

    process: asyncio.subprocess.Process
    data_dir: Path
    frontend_url: str
    registry_url: str
    label: str = ""
    output: deque[str] = field(default_factory=lambda: deque(maxlen=40))
    reader: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The frontend's port."""
        return int(self.frontend_url.rsplit(":", 1)[1])


@dataclass
class Stream:
    """Outcomes of one request stream: (seconds since start, latency, failure kind or "") per request."""

    name: str
    results: list[tuple[float, float, str]] = field(default_factory=list)
    dropped: int = 0  # not sent because too many were in flight already

    def failures(self, since: float | None = None, until: float | None = None) -> list[tuple[float, str]]:
        """(when, kind) of the failed requests sent within [since, until)."""
        low, high = since if since is not None else -1e9, until if until is not None else 1e9
        return [(at, kind) for at, _, kind in self.results if kind and low <= at < high]

    def summary(self, kill_at: float) -> str:
        """One paragraph: counts, failures before/after the kill, latency."""
        latencies = sorted(took for _, took, kind in self.results if not kind)
        before, after = self.failures(until=kill_at), self.failures(since=kill_at)
        kinds = statistics.multimode([kind for _, kind in after]) if after else []
        text = (
            f"{self.name}: {len(self.results)} requests, failed {len(before)} before the kill and "
            f"{len(after)} after it"
        )
        if after:
            text += f" (mostly {kinds[0]}; first at +{after[0][0] - kill_at:.3f}s, last at +{after[-1][0] - kill_at:.3f}s)"
        if latencies:
            p50 = latencies[len(latencies) // 2]
            p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
            text += f"; latency p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms"
        if self.dropped:
            text += f"; {self.dropped} not sent (client saturated)"
        return text


async def start_shop(
    options: Sequence[str], ready_timeout: float, env: dict[str, str] | None = None, label: str = "failover"
) -> Shop:
    """`boutique up --plain --no-load` plus `options` on free ports in a temporary directory, with `env`
    added to the environment; returns once it prints that it is up."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"boutique-{label.replace(':', '')}-"))
    frontend_port, registry_port = free_port(), free_port()
    command = [sys.executable, "-m", "boutique.cli", "up", "--plain", "--no-load"]
    command += ["--frontend-port", str(frontend_port), "--registry-port", str(registry_port)]
    command += ["--data-dir", str(data_dir), *options]
    process = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    frontend, registry = f"http://127.0.0.1:{frontend_port}", f"http://127.0.0.1:{registry_port}"
    shop = Shop(process, data_dir, frontend, registry, label)
    ready = asyncio.get_running_loop().create_future()

    async def read() -> None:
        """Keep the pipe drained (and the last lines for errors); resolve `ready` on the ready line."""
        assert process.stdout is not None
        async for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip()
            shop.output.append(line)
            if "Boutique is up" in line and not ready.done():
                ready.set_result(line)
        if not ready.done():
            ready.set_exception(RuntimeError("boutique up exited before it was ready"))

    shop.reader = asyncio.create_task(read())
    try:
        await asyncio.wait_for(ready, ready_timeout)
    except (TimeoutError, RuntimeError) as exc:
        await stop_shop(shop)
        tail = "\n".join(shop.output)
        raise SystemExit(f"boutique up not ready ({exc or 'timed out'}):\n{tail}") from None
    return shop


async def stop_shop(shop: Shop, grace: float = 20.0) -> None:
    """SIGINT to `boutique up` and wait for it (it stops every child), SIGKILL if it hangs; remove its data."""
    if shop.process.returncode is None:
        shop.process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(shop.process.wait(), grace)
        except TimeoutError:
            print("boutique up did not stop in time: SIGKILL (its children die with it)")
            shop.process.kill()
            await shop.process.wait()
    if shop.reader is not None:
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(shop.reader, 5.0)
    shutil.rmtree(shop.data_dir, ignore_errors=True)


def cart_processes(data_dir: Path) -> list[dict[str, Any]]:
    """The cart replicas in up.json (instance id, pid, address)."""
    state = json.loads((data_dir / "up.json").read_text())
    return [p for p in state["processes"] if p["service"] == "cart" and p["pid"]]


async def frontend_status_url(http: httpx.AsyncClient, shop: Shop) -> str:
    """The frontend's /mesh/status URL, from the metrics port it registered."""
    reply = await http.get(f"{shop.registry_url}/v1/services/frontend")
    for instance in reply.json()["instances"]:
        if instance["ports"].get("http") == shop.port and instance["ports"].get("metrics"):
            return f"http://{instance['address']}:{instance['ports']['metrics']}/mesh/status"
    raise SystemExit("the frontend registered no metrics port")


async def paced(
    rate: float,
    until: float,
    max_in_flight: int,
    stream: Stream,
    send: Callable[[int], Coroutine[Any, Any, None]],
) -> None:
    """Send at a steady `rate` per second (open loop) until the clock reads `until`; then await the stragglers."""
    interval, began = 1.0 / rate, time.monotonic()
    running: set[asyncio.Task[None]] = set()
    number = 0
    while (due := began + number * interval) < until:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        if len(running) >= max_in_flight:
            stream.dropped += 1
        else:
            task = asyncio.create_task(send(number))
            running.add(task)
            task.add_done_callback(running.discard)
        number += 1
    if running:
        await asyncio.wait(running)


async def retries_of(http: httpx.AsyncClient, metrics_url: str) -> str:
    """The frontend's count of GetCart retries, from its Prometheus text ("?" when unreadable)."""
    try:
        text = (await http.get(metrics_url)).text
    except httpx.HTTPError:
        return "?"
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            wanted = {"dependency": "cart", "method": "GetCart"}
            if sample.name == RETRIES + "_total" and sample.labels == wanted:
                return f"{sample.value:.0f}"
    return "0"


def instance_gone(dependencies: list[dict[str, Any]], instance_id: str) -> str | None:
    """How `instance_id` takes no traffic from the "cart" dependency ("removed", "ejected"), or None.

    A process with no "cart" dependency (yet) counts as "removed": it routes nothing there.
    """
    for dependency in dependencies:
        if dependency["dependency"] != "cart":
            continue
        for instance in dependency["instances"]:
            if instance["id"] == instance_id:
                return "ejected" if instance["ejected"] else None
    return "removed"


@dataclass
class Watch:
    """When (seconds after the kill) one client stopped sending traffic to the dead instance."""

    name: str
    ejected_after: float | None = None
    removed_after: float | None = None
    back_after: float | None = None  # restarted by `boutique up` and listed again
    polls: int = 0
    errors: int = 0
    last_poll: float = 0.0

    @property
    def gone_after(self) -> float | None:
        """The first of ejection and removal: from then on the balancer no longer picks it."""
        seen = [t for t in (self.ejected_after, self.removed_after) if t is not None]
        return min(seen) if seen else None

    def see(self, state: str | None, since_kill: float) -> None:
        """Record one observation ("ejected", "removed" or None) taken `since_kill` seconds after the kill."""
        self.polls += 1
        self.last_poll = since_kill
        if state == "ejected" and self.ejected_after is None:
            self.ejected_after = since_kill
        elif state == "removed" and self.removed_after is None:
            self.removed_after = since_kill
        elif state is None and self.removed_after is not None and self.back_after is None:
            self.back_after = since_kill

    def line(self) -> str:
        """The result in words."""
        if self.gone_after is None:
            return f"{self.name}: the dead instance was still taking traffic at the end ({self.polls} polls)"
        parts = []
        if self.ejected_after is not None:
            parts.append(f"ejected {self.ejected_after * 1000:.0f} ms")
        if self.removed_after is not None:
            parts.append(f"removed from the instance list {self.removed_after * 1000:.0f} ms")
        text = f"{self.name}: dead instance {' and '.join(parts)} after the kill"
        if self.back_after is not None:
            text += f"; restarted by boutique up and listed again after {self.back_after:.2f}s"
        every = self.last_poll / max(1, self.polls - 1) * 1000
        return text + f" ({self.polls} polls, one per {every:.0f} ms on average, {self.errors} failed)"


async def run(args: argparse.Namespace) -> None:
    """Start the shop, drive load, kill a cart replica, print what happened, stop the shop."""
    began = time.monotonic()
    shop = await start_shop(["--replicas", f"cart={args.replicas}"], args.ready_timeout)
    print(shop.output[-1])
    dependency: GrpcDependency | None = None
    try:
        carts = cart_processes(shop.data_dir)
        victim = carts[len(carts) // 2]
        listed = ", ".join(f"{c['instance']} (pid {c['pid']})" for c in carts)
        print(f"cart replicas: {listed}; will kill {victim['instance']}")
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as control:
            status_url = await frontend_status_url(control, shop)
            dependency = GrpcDependency(
                "cart",
                RegistryResolver(shop.registry_url),
                pb_grpc.CartServiceStub,
                CallPolicy(),
                caller="bench",
            )
            await dependency.start_and_wait()
            await measure(args, shop, status_url, control, dependency, victim)
    finally:
        if dependency is not None:
            await dependency.close()
        await stop_shop(shop)
        print(
            f"boutique up stopped (exit {shop.process.returncode}); whole run {time.monotonic() - began:.1f}s"
        )


async def measure(
    args: argparse.Namespace,
    shop: Shop,
    status_url: str,
    control: httpx.AsyncClient,
    dependency: GrpcDependency,
    victim: dict[str, Any],
) -> None:
    """The load, the kill and the watches; prints the figures."""
    web, mesh = Stream("frontend GET /cart"), Stream("mesh GetCart (benchmark's own client)")
    frontend_watch = Watch("frontend's /mesh/status")
    own_watch = Watch("benchmark's own mesh client")
    clients = [
        httpx.AsyncClient(
            base_url=shop.frontend_url,
            cookies={SESSION_COOKIE: str(uuid.uuid4())},
            timeout=REQUEST_TIMEOUT,
            trust_env=False,
        )
        for _ in range(args.clients)
    ]
    users = [str(uuid.uuid4()) for _ in range(args.clients)]
    start = time.monotonic()
    kill_at = args.before
    ends = start + args.before + args.after

    async def page(number: int) -> None:
        """One GET /cart through the frontend, with the session of client `number` mod clients."""
        sent = time.monotonic()
        try:
            reply = await clients[number % len(clients)].get("/cart")
            kind = f"HTTP {reply.status_code}" if reply.status_code >= 500 else ""
        except httpx.HTTPError as exc:
            kind = type(exc).__name__
        web.results.append((sent - start, time.monotonic() - sent, kind))

    async def get_cart(number: int) -> None:
        """One GetCart through the benchmark's own mesh client."""
        sent = time.monotonic()
        try:
            await dependency.call(
                "GetCart", pb.GetCartRequest(user_id=users[number % len(users)]), idempotent=True
            )
            kind = ""
        except Exception as exc:
            kind = type(exc).__name__
        mesh.results.append((sent - start, time.monotonic() - sent, kind))

    async def watch_frontend() -> None:
        """From the kill on, read the frontend's view of the cart instances."""
        await asyncio.sleep(max(0.0, start + kill_at - time.monotonic()))
        while time.monotonic() < ends:
            try:
                reply = await control.get(status_url)
                seen = time.monotonic() - start - kill_at
                frontend_watch.see(instance_gone(reply.json()["dependencies"], victim["instance"]), seen)
            except httpx.HTTPError:
                frontend_watch.errors += 1
            await asyncio.sleep(args.poll)

    async def watch_own() -> None:
        """From the kill on, read this process's own mesh client's view of the cart instances."""
        await asyncio.sleep(max(0.0, start + kill_at - time.monotonic()))
        while time.monotonic() < ends:
            state = instance_gone([dependency.snapshot()], victim["instance"])
            own_watch.see(state, time.monotonic() - start - kill_at)
            await asyncio.sleep(OWN_POLL)

    async def kill() -> None:
        """SIGKILL the victim on time, once the frontend is seen routing to it."""
        await asyncio.sleep(max(0.0, start + kill_at - time.monotonic()))
        reply = await control.get(status_url)
        if instance_gone(reply.json()["dependencies"], victim["instance"]) is not None:
            raise SystemExit(f"the frontend does not route to {victim['instance']} before the kill")
        os.kill(victim["pid"], signal.SIGKILL)
        print(f"SIGKILL {victim['instance']} (pid {victim['pid']}) at +{time.monotonic() - start:.3f}s")

    try:
        await asyncio.gather(
            paced(args.rate, ends, args.max_in_flight, web, page),
            paced(args.mesh_rate, ends, args.max_in_flight, mesh, get_cart),
            watch_frontend(),
            watch_own(),
            kill(),
        )
    finally:
        for client in clients:
            await client.aclose()
    print(
        f"load: {args.rate:g} req/s through the frontend from {args.clients} clients + {args.mesh_rate:g} GetCart/s "
        f"through the mesh, {args.before:g}s before the kill and {args.after:g}s after"
    )
    print(web.summary(kill_at))
    print(mesh.summary(kill_at))
    print(frontend_watch.line())
    print(own_watch.line())
    theirs = await retries_of(control, status_url.replace("/mesh/status", "/metrics"))
    ours = REGISTRY.get_sample_value(RETRIES + "_total", {"dependency": "cart", "method": "GetCart"}) or 0
    print(
        f"GetCart retried on another instance: {theirs} times by the frontend, {ours:.0f} by the benchmark's client"
    )
    failed = len(web.failures()) + len(mesh.failures())
    gone = frontend_watch.gone_after
    print(
        f"result: {failed} failed requests (target 0); traffic off the dead instance after "
        f"{'never' if gone is None else f'{gone * 1000:.0f} ms'} (target <= 1000 ms)"
    )


def main() -> None:
    """Parse the sizes and run, bounded in time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="GET /cart per second through the frontend")
    parser.add_argument("--clients", type=int, default=8, help="concurrent httpx clients (one session each)")
    parser.add_argument("--mesh-rate", type=float, default=100.0, help="GetCart per second through the mesh")
    parser.add_argument("--before", type=float, default=3.0, help="seconds of load before the kill")
    parser.add_argument("--after", type=float, default=5.0, help="seconds of load after the kill")
    parser.add_argument("--replicas", type=int, default=3, help="cart replicas")
    parser.add_argument("--poll", type=float, default=0.02, help="seconds between /mesh/status polls")
    parser.add_argument(
        "--max-in-flight", type=int, default=200, help="per stream; beyond it requests are dropped"
    )
    parser.add_argument("--ready-timeout", type=float, default=25.0, help="seconds to wait for `boutique up`")
    args = parser.parse_args()
    if args.replicas < 2:
        parser.error("--replicas must be at least 2 (one is killed)")
    # the mesh client's own warnings (an ejection, say), in order with the figures
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="  log %(name)s: %(message)s")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
