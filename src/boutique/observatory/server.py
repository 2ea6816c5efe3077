"""One observatory process: the store, the pipeline, the receivers and the query API, started together.

The receivers are those of `receivers.RECEIVERS`: each HTTP receiver's routes are served on the port
it names, each gRPC receiver's service on a gRPC server on its port. Every socket is bound before
anything serves, so a busy port stops the start with one clear line and nothing half-running. When a
token is set, every HTTP request (but `/_healthz` and `/_readyz`) and every gRPC call must carry
`Authorization: Bearer <token>`.

Health, on every HTTP port: `/_healthz` answers 200 `{"status": "SERVING", "store": "writable"}`, or
503 `{"status": "DEGRADED", "store": "read-only: disk full", ...}` with since when, DuckDB's words and
what recovery waits for, while the store takes no writes (queries still answer). `/_readyz` answers
whether to send spans here: 200 as above, 503 while degraded or shutting down. Neither is a liveness
probe: a restart frees no disk, and a store that cannot be reopened makes the process exit with
`EXIT_STORE_BROKEN` by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import grpc
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from boutique.asgi_server import EmbeddedServer, bind, make_server, port_in_use, wait_started
from boutique.observatory.api import query_routes
from boutique.observatory.config import ObservatoryConfig, Ports
from boutique.observatory.otlp import walk
from boutique.observatory.pipeline import FIGURES, Pipeline, StoreFailed
from boutique.observatory.processors.redact import CardRedactor
from boutique.observatory.receivers import RECEIVERS, GrpcReceiver, HttpReceiver, Limits
from boutique.observatory.receivers.base import make_grpc_server
from boutique.observatory.sampling import TailSampler, drain_journal, journal_directory
from boutique.observatory.sampling.api import sampling_routes
from boutique.observatory.store.duckdb_store import DuckDBStore, Retention
from boutique.observatory.ui import ui_routes
from boutique.observatory.ui.flags import FlagControls
from boutique.signals import stop_on_signals
from boutique.tokens import bearer_matches, same_token

log = logging.getLogger(__name__)

# DuckDB folds its write-ahead log into the file once the log passes this size (tests lower it to
# make a checkpoint happen while a small disk fills).
CHECKPOINT_VARIABLE = "BOUTIQUE_OBSERVATORY_CHECKPOINT_THRESHOLD"
EXIT_STORE_BROKEN = 3  # the exit status when the store can be neither written nor reopened
HEALTH_PATHS = ("/_healthz", "/_readyz")
SIGNALS = ("spans", "logs", "metrics", "profiles")  # as the batches name themselves (`signals.Batch.signal`)

LOGIN_PATH = "/login"
TOKEN_COOKIE = "observatory_token"
_LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Observatory · sign in</title>
<link rel="icon" href="data:,"><link rel="stylesheet" href="/static/ui.css"></head><body><main id="main"><h1>Observatory</h1>
<form method="post" action="/login" class="panel"><p>{message}</p>
<label for="token">Bearer token (BOUTIQUE_OBSERVATORY_TOKEN)</label>
<input id="token" name="token" type="password" autocomplete="current-password" autofocus required>
<button type="submit">Sign in</button></form></main></body></html>"""


