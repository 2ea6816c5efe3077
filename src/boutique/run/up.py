"""`boutique up`: every shop service as its own process on loopback, with a live status view.

Imports here stay light: the first processes start before `up` loads what it needs only afterwards
(rich for the live table, HTTPX and gRPC for the probes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from boutique.flags import FlagFile, FlagFileError
from boutique.run.plan import (
    UpOptions,
    build_plan,
    check_replicas_against_external,
    external_services,
    parse_observatory_ports,
    parse_replicas,
)
from boutique.run.ports import PortBusy, ensure_free
from boutique.run.spawners import spawner
from boutique.run.status import event_line, external_line, load_summary
from boutique.run.supervisor import Child, Supervisor
from boutique.shop.services import SERVICES
from boutique.signals import stop_on_signals

if TYPE_CHECKING:
    from rich.console import Group

STATE_FILE = "up.json"
FLAG_FILE = "flags.json"


def run_up(args: argparse.Namespace) -> int:
    """Validate the options, then supervise every process until SIGINT/SIGTERM."""
    try:
        replicas = parse_replicas(args.replicas)
        external = external_services(os.environ)
        check_replicas_against_external(replicas, external)
        if not 1 <= args.frontend_port <= 65535:
            raise ValueError(f"--frontend-port {args.frontend_port} is not a port number")
        if args.users < 1 or args.spawn_rate <= 0:
            raise ValueError("--users must be at least 1 and --spawn-rate above 0")
        ensure_free("127.0.0.1", args.frontend_port, "the shop web site", "--frontend-port")
        if args.discovery == "registry":
            ensure_free("127.0.0.1", args.registry_port, "the service registry", "--registry-port")
        observatory_ports = parse_observatory_ports(args.observatory_ports) if args.observatory else None
        for port in observatory_ports or ():
            ensure_free("127.0.0.1", port, "the observatory", "--observatory-ports (or --no-observatory)")
    except (ValueError, PortBusy) as exc:
        print(f"boutique up: {exc}", file=sys.stderr)
        return 2
    data_dir = args.data_dir.resolve()
    have_redis = shutil.which("redis-server") is not None
    wants_shared_carts = replicas.get("cart", 1) > 1 and not os.environ.get("REDIS_ADDR")
    redis = args.redis == "on" or (args.redis == "auto" and wants_shared_carts and have_redis)
    if args.redis == "on" and not have_redis:
        print(
            "boutique up: --redis on needs redis-server (Debian: apt-get install redis-server)",
            file=sys.stderr,
        )
        return 2
    if wants_shared_carts and not redis:
        print(
            "boutique up: note: cart replicas keep carts in memory each, so a shopper's cart depends on the "
            "replica that answers; install redis-server (or use --redis on) to share them",
            file=sys.stderr,
        )
    try:
        flag_file = _seed_flags(data_dir)
    except (OSError, FlagFileError) as exc:
        print(f"boutique up: {exc}", file=sys.stderr)
        return 2
    options = UpOptions(
        data_dir=data_dir,
        flag_file=flag_file,
        frontend_port=args.frontend_port,
        replicas=replicas,
        load=args.load,
        users=args.users,
        spawn_rate=args.spawn_rate,
        discovery=args.discovery,
        registry_port=args.registry_port,
        redis=redis,
        observatory_ports=observatory_ports,
        external=external,
    )
    live = sys.stdout.isatty() and not args.plain
    try:
        return asyncio.run(_supervise(options, args.ready_timeout, live, args.spawn))
    except KeyboardInterrupt:
        return 130


def _seed_flags(data_dir: Path) -> Path | None:
    """The flag file every process reads, seeded from the shipped one (None: the user's flagd server)."""
    if os.environ.get("FLAGD_HOST") and not os.environ.get("FLAGD_OFFLINE_FLAG_SOURCE_PATH"):
        return None
    path = Path(os.environ.get("FLAGD_OFFLINE_FLAG_SOURCE_PATH") or data_dir / FLAG_FILE)
    not_default = FlagFile(path).seed()
    if not_default:
        print(
            f"boutique up: note: flags not at their defaults in {path}: {', '.join(not_default)} "
            "(`boutique flags reset` turns every fault off)",
            file=sys.stderr,
        )
    return path


def write_state(
    path: Path,
    supervisor: Supervisor,
    url: str,
    observatory: str | None = None,
    external: dict[str, str] | None = None,
) -> None:
    """Write up.json: the URL, every process (pid, address, state) and the services pinned elsewhere."""
    state = {
        "pid": os.getpid(),
        "frontend_url": url,
        "observatory_url": observatory,
        "spawn": supervisor.spawner.state(),
        "processes": [
            {
                "service": c.plan.service,
                "instance": c.plan.instance,
                "pid": c.pid,
                "address": c.plan.address,
                "metrics": f"127.0.0.1:{c.plan.metrics_port}" if c.plan.metrics_port else None,
                "state": c.state,
                "restarts": c.restarts,
                "spawned": c.spawned or None,
                "log": str(supervisor.log_dir / f"{c.plan.instance}.log"),
            }
            for c in supervisor.children
        ],
        "external": [
            {"service": name, "address": address, "variable": SERVICES[name].address_variable}
            for name, address in (external or {}).items()
        ],
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)


async def wait_registered(registry_url: str, instances: set[str], timeout: float) -> bool:
    """Wait until the registry lists every instance (a service registers just after it starts serving)."""
    import httpx

    from boutique.http_tls import verify_for

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=1.0, verify=verify_for(registry_url)) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
                services = (await client.get(f"{registry_url}/v1/services")).json()["services"]
                if instances <= {i["id"] for found in services.values() for i in found}:
                    return True
            await asyncio.sleep(0.05)
    return False


