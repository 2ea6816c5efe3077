"""The registry's HTTP/JSON API (Starlette) and the server that runs it (embedded uvicorn).

Routes: PUT/DELETE /v1/services/{service}/instances/{id}, GET /v1/services, GET
/v1/services/{service}?index=N&wait=30s (a blocking query), GET /v1/health. Errors are
{"error": reason}. Off loopback every request needs `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from boutique.asgi_server import EmbeddedServer, bind, is_loopback, make_server, wait_started
from boutique.mesh.durations import parse_duration
from boutique.mesh.instance import Instance
from boutique.mesh.registry.checks import HealthChecks, parse_check
from boutique.mesh.registry.state import LimitExceeded, Record, RegistryState, validate_name
from boutique.signals import stop_on_signals
from boutique.tokens import bearer_matches

log = logging.getLogger(__name__)

DEFAULT_PORT = 7600
MAX_BODY = 64 * 1024
MAX_DRAIN = 1024 * 1024
DEFAULT_WAIT = 30.0
MAX_WAIT = 300.0
INDEX_HEADER = "X-Registry-Index"
_BODY_FIELDS = {"address", "ports", "metadata", "ttl", "check", "service", "id"}


class BadRequest(Exception):
    """A request the API rejects with 400 and this reason."""


# ---- request parsing --------------------------------------------------------------------------


def parse_ttl(value: Any) -> float:
    """A lease TTL given as '10s' / '1.5m' or as a number of seconds (range checked by the state)."""
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError:
            raise BadRequest(
                f"ttl {value!r} is not a duration (use e.g. '10s' or a number of seconds)"
            ) from None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise BadRequest("ttl must be a duration like '10s' or a number of seconds")


def parse_registration(service: str, instance_id: str, body: Any) -> tuple[Instance, float, Any]:
    """Check the PUT body's shape and types; returns (instance, ttl, raw check or None)."""
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    unknown = sorted(set(body) - _BODY_FIELDS)
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}")
    for key, expected in (("service", service), ("id", instance_id)):
        if key in body and body[key] != expected:
            raise BadRequest(f"{key} {body[key]!r} in the body differs from {expected!r} in the path")
    for key in ("address", "ports", "ttl"):
        if key not in body:
            raise BadRequest(f"missing field {key!r}")
    address, ports, metadata = body["address"], body["ports"], body.get("metadata", {})
    if not isinstance(address, str):
        raise BadRequest("address must be a string (an IP address or host name)")
    if not isinstance(ports, dict):
        raise BadRequest("ports must be an object of port name to number, e.g. {'grpc': 50051}")
    for name, number in ports.items():
        if isinstance(number, bool) or not isinstance(number, int):
            raise BadRequest(f"port {name!r} must be an integer (got {number!r})")
    if not isinstance(metadata, dict):
        raise BadRequest("metadata must be an object of string values")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise BadRequest(f"metadata {key!r} must be a string (got {value!r})")
    instance = Instance(service, instance_id, address, ports, metadata)
    return instance, parse_ttl(body["ttl"]), body.get("check")


def _reject_constant(name: str) -> Any:
    """Refuse NaN and Infinity, which JSON does not have."""
    raise ValueError(f"{name} is not valid JSON")


async def read_json(request: Request) -> Any:
    """The request body as JSON; BadRequest when it is malformed or larger than 64 KiB."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_DRAIN):
        raise BadRequest(f"body larger than {MAX_BODY // 1024} KiB")
    body = bytearray()
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_DRAIN:
            break
        if size <= MAX_BODY:
            body += chunk
    if size > MAX_BODY:
        raise BadRequest(f"body larger than {MAX_BODY // 1024} KiB")
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None


def _query_index(params: Mapping[str, str]) -> int | None:
    """The ?index= parameter: None when absent, else a non-negative integer."""
    text = params.get("index")
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise BadRequest(f"index must be a non-negative integer (got {text!r})")
    return int(text)


def _query_wait(params: Mapping[str, str]) -> float:
    """The ?wait= parameter as seconds (default 30 s, capped at 5 min)."""
    text = params.get("wait")
    if text is None:
        return DEFAULT_WAIT
    try:
        return min(parse_duration(text), MAX_WAIT)
    except ValueError:
        raise BadRequest(f"wait {text!r} is not a duration (use e.g. '30s')") from None


def _query_any_status(params: Mapping[str, str]) -> bool:
    """The ?status= parameter: 'any' includes critical instances."""
    text = params.get("status", "passing")
    if text not in ("passing", "any"):
        raise BadRequest(f"status must be 'passing' or 'any' (got {text!r})")
    return text == "any"


def _error(status: int, reason: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The API's error answer: {'error': reason}."""
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


# ---- the API --------------------------------------------------------------------------------------


