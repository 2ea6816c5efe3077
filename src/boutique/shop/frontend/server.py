"""Runs the frontend under uvicorn until SIGTERM/SIGINT, then closes the service clients."""

from __future__ import annotations

import asyncio
import logging
import math

from boutique.asgi_server import bind, make_server, wait_started
from boutique.mesh import ProcessInfo
from boutique.mesh.presence import Presence
from boutique.mesh.runtime import Mesh
from boutique.mesh.stopping import AFTER_SERVING, DEREGISTER_AT_MOST, process_stop
from boutique.shop.frontend.app import create_app
from boutique.shop.frontend.clients import FrontendClients
from boutique.shop.frontend.settings import FrontendSettings
from boutique.signals import stop_on_signals

log = logging.getLogger(__name__)

GRACE = 5  # seconds requests in flight get to finish once the frontend stops taking new ones (at most)


async def serve() -> None:
    """Serve HTTP on BIND_HOST:PORT (default 127.0.0.1:8080) until SIGTERM or SIGINT."""
    settings = FrontendSettings.from_env()
    sock = bind(settings.host, settings.port, "frontend")
    try:
        clients = FrontendClients.from_env()
    except BaseException:
        sock.close()
        raise
    server = make_server(create_app(clients, settings))
    presence = Presence(ProcessInfo.from_env("frontend", settings.port), Mesh.default())
    process = presence.settings.process
    drain_delay = 0.3 if process.drain_delay is None else process.drain_delay  # BOUTIQUE_DRAIN_DELAY
    clock = process_stop()

    leaving: list[asyncio.Task[None]] = []

    async def leave() -> None:
        """Deregister first so callers move away, wait the drain delay, then stop taking requests; each
        step within what is left of the stop budget, requests in flight cut off when it runs out."""
        await presence.withdraw(clock.allow(DEREGISTER_AT_MOST, keep=AFTER_SERVING))
        await asyncio.sleep(clock.allow(drain_delay, keep=AFTER_SERVING))
        # uvicorn takes whole seconds: rounded down, so the stop stays within the budget
        server.config.timeout_graceful_shutdown = math.floor(clock.allow(GRACE, keep=AFTER_SERVING))
        server.should_exit = True

    def stop() -> None:
        """First signal: withdraw, drain and stop; a second one: stop at once."""
        if leaving:
            server.should_exit = server.force_exit = True
            return
        clock.start(process.stop_timeout)
        leaving.append(asyncio.create_task(leave()))

    undo = stop_on_signals(asyncio.get_running_loop(), stop)
    host, port = sock.getsockname()[:2]
    log.info("serving", extra={"address": f"{host}:{port}", "advertised": presence.info.advertise_host})
    await presence.start_status()
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        if await wait_started(server, serving):
            await presence.announce({"http": port})
        await asyncio.shield(serving)
    finally:
        await presence.withdraw()
        undo()
        sock.close()
        await clients.close()
        await presence.close()
        log.info("stopped")
