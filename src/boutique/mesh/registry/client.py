"""A typed client of the registry's HTTP API, and a keep-alive task that holds an instance's lease."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from boutique.backoff import EQUAL_JITTER, backoff_delay
from boutique.http_tls import verify_for
from boutique.mesh.instance import Instance
from boutique.tokens import bearer_headers

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:7600"
INDEX_HEADER = "X-Registry-Index"
# Seconds before the first retry of a failed registration; doubles up to the renewal interval.
RETRY_BASE = 0.1


class RegistryError(Exception):
    """A registry call failed: the server's reason, and its HTTP status (None when unreachable)."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason if status is None else f"{reason} (HTTP {status})")
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Lease:
    """What the registry answered to a register/renew: the stored instance and its lease."""

    instance: Instance
    ttl: float
    expires_in: float
    created: bool
    index: int


def _path(*parts: str) -> str:
    """URL path segments, each percent-encoded."""
    return "/".join(quote(part, safe="") for part in parts)


class RegistryClient:
    """The registry's HTTP API on httpx.AsyncClient; every failure is a RegistryError."""

    def __init__(self, base_url: str = DEFAULT_URL, token: str | None = None, timeout: float = 5.0) -> None:
        self.last_changed_at: float | None = None  # the registry's wall-clock time of the last change seen
        headers = bearer_headers(token)
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout,
            trust_env=False,
            verify=verify_for(self.base_url),  # no CA bundle for a registry on plain http
        )

    async def __aenter__(self) -> RegistryClient:
        """Use the client as an async context manager."""
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the client on leaving the block."""
        await self.close()

    async def close(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request; non-2xx answers and transport failures become RegistryError."""
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise RegistryError(f"registry at {self.base_url} unreachable: {exc!r}") from exc
        if response.is_success:
            return response
        try:
            reason = str(response.json()["error"])
        except (ValueError, KeyError, TypeError):
            reason = response.text[:200] or response.reason_phrase
        raise RegistryError(reason, response.status_code)

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        """The answer's JSON object; RegistryError when it is anything else."""
        try:
            data = response.json()
        except ValueError as exc:
            raise RegistryError(
                f"registry answered with malformed JSON: {exc}", response.status_code
            ) from exc
        if not isinstance(data, dict):
            raise RegistryError("registry answered with an unexpected shape", response.status_code)
        return data

    async def register(self, instance: Instance, ttl: float, check: dict[str, Any] | None = None) -> Lease:
        """Register or renew `instance` with a lease of `ttl` seconds (and an optional active check)."""
        body: dict[str, Any] = {
            "address": instance.host,
            "ports": dict(instance.ports),
            "metadata": dict(instance.metadata),
            "ttl": ttl,
        }
        if check is not None:
            body["check"] = check
        path = "/v1/services/" + _path(instance.service, "instances", instance.id)
        data = self._json(await self._call("PUT", path, json=body))
        try:
            lease = data["lease"]
            return Lease(
                instance=Instance.from_json(data["instance"]),
                ttl=float(lease["ttl"]),
                expires_in=float(lease["expires_in"]),
                created=bool(data["created"]),
                index=int(data["index"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RegistryError(f"registry answered with an unexpected shape: {exc!r}") from exc

    async def deregister(self, service: str, instance_id: str) -> None:
        """Remove an instance (RegistryError with status 404 when it is not registered)."""
        await self._call("DELETE", "/v1/services/" + _path(service, "instances", instance_id))

    async def services(self) -> dict[str, list[Instance]]:
        """Every service with all its instances, whatever their health."""
        data = self._json(await self._call("GET", "/v1/services"))
        try:
            return {
                str(name): [Instance.from_json(item) for item in items]
                for name, items in dict(data["services"]).items()
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise RegistryError(f"registry answered with an unexpected shape: {exc!r}") from exc

    async def instances(
        self, service: str, index: int = 0, wait: float | None = None, any_status: bool = False
    ) -> tuple[list[Instance], int]:
        """A service's instances and index; with `index`, block until it differs (or `wait` s pass)."""
        params: dict[str, str] = {}
        timeout: float | httpx.Timeout = self.timeout
        if index:
            params["index"] = str(index)
            if wait is not None:
                params["wait"] = f"{max(0, round(wait * 1000))}ms"
            timeout = httpx.Timeout(self.timeout, read=(30.0 if wait is None else wait) + self.timeout)
        if any_status:
            params["status"] = "any"
        response = await self._call("GET", "/v1/services/" + _path(service), params=params, timeout=timeout)
        data = self._json(response)
        changed_at = data.get("changed_at") if isinstance(data, dict) else None
        self.last_changed_at = float(changed_at) if isinstance(changed_at, int | float) else None
        try:
            return [Instance.from_json(item) for item in data["instances"]], int(data["index"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RegistryError(f"registry answered with an unexpected shape: {exc!r}") from exc

    async def health(self) -> dict[str, Any]:
        """The registry's /v1/health answer."""
        return self._json(await self._call("GET", "/v1/health"))

    def keep_registered(
        self, instance: Instance, ttl: float, check: dict[str, Any] | None = None
    ) -> KeepAlive:
        """Start holding `instance` registered in the background (call inside a running loop)."""
        keepalive = KeepAlive(self, instance, ttl, check)
        keepalive.start()
        return keepalive


class KeepAlive:
    """Registers an instance, renews its lease every ttl/3 and re-registers it whenever it was lost.

    Registry errors are logged, never raised: a registry restart only means the next renewal
    registers the instance again. `stop()` ends the task and by default deregisters.
    """

    def __init__(
        self, client: RegistryClient, instance: Instance, ttl: float, check: dict[str, Any] | None = None
    ) -> None:
        self.client = client
        self.instance = instance
        self.ttl = ttl
        self.check = check
        self.lease: Lease | None = None
        # How many times the registry created (rather than renewed) the instance, and how many
        # renewals in a row have failed.
        self.registrations = 0
        self.failures = 0
        self._registered = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def interval(self) -> float:
        """Time between renewals."""
        return self.ttl / 3

    def start(self) -> None:
        """Start the background task (once)."""
        if self._task is None:
            name = f"keep {self.instance.service}/{self.instance.id} registered"
            self._task = asyncio.create_task(self._run(), name=name)

    async def wait_registered(self, timeout: float | None = None) -> bool:
        """Wait until the first registration succeeded; False when `timeout` ran out first."""
        try:
            async with asyncio.timeout(timeout):
                await self._registered.wait()
        except TimeoutError:
            return False
        return True

    async def stop(self, deregister: bool = True) -> None:
        """Stop renewing; with `deregister`, remove the instance from the registry (errors are logged)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if not deregister or self.lease is None:
            return
        try:
            await self.client.deregister(self.instance.service, self.instance.id)
        except RegistryError as exc:
            if exc.status != 404:
                log.warning("deregistration failed", extra=self._fields(error=exc.reason))
        self.lease = None

    def _fields(self, **more: Any) -> dict[str, Any]:
        """Log fields naming this instance."""
        return {"service_name": self.instance.service, "instance_id": self.instance.id, **more}

    async def _run(self) -> None:
        """Register, then renew every ttl/3; on failure log and retry sooner, with backoff and jitter."""
        while True:
            try:
                lease = await self.client.register(self.instance, self.ttl, self.check)
            except Exception as exc:
                self.failures += 1
                reason = exc.reason if isinstance(exc, RegistryError) else repr(exc)
                if self.failures == 1:
                    log.warning("registry renewal failed; retrying", extra=self._fields(error=reason))
                else:
                    log.debug("registry renewal failed again", extra=self._fields(error=reason))
                delay = backoff_delay(self.failures, RETRY_BASE, self.interval, EQUAL_JITTER)
            else:
                if lease.created:
                    self.registrations += 1
                    event = (
                        "registered" if self.registrations == 1 else "re-registered after the lease was lost"
                    )
                    log.info(event, extra=self._fields(ttl=self.ttl))
                elif self.failures:
                    log.info("registry renewal recovered", extra=self._fields(failures=self.failures))
                self.lease = lease
                self._registered.set()
                self.failures = 0
                delay = self.interval
            await asyncio.sleep(delay)
