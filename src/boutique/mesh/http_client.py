"""HTTP transport of the mesh: httpx requests to a named service's instances, through `Dependency`."""

from __future__ import annotations

from typing import Any

import grpc
import httpx

from boutique.mesh.calls.outcome import CallStatus, status_of_error
from boutique.mesh.dependency import CallPolicy, Dependency
from boutique.mesh.discovery import Resolver
from boutique.mesh.errors import FAILED_DEPENDENCY, SERVED_BY, SHED
from boutique.mesh.instance import Instance
from boutique.mesh.tracing import sdk_installed

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
TOO_MANY_REQUESTS = 429

Code = grpc.StatusCode

# HTTP statuses as gRPC codes (the mapping google.rpc.Code documents); other 4xx are FAILED_PRECONDITION
# and other 5xx UNKNOWN. A 503 that carries the shed marker is RESOURCE_EXHAUSTED (see grpc_code).
HTTP_CODES = {
    400: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    404: Code.NOT_FOUND,
    409: Code.ABORTED,
    429: Code.RESOURCE_EXHAUSTED,
    499: Code.CANCELLED,
    500: Code.INTERNAL,
    501: Code.UNIMPLEMENTED,
    502: Code.UNAVAILABLE,
    503: Code.UNAVAILABLE,
    504: Code.DEADLINE_EXCEEDED,
}


class ServerError(Exception):
    """An instance answered 5xx, or 429 (too many requests); carries the response."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code} from {response.request.url}")
        self.response = response


def grpc_code(status: int, shed: bool = False) -> grpc.StatusCode:
    """The gRPC code of an HTTP status; `shed`: the answer carries the shed marker (errors.SHED).

    A shedding server's 503 refused the call unprocessed over its load: RESOURCE_EXHAUSTED, so the
    caller retries it elsewhere without blaming the instance, as for a gRPC server's shed call.
    """
    if shed and status == 503:
        return Code.RESOURCE_EXHAUSTED
    code = HTTP_CODES.get(status)
    if code is not None:
        return code
    return Code.UNKNOWN if status >= 500 else Code.FAILED_PRECONDITION


def status_of(exc: Exception) -> CallStatus:
    """What a failed HTTP attempt ended with, as a gRPC status: the answer's, or the transport error's."""
    if isinstance(exc, ServerError):
        headers = exc.response.headers
        return CallStatus(grpc_code(exc.response.status_code, SHED in headers), FAILED_DEPENDENCY in headers)
    if isinstance(exc, httpx.TimeoutException):
        return CallStatus(Code.DEADLINE_EXCEEDED)
    if isinstance(exc, httpx.TransportError):  # could not connect, or the connection broke
        return CallStatus(Code.UNAVAILABLE)
    return status_of_error(exc)


class HttpConnector:
    """The connection of an instance is its base URL; httpx keeps one pool per origin."""

    def __init__(self, port: str = "http", scheme: str = "http") -> None:
        self.port = self.port_name = port
        self.scheme = scheme

    def open(self, instance: Instance) -> str:
        """The instance's base URL."""
        return f"{self.scheme}://{instance.endpoint(self.port)}"

    async def close(self, conn: str) -> None:
        """Nothing per instance to release."""


class HttpDependency(Dependency[str]):
    """An HTTP dependency: `await dep.request("GET", "/path")` → httpx.Response (5xx and 429 raise ServerError)."""

    def __init__(
        self,
        name: str,
        resolver: Resolver,
        policy: CallPolicy | None = None,
        caller: str = "",
        port: str = "http",
        client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(name, resolver, HttpConnector(port), policy, caller)
        self.client = client or httpx.AsyncClient()
        if sdk_installed():  # a CLIENT span per attempt, carrying the trace headers
            from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

            HTTPXClientInstrumentor.instrument_client(self.client)

    def injected_error(self, code: grpc.StatusCode, message: str, served_by: Instance | None) -> Exception:
        """An injected fault as this transport's error: the instance's answer with the HTTP status of
        `code` (naming the instance), or httpx's timeout when nothing answered in time."""
        if served_by is None:
            return httpx.ReadTimeout(message)
        status = (
            503 if code is Code.UNAVAILABLE else next((s for s, c in HTTP_CODES.items() if c is code), 500)
        )
        request = httpx.Request("GET", self.connector.open(served_by))
        return ServerError(
            httpx.Response(status, headers={SERVED_BY: served_by.id}, text=message, request=request)
        )

    async def request(
        self, method: str, path: str, *, idempotent: bool | None = None, **kwargs: Any
    ) -> httpx.Response:
        """Send one request to a chosen instance; idempotent methods are retried elsewhere on transient failure."""
        verb = method.upper()

        async def attempt(base_url: str, per_try: float) -> httpx.Response:
            response = await self.client.request(verb, base_url + path, timeout=per_try, **kwargs)
            if response.status_code >= 500 or response.status_code == TOO_MANY_REQUESTS:
                raise ServerError(response)
            return response

        retryable = verb in IDEMPOTENT_METHODS if idempotent is None else idempotent
        return await self.invoke(verb, attempt, status_of, retryable=retryable)

    async def close(self) -> None:
        """Close the HTTP client and stop watching."""
        await super().close()
        await self.client.aclose()