class _BearerAuth:
    """ASGI middleware: 401 unless the request carries `Authorization: Bearer <token>`."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass authorised HTTP requests on; answer the rest with 401."""
        if scope["type"] == "http" and not bearer_matches(
            Headers(scope=scope).get("authorization"), self.token
        ):
            response = _error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def _until_disconnected(request: Request) -> None:
    """Return once the client has gone away (the body of these requests is empty or already read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class RegistryApi:
    """The HTTP API over one RegistryState, plus its lease sweep and health checks."""

    def __init__(
        self, state: RegistryState | None = None, token: str | None = None, sweep_interval: float = 0.25
    ) -> None:
        self.state = state if state is not None else RegistryState(first_index=_fresh_index())
        self.checks = HealthChecks(self.state)
        self.state.on_remove.append(self._removed)
        self.sweep_interval = sweep_interval
        self.closing = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None
        routes = [
            Route("/v1/services/{service}/instances/{id}", self.put_instance, methods=["PUT"]),
            Route("/v1/services/{service}/instances/{id}", self.delete_instance, methods=["DELETE"]),
            Route("/v1/services", self.list_services, methods=["GET"]),
            Route("/v1/services/{service}", self.get_service, methods=["GET"]),
            Route("/v1/health", self.health, methods=["GET"]),
        ]
        self.app = Starlette(
            routes=routes,
            exception_handlers={HTTPException: self._http_error},
            lifespan=self._lifespan,
        )
        if token:
            self.app.add_middleware(_BearerAuth, token=token)

    def close(self) -> None:
        """Answer every blocking query now (the server is shutting down)."""
        self.closing.set()

    async def startup(self) -> None:
        """Start the lease sweep (once) and take blocking queries again."""
        self.closing.clear()
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep(), name="registry lease sweep")

    async def shutdown(self) -> None:
        """Answer blocking queries, stop the sweep and every health check."""
        self.close()
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        await self.checks.close()

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Sweep and checks for as long as an ASGI server runs the app."""
        await self.startup()
        try:
            yield
        finally:
            await self.shutdown()

    async def _sweep(self) -> None:
        """Expire lapsed leases periodically, so blocking queries learn of them without a read."""
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                self.state.expire()
            except Exception:
                log.exception("lease sweep failed")

    def _removed(self, record: Record) -> None:
        """Stop the check of an instance that went away and log why it went."""
        self.checks.untrack(record)
        expired = record.expires_at <= self.state.now()
        log.info(
            "instance expired" if expired else "instance deregistered",
            extra={"service_name": record.instance.service, "instance_id": record.instance.id},
        )

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        """Unknown routes and wrong methods answer in the API's JSON error shape too."""
        assert isinstance(exc, HTTPException)
        reason = "not found" if exc.status_code == 404 else exc.detail
        return _error(exc.status_code, reason, exc.headers)

    # ---- handlers ------------------------------------------------------------------------------

    async def put_instance(self, request: Request) -> Response:
        """Register or renew an instance."""
        service, instance_id = request.path_params["service"], request.path_params["id"]
        try:
            validate_name("service", service)
            validate_name("instance id", instance_id)
            instance, ttl, raw_check = parse_registration(service, instance_id, await read_json(request))
            check = parse_check(raw_check, instance.ports) if raw_check is not None else None
            registered = self.state.register(instance, ttl, check)
        except (BadRequest, ValueError) as exc:
            return _error(400, str(exc))
        except LimitExceeded as exc:
            return _error(429, str(exc))
        record = registered.record
        self.checks.track(record)
        if registered.created:
            log.info(
                "instance registered",
                extra={"service_name": service, "instance_id": instance_id, "address": instance.host},
            )
        remaining = record.expires_at - self.state.now()
        expires_at = datetime.fromtimestamp(time.time() + remaining, UTC).isoformat(timespec="milliseconds")
        body = {
            "instance": record.instance.to_json(),
            "lease": {"ttl": record.ttl, "expires_in": remaining, "expires_at": expires_at},
            "check": record.check.to_json() if record.check else None,
            "created": registered.created,
            "index": registered.index,
        }
        return JSONResponse(body, headers={INDEX_HEADER: str(registered.index)})

    async def delete_instance(self, request: Request) -> Response:
        """Deregister an instance (404 when it is not registered)."""
        service, instance_id = request.path_params["service"], request.path_params["id"]
        try:
            validate_name("service", service)
            validate_name("instance id", instance_id)
        except ValueError as exc:
            return _error(400, str(exc))
        record = self.state.deregister(service, instance_id)
        if record is None:
            return _error(404, f"instance {instance_id!r} of {service!r} is not registered")
        index = self.state.index_of(service)
        return JSONResponse({"deregistered": record.instance.to_json(), "index": index})

    async def list_services(self, request: Request) -> Response:
        """Every service with all its instances (any status)."""
        services, index = self.state.services()
        body = {
            "services": {name: [i.to_json() for i in instances] for name, instances in services.items()},
            "index": index,
        }
        return JSONResponse(body, headers={INDEX_HEADER: str(index)})

    async def get_service(self, request: Request) -> Response:
        """A service's instances; with ?index=N, block while its index is still N (?wait, max 5 min)."""
        service = request.path_params["service"]
        try:
            validate_name("service", service)
            index = _query_index(request.query_params)
            wait = _query_wait(request.query_params)
            any_status = _query_any_status(request.query_params)
        except (BadRequest, ValueError) as exc:
            return _error(400, str(exc))
        if index is None or index != self.state.index_of(service) or self.closing.is_set():
            instances, current = self.state.instances(service, any_status)
        else:
            answer = await self._wait(request, service, index, wait, any_status)
            if answer is None:
                return Response(status_code=204)  # the client is gone; nothing will be sent
            instances, current = answer
        body = {
            "service": service,
            "index": current,
            "changed_at": self.state.changed_at(service),
            "instances": [i.to_json() for i in instances],
        }
        return JSONResponse(body, headers={INDEX_HEADER: str(current)})

    async def _wait(
        self, request: Request, service: str, index: int, wait: float, any_status: bool
    ) -> tuple[list[Instance], int] | None:
        """Wait for a change, the wait to run out or shutdown; None when the client went away first."""
        change = asyncio.create_task(self.state.wait_for_change(service, index, wait, any_status))
        gone = asyncio.create_task(_until_disconnected(request))
        closing = asyncio.create_task(self.closing.wait())
        tasks = (change, gone, closing)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if change.done() and not change.cancelled() and change.exception() is None:
            return change.result()
        if gone.done() and not gone.cancelled():
            return None
        return self.state.instances(service, any_status)

    async def health(self, request: Request) -> Response:
        """Liveness plus the number of services and instances."""
        services, instances = self.state.counts()
        return JSONResponse({"status": "ok", "services": services, "instances": instances})