async def _ready(supervisor: Supervisor, options: UpOptions, timeout: float) -> bool:
    """Every process serves and, with a registry, every service is registered: callers find them all."""
    began = time.monotonic()
    if not await supervisor.wait_ready(timeout):
        return False
    if not options.registry_url:
        return True
    services = {c.plan.instance for c in supervisor.children if c.plan.kind in ("grpc", "http")}
    return await wait_registered(
        options.registry_url, services, max(1.0, timeout - (time.monotonic() - began))
    )


async def _supervise(options: UpOptions, ready_timeout: float, live: bool, spawn: str = "fork") -> int:
    url = f"http://127.0.0.1:{options.frontend_port}"
    state_path = options.data_dir / STATE_FILE
    options.data_dir.mkdir(parents=True, exist_ok=True)
    stop = asyncio.Event()
    stop_on_signals(asyncio.get_running_loop(), stop.set)

    def changed(child: Child) -> None:
        if not live:
            print(event_line(child), flush=True)
        if state_path.parent.exists():
            write_state(state_path, supervisor, url, options.observatory_url, options.external)

    async def forget(child: Child) -> None:
        """A process that died cannot deregister itself: do it for it, so callers stop at once."""
        if options.registry_url and child.plan.kind in ("grpc", "http"):
            import httpx

            from boutique.http_tls import verify_for

            async with httpx.AsyncClient(timeout=1.0, verify=verify_for(options.registry_url)) as client:
                await client.delete(
                    f"{options.registry_url}/v1/services/{child.plan.service}/instances/{child.plan.instance}"
                )

    def note(line: str) -> None:
        """Something about spawning the user should know (e.g. services start plainly from now on)."""
        print(line, file=sys.stderr, flush=True)
        if state_path.parent.exists():
            write_state(state_path, supervisor, url, options.observatory_url, options.external)

    log_dir = options.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    plans = build_plan(options)
    supervisor = Supervisor(plans, log_dir, changed, forget, spawner(spawn, log_dir, note, plans))
    began = time.monotonic()
    footer = [f"starting {len(supervisor.children)} processes; logs in {supervisor.log_dir}"]

    def view() -> Group:
        from boutique.run.status import table

        lines = list(footer)
        summary = load_summary(options.data_dir / "loadgen") if options.load else None
        if summary:
            lines.append(summary)
        return table(supervisor.children, "Boutique", lines, options.external)

    if not live:
        for name, address in options.external.items():
            print(external_line(name, address), flush=True)
    await supervisor.start_first()  # before the live view loads rich
    with _live_view(view) if live else contextlib.nullcontext():
        await supervisor.start()
        ready = asyncio.create_task(_ready(supervisor, options, ready_timeout))
        await asyncio.wait([ready, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        if ready.done() and ready.result():
            took = time.monotonic() - began
            footer[:] = [
                f"Boutique is up in {took:.1f}s: shop at {url}"
                + (f" · traces at {options.observatory_url}" if options.observatory_url else ""),
                f"logs in {supervisor.log_dir} · state in {state_path} · Ctrl-C stops everything",
            ]
            if not live:
                print(footer[0], flush=True)
            load = asyncio.create_task(supervisor.start_load_when_ready(ready_timeout))
        elif not stop.is_set():
            waiting = ", ".join(
                c.plan.instance for c in supervisor.children if not c.ready and c.plan.kind != "load"
            )
            footer[:] = [f"not ready after {ready_timeout:.0f}s: {waiting} (see their logs); still trying"]
            if not live:
                print(footer[0], flush=True)
            load = asyncio.create_task(supervisor.start_load_when_ready(ready_timeout))
        else:
            load = None
        await stop.wait()
        footer[:] = ["stopping every process ..."]
        if load is not None:
            load.cancel()
        await supervisor.stop()
    write_state(state_path, supervisor, url, options.observatory_url, options.external)
    print("Boutique stopped: every process has exited.", flush=True)
    return 0


def _live_view(view: Callable[[], Group]) -> contextlib.AbstractContextManager[object]:
    """The live table on the terminal (rich is imported only for it)."""
    from rich.console import Console
    from rich.live import Live

    return Live(get_renderable=view, console=Console(), refresh_per_second=2, transient=False)