class BearerAuth:
    """ASGI middleware: every HTTP request needs the token (health checks and the sign-in page excepted).

    Programs send `Authorization: Bearer <token>`; a browser signs in once at /login and then sends the
    token in an HttpOnly, same-site cookie, so the UI pages work when the observatory is exposed.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    def _authorised(self, request: Request) -> bool:
        header, cookie = request.headers.get("authorization"), request.cookies.get(TOKEN_COOKIE)
        return bearer_matches(header, self.token) or same_token(cookie, self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in (*HEALTH_PATHS, "/static/ui.css"):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        if scope["path"] == LOGIN_PATH:
            response = await self._login(request)
        elif self._authorised(request):
            await self.app(scope, receive, send)
            return
        elif "text/html" in request.headers.get("accept", ""):
            response = RedirectResponse(LOGIN_PATH, status_code=303)
        else:
            response = JSONResponse(
                {"errors": [{"code": 401, "msg": "missing or wrong bearer token"}]},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        await response(scope, receive, send)

    async def _login(self, request: Request) -> Response:
        """The sign-in form; a right token sets the cookie and goes to the search page."""
        if request.method != "POST":
            return HTMLResponse(_LOGIN_PAGE.format(message="This observatory needs its token."))
        form = await request.form()
        if not same_token(str(form.get("token", "")), self.token):
            page = _LOGIN_PAGE.format(message='<span class="error-text">Wrong token.</span>')
            return HTMLResponse(page, status_code=401)
        response = RedirectResponse("/search", status_code=303)
        secure = request.url.scheme == "https"
        response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict", secure=secure)
        return response


class GrpcBearerAuth(grpc.aio.ServerInterceptor):
    """gRPC interceptor: refuse calls whose `authorization` metadata is not the bearer token."""

    def __init__(self, token: str) -> None:
        self.token = token

        async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

        self._refusal = grpc.unary_unary_rpc_method_handler(refuse)

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        """Pass authorised calls on; answer the rest UNAUTHENTICATED."""
        if bearer_matches(dict(details.invocation_metadata or ()).get("authorization"), self.token):
            return await continuation(details)
        return self._refusal


class Observatory:
    """The whole backend in this process's event loop."""

    def __init__(self, config: ObservatoryConfig) -> None:
        config.check()
        self.config = config
        self.store = DuckDBStore(
            config.database,
            Retention(int(config.retention_seconds * 1_000_000), config.retention_bytes),
            memory_limit=config.memory_limit,
            checkpoint_threshold=os.environ.get(CHECKPOINT_VARIABLE) or "256MB",
        )
        self.redactor = CardRedactor()
        self.broken = asyncio.Event()  # set (from the writer thread) when the store cannot be reopened
        # With tail sampling on, the pipeline writes spans to the sampler, which stores the kept ones.
        self.sampler = (
            TailSampler(self.store, config.tail_sampling, journal_directory(config.database))
            if config.tail_sampling
            else None
        )
        self.pipeline = Pipeline(
            self.sampler or self.store,
            [self.redactor],
            capacity_spans=config.queue_spans,
            retention_every=config.retention_check_seconds,
            on_broken=self._on_broken,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._servers: list[tuple[EmbeddedServer, asyncio.Task[None]]] = []
        self._grpc: list[grpc.aio.Server] = []
        self._stopping = False
        self.bound: Ports | None = None  # the ports listened on (differ from the config where it asked for 0)

    def _on_broken(self, reason: str) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.broken.set)

    def _app(self, routes: list[BaseRoute]) -> ASGIApp:
        health = [Route("/_healthz", self._health), Route("/_readyz", self._ready)]
        app: ASGIApp = Starlette(routes=[*health, *routes])
        return BearerAuth(app, self.config.token) if self.config.token else app

    def health(self) -> dict[str, Any]:
        """SERVING with a writable store, else DEGRADED with why, since when and what recovery waits for."""
        state = self.pipeline.store.write_state()  # the tail sampler's journal too, when sampling is on
        if self.pipeline.broken:
            return {"status": "DEGRADED", "store": "broken", "error": self.pipeline.broken}
        if state.writable:
            return {"status": "SERVING", "store": state.summary}
        since = datetime.fromtimestamp(state.since or 0, UTC).isoformat(timespec="seconds")
        return {
            "status": "DEGRADED",
            "store": state.summary,
            "since": since,
            "error": state.error,
            "waiting": state.waiting,
            "retry_after": StoreFailed.retry_after,
            "reopens": state.reopens,
        }

    async def _health(self, request: Request) -> Response:
        """The store's write state: 200 while it takes spans, 503 while degraded (queries still answer)."""
        health = self.health()
        return JSONResponse(health, 200 if health["status"] == "SERVING" else 503)

    async def _ready(self, request: Request) -> Response:
        """Whether to send spans here now: 200, or 503 while the store is read-only or the process stops."""
        health = self.health()
        if self._stopping:
            health = {"status": "STOPPING", "store": health["store"]}
        ready = health["status"] == "SERVING"
        body = {key: health[key] for key in ("status", "store")}
        headers = {} if ready else {"Retry-After": str(StoreFailed.retry_after)}
        return JSONResponse(body, 200 if ready else 503, headers=headers)

    async def _status(self, request: Request) -> Response:
        """Ingest and storage figures: spans, log records and metric points accepted, refused, failed and
        stored; items queued; redactions; store size and health."""
        stored = await run_in_threadpool(self.store.stats)
        by_signal = {
            name: dict.fromkeys(FIGURES, 0) | self.pipeline.by_signal.get(name, {}) for name in SIGNALS
        }
        figures = {
            "health": self.health(),
            **{f"{figure}_spans": count for figure, count in by_signal["spans"].items()},
            "signals": by_signal,
            "queued_items": self.pipeline.queued_spans,
            "redacted_spans": self.redactor.redacted_spans,
            "redacted_logs": self.redactor.redacted_logs,
            "store": stored,
            "ports": self.bound.__dict__ if self.bound else None,
        }
        return JSONResponse(figures)

    def _http_routes(self, limits: Limits) -> dict[str, list[BaseRoute]]:
        """Routes by the name of the port serving them: every HTTP receiver's, then the query API and UI."""
        routes: dict[str, list[BaseRoute]] = {}
        for receiver in RECEIVERS:
            if isinstance(receiver, HttpReceiver):
                routes.setdefault(receiver.port, []).extend(receiver.routes(self.pipeline, limits))
        routes.setdefault("query", []).extend(
            [
                Route("/api/status", self._status),
                *sampling_routes(self.sampler),
                *query_routes(self.store),
                *ui_routes(
                    self.store, self.config.registry_url, self._flag_controls(), self.config.chaos_log
                ),
            ]
        )
        return routes

    def _flag_controls(self) -> FlagControls:
        """The flag file the Flags page shows, with the token and body limit its API applies."""
        cfg = self.config
        return FlagControls(cfg.flags_file, cfg.token, cfg.max_body_bytes)

    def _grpc_services(self) -> dict[str, list[grpc.GenericRpcHandler]]:
        """Every gRPC receiver's service by the name of the port serving it."""
        services: dict[str, list[grpc.GenericRpcHandler]] = {}
        for receiver in RECEIVERS:
            if isinstance(receiver, GrpcReceiver):
                services.setdefault(receiver.port, []).append(receiver.handler(self.pipeline))
        return services

    async def start(self) -> Ports:
        """Bind every port (failing cleanly if one is busy), then start serving; the ports bound."""
        cfg, ports = self.config, self.config.ports
        routes = self._http_routes(Limits(max_body_bytes=cfg.max_body_bytes))
        interceptors = [GrpcBearerAuth(cfg.token)] if cfg.token else []
        sockets = {}
        servers: list[grpc.aio.Server] = []
        bound: dict[str, int] = {}
        try:
            for name in routes:
                sockets[name] = bind(cfg.host, getattr(ports, name), f"observatory {name}")
                bound[name] = sockets[name].getsockname()[1]
            for name, handlers in self._grpc_services().items():
                server = make_grpc_server(cfg.max_body_bytes, interceptors=interceptors)
                server.add_generic_rpc_handlers(handlers)
                servers.append(server)
                grpc_port = _add_grpc_port(server, cfg.host, getattr(ports, name))
                if grpc_port is None:
                    raise OSError(
                        f"cannot listen on {cfg.host}:{getattr(ports, name)}: port busy [observatory {name}]"
                    )
                bound[name] = grpc_port
        except OSError:
            for sock in sockets.values():
                sock.close()
            for server in servers:
                await server.stop(None)
            raise
        self._loop = asyncio.get_running_loop()
        # Spans a tail-sampling journal holds from the last run: decided again, or stored if sampling is off.
        if self.sampler is not None:
            await asyncio.to_thread(self.sampler.start)
        else:
            await asyncio.to_thread(drain_journal, self.store, journal_directory(cfg.database))
        self.pipeline.start()
        for server in servers:
            await server.start()
        self._grpc = servers
        for name, app_routes in routes.items():
            embedded = make_server(self._app(app_routes), graceful=2)
            task = asyncio.create_task(embedded.serve(sockets=[sockets[name]]), name=f"observatory-{name}")
            self._servers.append((embedded, task))
            if not await wait_started(embedded, task):
                task.result()
        self.bound = replace(ports, **bound)
        return self.bound

    async def stop(self) -> None:
        """Stop taking spans, store what is queued, close the store."""
        self._stopping = True
        for server in self._grpc:
            await server.stop(grace=2.0)
        for embedded, _ in self._servers:
            embedded.should_exit = True
        for _, task in self._servers:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, 5.0)
        await asyncio.to_thread(self.pipeline.stop)
        if self.sampler is not None:
            await asyncio.to_thread(self.sampler.stop)
        await asyncio.to_thread(self.store.close)


