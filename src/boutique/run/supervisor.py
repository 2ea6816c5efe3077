"""Start, watch, probe, restart and stop the processes of `boutique up`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from boutique.backoff import NO_JITTER, backoff_delay
from boutique.run.plan import HOST, ProcessPlan
from boutique.run.ports import free_port, is_taken
from boutique.run.spawners import Running, Spawner

if TYPE_CHECKING:
    from boutique.run.probes import Prober

BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 30.0
PROBE_FAST = 0.1
PROBE_SLOW = 2.0
REAP_EVERY = 5.0  # seconds between looks for exited orphans handed to `up` (see Spawner.reap_strays)
FIRST = ("registry", "redis", "observatory")  # infrastructure, started before the services
# What the services wait for. Not the observatory: every process queues its spans until it takes them
# (a degraded or slow observatory must not hold the shop back).
AWAITED = ("registry", "redis")


@dataclass
class Child:
    """One supervised process and what is known about it."""

    plan: ProcessPlan
    state: str = "pending"
    process: Running | None = None
    spawned: str = ""  # how its current process was started: "plain" or "fork"
    started_at: float = 0.0
    serving_since: float | None = None
    restarts: int = 0
    failures_in_row: int = 0
    last_exit: int | None = None

    @property
    def pid(self) -> int | None:
        """The running process id, if any."""
        return self.process.pid if self.process and self.process.returncode is None else None

    @property
    def ready(self) -> bool:
        """Serving (or, for the load generator, running)."""
        return self.state in ("SERVING", "running")


class Supervisor:
    """Runs every planned process, restarts crashed ones with backoff, stops them all cleanly."""

    def __init__(
        self,
        plans: list[ProcessPlan],
        log_dir: Path,
        on_change: Callable[[Child], None] | None = None,
        on_exit: Callable[[Child], Awaitable[None]] | None = None,
        spawner: Spawner | None = None,
    ) -> None:
        self.children = [Child(plan) for plan in plans]
        self.log_dir = log_dir
        self.on_change = on_change or (lambda child: None)
        self.on_exit = on_exit
        self.spawner = spawner or Spawner()
        self.stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._prober: Prober | None = None
        self._started_first = False
        self._first: asyncio.Future[list[None]] | None = None

    def _set_state(self, child: Child, state: str) -> None:
        if child.state != state:
            child.state = state
            if state in ("SERVING", "running"):
                child.serving_since = time.monotonic()
            self.on_change(child)

    async def start(self) -> None:
        """Start the registry, then every service (the load generator once the frontends serve).

        Everything that spawns comes first, imports (gRPC, HTTPX for the probes) after: the processes
        started meanwhile run their own start-up on the other core."""
        await self.start_first()
        first = [c for c in self.children if c.plan.kind in FIRST]
        if self._first is not None:
            await self._first
        if first:
            await self.wait_ready(30.0, lambda c: c.plan.kind in AWAITED)
        for child in self.children:
            if child.plan.kind not in ("load", *FIRST) and not self.stopping:
                await self._spawn(child)
        for child in self.children:
            self._tasks.append(asyncio.create_task(self._watch(child)))

    async def start_first(self) -> None:
        """Start the spawner (the fork server) and the infrastructure, and begin probing; at once."""
        if self._started_first:
            return
        self._started_first = True
        self.log_dir.mkdir(parents=True, exist_ok=True)
        await self.spawner.start()
        # side by side: a forked one waits for the fork server's imports, a plain one need not wait for it
        first = [self._spawn(c) for c in self.children if c.plan.kind in FIRST]
        self._first = asyncio.ensure_future(asyncio.gather(*first))
        await asyncio.sleep(0)  # the plain ones are started before the probes' imports below
        self._tasks.append(asyncio.create_task(self._probe_loop()))

    async def start_load_when_ready(self, timeout: float) -> None:
        """Start the load generator after every frontend serves."""
        load = [c for c in self.children if c.plan.kind == "load"]
        if not load:
            return
        await self.wait_ready(timeout, lambda c: c.plan.service == "frontend")
        for child in load:
            if not self.stopping:
                await self._spawn(child)

    async def _spawn(self, child: Child) -> None:
        log = self.log_dir / f"{child.plan.instance}.log"
        child.process, child.spawned = await self.spawner.spawn(child.plan, log)
        child.started_at = time.monotonic()
        child.serving_since = None
        self._set_state(child, "starting")

    async def _watch(self, child: Child) -> None:
        """Wait for the process to exit; unless stopping, restart it after a growing backoff."""
        while not self.stopping:
            if child.process is None:
                await asyncio.sleep(PROBE_FAST)
                continue
            code = await child.process.wait()
            if self.stopping:
                return
            child.last_exit = code
            if self.on_exit is not None:
                with contextlib.suppress(Exception):
                    await self.on_exit(child)
            moved: list[int] = []
            if child.serving_since is None:  # never served: was a port taken after it was planned?
                moved = child.plan.move_taken_ports(
                    lambda port: is_taken(HOST, port), lambda: free_port(HOST)
                )
            stable = child.serving_since is not None and time.monotonic() - child.serving_since > STABLE_AFTER
            child.failures_in_row = 1 if stable else child.failures_in_row + 1
            delay = backoff_delay(child.failures_in_row - 1, BACKOFF_START, BACKOFF_MAX, NO_JITTER)
            taken = f", port {', '.join(map(str, moved))} taken: moving" if moved else ""
            self._set_state(child, f"exited {code}{taken}, restart in {delay:.1f}s")
            await asyncio.sleep(delay)
            if self.stopping:
                return
            child.restarts += 1
            await self._spawn(child)

    async def _probe_loop(self) -> None:
        """Ask every live process whether it serves: gRPC health for backends, /_healthz for frontends,
        /_readyz for the observatory; now and then reap orphans handed to `up`."""
        from boutique.run.probes import Prober

        self._prober = Prober()
        reaped = time.monotonic()
        while not self.stopping:
            live = [c for c in self.children if c.pid is not None]
            await asyncio.gather(*(self._probe(c) for c in live))
            if time.monotonic() - reaped > REAP_EVERY:
                reaped = time.monotonic()
                self.spawner.reap_strays({c.process.pid for c in self.children if c.process is not None})
            all_ready = all(c.ready for c in self.children if c.plan.kind != "load")
            await asyncio.sleep(PROBE_SLOW if all_ready else PROBE_FAST)

    async def _probe(self, child: Child) -> None:
        from boutique.run.probes import UNREACHABLE

        if child.plan.kind == "load":
            self._set_state(child, "running")
            return
        assert self._prober is not None
        try:
            state = await self._prober.state(child.plan)
        except UNREACHABLE:
            state = "starting" if child.serving_since is None else "unreachable"
        if child.pid is not None and not self.stopping:
            self._set_state(child, state)

    async def wait_ready(self, timeout: float, which: Callable[[Child], bool] = lambda c: True) -> bool:
        """Wait until every selected process is ready; False on timeout or shutdown."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping:
            chosen = [c for c in self.children if which(c) and c.plan.kind != "load"]
            if all(c.ready for c in chosen):
                return True
            await asyncio.sleep(0.05)
        return False

    async def stop(self, grace: float = 8.0) -> None:
        """SIGTERM every process group (load generator first), wait for the grace period, SIGKILL the rest."""
        self.stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.spawner.close(grace)  # no more forks; the services it forked are stopped below
        if self._first is not None:  # every first process has its pid before the stop goes on
            await asyncio.gather(self._first, return_exceptions=True)
        loadgen = [c for c in self.children if c.plan.kind == "load"]
        others = [c for c in self.children if c.plan.kind != "load"]
        registry = [c for c in others if c.plan.kind in FIRST]
        services = [c for c in others if c.plan.kind not in FIRST]
        for group in (loadgen, services, registry):
            await self._terminate(group, grace)
        if self._prober is not None:
            await self._prober.close()

    async def _terminate(self, children: list[Child], grace: float) -> None:
        running = [c for c in children if c.pid is not None]
        for child in running:
            self._set_state(child, "stopping")
            _signal_group(child, signal.SIGTERM)
            _signal_group(child, signal.SIGCONT)  # a process stopped by `boutique chaos` must run to exit

        async def reap(child: Child) -> None:
            assert child.process is not None
            try:
                await asyncio.wait_for(child.process.wait(), grace)
            except TimeoutError:
                _signal_group(child, signal.SIGKILL)
                await child.process.wait()
            _signal_group(child, signal.SIGKILL)  # anything the child left behind in its group
            self._set_state(child, "stopped")

        await asyncio.gather(*(reap(c) for c in running))


def _signal_group(child: Child, sig: signal.Signals) -> None:
    """Signal the child's whole process group (it leads its own session)."""
    if child.process is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.process.pid, sig)