def _fresh_index() -> int:
    """A first index that a previous run of the registry is unlikely to have reached (wall-clock ms).

    After a restart, a watcher still holding an old index then sees a different one at once
    instead of blocking on a number that happens to match.
    """
    return int(time.time() * 1000)


def create_app(state: RegistryState | None = None, token: str | None = None) -> Starlette:
    """The registry's ASGI app (lease sweep and health checks run in its lifespan)."""
    return RegistryApi(state, token).app


class RegistryServer:
    """The registry on host:port: `start()` binds and serves in the background, `stop()` shuts down."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        token: str | None = None,
        state: RegistryState | None = None,
        sweep_interval: float = 0.25,
    ) -> None:
        token = token or None
        if token is None and not is_loopback(host):
            raise ValueError(
                f"refusing to serve the registry on {host} without a token: set one (--token or"
                " BOUTIQUE_REGISTRY_TOKEN) or bind to 127.0.0.1"
            )
        self.host = host
        self.port = port
        self.api = RegistryApi(state, token, sweep_interval)
        self._server: EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def state(self) -> RegistryState:
        """The registry's state."""
        return self.api.state

    @property
    def checks(self) -> HealthChecks:
        """The registry's running health checks."""
        return self.api.checks

    @property
    def url(self) -> str:
        """The base URL clients use."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> int:
        """Bind (a clear OSError when the port is busy), start serving, return the bound port."""
        sock = bind(self.host, self.port, "registry")
        self.port = sock.getsockname()[1]
        server = make_server(self.api.app, graceful=5)  # lifespan off: start() and stop() run it
        await self.api.startup()
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name="registry server")
        try:
            started = await wait_started(server, self._task)
        except BaseException:
            await self.stop()
            raise
        if not started:
            sock.close()
            await self.stop()
            raise RuntimeError(f"the registry on {self.host}:{self.port} failed to start")
        log.info("registry listening", extra={"address": f"{self.host}:{self.port}"})
        return self.port

    async def wait(self) -> None:
        """Until the server stops."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        """Answer blocking queries, close connections, stop checks and the sweep."""
        server, task = self._server, self._task
        self._server = self._task = None
        if server is None or task is None:
            return
        self.api.close()
        server.should_exit = True
        try:
            await task
        except (Exception, SystemExit):
            log.exception("registry server ended with an error")
        finally:
            await self.api.shutdown()


async def serve_registry(host: str = "127.0.0.1", port: int = DEFAULT_PORT, token: str | None = None) -> None:
    """Run the registry until SIGTERM/SIGINT (or cancellation), then shut down cleanly."""
    server = RegistryServer(host, port, token)
    await server.start()
    stop = asyncio.Event()
    undo = stop_on_signals(asyncio.get_running_loop(), stop.set)
    waiter = asyncio.create_task(stop.wait())
    ended = asyncio.create_task(server.wait())
    try:
        await asyncio.wait({waiter, ended}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiter, ended):
            task.cancel()
        undo()
        await server.stop()