def _add_grpc_port(server: grpc.aio.Server, host: str, port: int) -> int | None:
    """Listen on host:port for gRPC; the bound port, or None when it is taken.

    gRPC would share a port another process holds with SO_REUSEPORT, so the port is first checked for
    a listener (closed connections of a crashed predecessor in TIME_WAIT do not count).
    """
    if port and port_in_use(host, port):
        return None
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        return None
    return bound or None


async def serve(config: ObservatoryConfig) -> None:
    """Run until SIGTERM/SIGINT, then stop cleanly (queued spans are stored first).

    When the store can be neither written nor reopened, stop too and exit with `EXIT_STORE_BROKEN`, so
    that a supervisor (`boutique up`, Kubernetes) starts a fresh process.
    """
    observatory = Observatory(config)
    bound = await observatory.start()
    log.info("observatory ready", extra={"ports": bound.__dict__, "database": str(config.database)})
    log.log(logging.INFO if walk.COMPILED else logging.WARNING, walk.IMPLEMENTATION)
    stop = asyncio.Event()
    stop_on_signals(asyncio.get_running_loop(), stop.set)
    waits = [asyncio.create_task(stop.wait()), asyncio.create_task(observatory.broken.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
        await observatory.stop()
    if observatory.broken.is_set() and not stop.is_set():
        log.critical(
            "exiting: the store can be neither written nor reopened",
            extra={"reason": observatory.pipeline.broken},
        )
        raise SystemExit(EXIT_STORE_BROKEN)


__all__ = ["Observatory", "ObservatoryConfig", "Ports", "serve"]
