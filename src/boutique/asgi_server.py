"""Serving an ASGI app inside a process whose signals belong to the caller (shared by mesh, shop and observatory)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Generator
from typing import Any

import uvicorn

from boutique.sockets import bind, is_loopback, port_in_use

__all__ = [
    "BackgroundServer",
    "EmbeddedServer",
    "bind",
    "is_loopback",
    "make_server",
    "port_in_use",
    "wait_started",
]


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal capture: the process (not uvicorn) decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Leave SIGTERM/SIGINT to the event-loop handlers of the process."""
        yield


def _plain_records(record: logging.LogRecord) -> bool:
    """Drop uvicorn's ANSI-coloured copy of each message, which JSON logs do not need."""
    record.__dict__.pop("color_message", None)
    return True


def make_server(app: Any, graceful: int = 5) -> EmbeddedServer:
    """An embedded uvicorn server for `app` with JSON-friendly logging and no access log.

    No app of ours speaks WebSocket (live pages stream server-sent events) and none has a lifespan, so
    neither is loaded: ws="auto" alone imports a WebSocket library into every process that serves HTTP.
    """
    logging.getLogger("uvicorn.error").addFilter(_plain_records)
    config = uvicorn.Config(
        app, log_config=None, access_log=False, server_header=False, lifespan="off", ws="none",
        timeout_graceful_shutdown=graceful,
    )  # fmt: skip
    return EmbeddedServer(config)


async def wait_started(server: uvicorn.Server, task: asyncio.Task[None]) -> bool:
    """Wait until uvicorn accepts connections (True) or its task ended first (False)."""
    while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
        await asyncio.sleep(0.01)
    return server.started


class BackgroundServer:
    """An embedded server running as a task of the current event loop (status and registry endpoints)."""

    def __init__(self, app: Any, host: str, port: int, what: str = "") -> None:
        self.app = app
        self.host = host
        self.port = port
        self.what = what
        self._server: EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Bind, start serving, and return the bound port once uvicorn is accepting."""
        sock = bind(self.host, self.port, self.what)
        self.port = sock.getsockname()[1]
        self._server = make_server(self.app, graceful=1)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        if not await wait_started(self._server, self._task):
            self._task.result()
        return self.port

    async def stop(self) -> None:
        """Stop serving (a streaming response runs on until its app ends it: see StatusServer.stop)."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        self._server.force_exit = True
        try:
            await asyncio.wait_for(self._task, 3.0)
        except (TimeoutError, asyncio.CancelledError):
            self._task.cancel()
        self._server = None
