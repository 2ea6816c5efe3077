"""Runs the frontend under uvicorn until SIGTERM/SIGINT, then closes the service clients."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Generator

import uvicorn

from boutique.shop.frontend.app import create_app
from boutique.shop.frontend.clients import FrontendClients
from boutique.shop.frontend.settings import FrontendSettings

log = logging.getLogger(__name__)


def _plain_uvicorn_records(record: logging.LogRecord) -> bool:
    """Drop uvicorn's ANSI-coloured duplicate of the message, which JSON logs do not need."""
    record.__dict__.pop("color_message", None)
    return True


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal capture: `serve()` below owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Leave signal handling to the event loop handlers installed by `serve()`."""
        yield


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port; a clear OSError when the port is taken."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        reason = f" ({os.strerror(exc.errno)})" if exc.errno else ""
        raise OSError(f"cannot listen on {host}:{port}: port busy or address unavailable{reason}") from None


async def serve() -> None:
    """Serve HTTP on BIND_HOST:PORT (default 127.0.0.1:8080) until SIGTERM or SIGINT."""
    settings = FrontendSettings.from_env()
    sock = bind(settings.host, settings.port)
    try:
        clients = FrontendClients.from_env()
    except BaseException:
        sock.close()
        raise
    config = uvicorn.Config(
        create_app(clients, settings),
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    logging.getLogger("uvicorn.error").addFilter(_plain_uvicorn_records)
    server = _Server(config)
    loop = asyncio.get_running_loop()

    def stop() -> None:
        """First signal: drain and stop; a second one: stop at once."""
        if server.should_exit:
            server.force_exit = True
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    host, port = sock.getsockname()[:2]
    log.info("serving", extra={"address": f"{host}:{port}"})
    try:
        await server.serve(sockets=[sock])
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        sock.close()
        await clients.close()
        log.info("stopped")
