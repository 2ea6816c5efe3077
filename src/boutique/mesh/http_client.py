"""HTTP transport of the mesh: httpx requests to a named service's instances, through `Dependency`."""

from __future__ import annotations

from typing import Any

import httpx

from boutique.mesh.dependency import CallPolicy, Dependency, Outcome
from boutique.mesh.discovery import Resolver
from boutique.mesh.errors import MeshUnavailable
from boutique.mesh.instance import Instance
from boutique.mesh.tracing import sdk_installed

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_TRANSIENT_STATUS = frozenset({502, 503, 504})


class ServerError(Exception):
    """An instance answered 5xx; carries the response."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code} from {response.request.url}")
        self.response = response


def classify(exc: BaseException) -> Outcome:
    """How a failed HTTP attempt counts for retries, ejection and the breaker."""
    if isinstance(exc, ServerError):
        return Outcome.TRANSIENT if exc.response.status_code in _TRANSIENT_STATUS else Outcome.FAILURE
    if isinstance(exc, httpx.TransportError | MeshUnavailable | OSError):
        return Outcome.TRANSIENT
    return Outcome.FAILURE


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
    """An HTTP dependency: `await dep.request("GET", "/path")` → httpx.Response (5xx raise ServerError)."""

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

    async def request(
        self, method: str, path: str, *, idempotent: bool | None = None, **kwargs: Any
    ) -> httpx.Response:
        """Send one request to a chosen instance; idempotent methods are retried elsewhere on transient failure."""
        verb = method.upper()

        async def attempt(base_url: str, per_try: float) -> httpx.Response:
            response = await self.client.request(verb, base_url + path, timeout=per_try, **kwargs)
            if response.status_code >= 500:
                raise ServerError(response)
            return response

        retryable = verb in IDEMPOTENT_METHODS if idempotent is None else idempotent
        return await self.invoke(verb, attempt, classify, retryable=retryable)

    async def close(self) -> None:
        """Close the HTTP client and stop watching."""
        await super().close()
        await self.client.aclose()
