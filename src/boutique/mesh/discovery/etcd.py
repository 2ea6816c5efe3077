"""etcd discovery over etcd's v3 JSON gateway: leases with keepalive to register, a prefix watch to resolve."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from boutique.http_tls import verify_for
from boutique.mesh.discovery.base import ETCD_PREFIX, Publish, Registrar, Resolver, RetryPolicy, Trouble
from boutique.mesh.instance import Instance

log = logging.getLogger(__name__)

API_PREFIXES = ("/v3/", "/v3beta/", "/v3alpha/")
NOT_FOUND = 5


class EtcdError(Exception):
    """An error answer from etcd (gRPC status code and message)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"etcd error {code}: {message}")
        self.code = code
        self.message = message


class WatchCompacted(Exception):
    """The watch asked for history etcd has compacted away; the caller must read the range again."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted (compact_revision={compact_revision})")
        self.compact_revision = compact_revision


BACKEND_ERRORS = (httpx.HTTPError, EtcdError, ValueError, KeyError, TypeError)


def _b64(text: str) -> str:
    """etcd's JSON gateway wants bytes fields base64-encoded."""
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    """Decode a base64 bytes field from the gateway."""
    return base64.b64decode(text).decode()


def prefix_end(prefix: str) -> str:
    """The range_end that selects every key starting with `prefix` (prefix with its last byte + 1)."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return _b64("\0")
    raw[-1] += 1
    return base64.b64encode(bytes(raw)).decode()


def _error_of(data: Mapping[str, Any], status: int) -> EtcdError:
    """Turn the gateway's error object into an EtcdError."""
    body = data.get("error", data)
    if isinstance(body, Mapping):
        code = int(body.get("code", body.get("grpc_code", 2)))
        message = str(body.get("message", body.get("error", f"http {status}")))
    else:
        code, message = int(data.get("code", 2)), str(body)
    return EtcdError(code, message)


@dataclass(frozen=True)
class KeyValue:
    """One key and its value as text, with the revision that last changed it."""

    key: str
    value: str
    mod_revision: int


class EtcdClient:
    """The few etcd v3 calls discovery needs, over HTTP/JSON; fails over across the given endpoints."""

    def __init__(self, endpoints: list[str], timeout: float = 5.0) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoint given")
        self.endpoints = [endpoint.rstrip("/") for endpoint in endpoints]
        self.timeout = timeout
        self._http = httpx.AsyncClient(timeout=timeout, verify=verify_for(*self.endpoints))
        self._current = 0
        self._api: dict[str, str] = {}

    async def _api_prefix(self, base: str) -> str:
        """Which API path this etcd serves (/v3/ from 3.4 on, /v3beta/ on 3.3), found once per endpoint."""
        known = self._api.get(base)
        if known:
            return known
        for prefix in API_PREFIXES:
            response = await self._http.post(f"{base}{prefix}maintenance/status", json={})
            if response.status_code != 404:
                self._api[base] = prefix
                return prefix
        raise EtcdError(12, f"{base} serves none of {', '.join(API_PREFIXES)}")

    async def api_prefix(self) -> str:
        """The API path prefix the current endpoint serves."""
        return await self._api_prefix(self.endpoints[self._current])

    async def _url(self, path: str) -> str:
        """Full URL of an API path on the current endpoint."""
        return f"{self.endpoints[self._current]}{await self.api_prefix()}{path}"

    def _fail_over(self) -> None:
        """Move to the next endpoint after a connection failure."""
        self._current = (self._current + 1) % len(self.endpoints)

    async def call(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST one request; try each endpoint once on connection errors; raise EtcdError on error answers."""
        last: Exception | None = None
        for _ in self.endpoints:
            try:
                response = await self._http.post(await self._url(path), json=dict(body))
            except httpx.TransportError as exc:
                last = exc
                self._fail_over()
                continue
            data = response.json()
            if response.status_code != 200 or "error" in data:
                raise _error_of(data, response.status_code)
            return dict(data)
        assert last is not None
        raise last

    async def grant(self, ttl: float) -> int:
        """A new lease of `ttl` seconds (rounded up; etcd may raise it to its minimum)."""
        data = await self.call("lease/grant", {"TTL": str(max(1, math.ceil(ttl)))})
        return int(data["ID"])

    async def keepalive(self, lease: int) -> int:
        """Renew a lease; returns its new TTL, 0 when the lease no longer exists."""
        data = await self.call("lease/keepalive", {"ID": str(lease)})
        return int(data.get("result", data).get("TTL", 0))

    async def revoke(self, lease: int) -> None:
        """Revoke a lease, deleting every key attached to it."""
        await self.call("lease/revoke", {"ID": str(lease)})

    async def put(self, key: str, value: str, lease: int = 0) -> int:
        """Set a key (attached to `lease` when nonzero); returns the new revision."""
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        data = await self.call("kv/put", body)
        return int(data["header"]["revision"])

    async def delete(self, key: str) -> None:
        """Delete one key."""
        await self.call("kv/deleterange", {"key": _b64(key)})

    async def range_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under `prefix` and the store revision the answer reflects."""
        data = await self.call("kv/range", {"key": _b64(prefix), "range_end": prefix_end(prefix)})
        pairs = [
            KeyValue(_unb64(kv["key"]), _unb64(kv.get("value", "")), int(kv.get("mod_revision", 0)))
            for kv in data.get("kvs", [])
        ]
        return pairs, int(data["header"]["revision"])

    async def watch(
        self, prefix: str, start_revision: int, idle_timeout: float = 60.0
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream watch responses for keys under `prefix` from `start_revision` on.

        Raises WatchCompacted when that revision is gone; a stream idle for `idle_timeout` seconds
        ends with httpx.ReadTimeout so the caller reconnects (a silently dead peer cannot stall it).
        """
        body = {
            "create_request": {
                "key": _b64(prefix),
                "range_end": prefix_end(prefix),
                "start_revision": str(start_revision),
            }
        }
        timeout = httpx.Timeout(self.timeout, read=idle_timeout)
        try:
            url = await self._url("watch")
            async with self._http.stream("POST", url, json=body, timeout=timeout) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise _error_of(response.json(), response.status_code)
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    message = json.loads(line)
                    if "error" in message:
                        raise _error_of(message, 200)
                    result = message.get("result", {})
                    compacted = int(result.get("compact_revision", 0))
                    if result.get("canceled") and compacted:
                        raise WatchCompacted(compacted)
                    if result.get("canceled"):
                        raise EtcdError(1, str(result.get("cancel_reason", "watch canceled")))
                    yield result
        except httpx.TransportError:
            self._fail_over()
            raise

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()


def service_prefix(prefix: str, service: str) -> str:
    """The key prefix under which every instance of `service` is stored."""
    return f"{prefix}{service}/"


def instance_key(prefix: str, instance: Instance) -> str:
    """The key of one instance: <prefix><service>/<instance id>."""
    return f"{service_prefix(prefix, instance.service)}{instance.id}"


class EtcdRegistrar(Registrar):
    """Registers an instance as a key attached to a lease, renewed every ttl/3.

    When the lease is lost (expired while etcd was unreachable, or revoked) a new one is granted and
    the key is written again; when etcd is down the loop keeps trying.
    """

    def __init__(
        self,
        endpoints: list[str] | str,
        prefix: str = ETCD_PREFIX,
        retry: RetryPolicy | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.client = EtcdClient([endpoints] if isinstance(endpoints, str) else list(endpoints), timeout)
        self.prefix = prefix
        self.retry = retry or RetryPolicy()
        self.lease: int | None = None
        self._instance: Instance | None = None
        self._ttl = 10.0
        self._task: asyncio.Task[None] | None = None

    async def register(self, instance: Instance, ttl: float) -> None:
        """Write the instance under a fresh lease now (or keep trying in the background) and keep it alive."""
        if self._instance is not None:
            await self.deregister()
        self._instance, self._ttl = instance, ttl
        trouble = Trouble(
            log, "etcd registration failed; retrying in the background", instance_id=instance.id
        )
        try:
            await self._establish()
        except BACKEND_ERRORS as exc:
            trouble.failed(str(exc))
        self._task = asyncio.create_task(self._keep_alive(trouble))

    async def _establish(self) -> None:
        """Grant a lease and put the instance's key on it."""
        assert self._instance is not None
        lease = await self.client.grant(self._ttl)
        try:
            await self.client.put(
                instance_key(self.prefix, self._instance), json.dumps(self._instance.to_json()), lease
            )
        except BaseException:
            with contextlib.suppress(*BACKEND_ERRORS):
                await self.client.revoke(lease)
            raise
        self.lease = lease
        log.info("registered in etcd", extra={"instance_id": self._instance.id, "lease": lease})

    async def _keep_alive(self, registering: Trouble) -> None:
        """Renew every ttl/3; re-register when the lease is gone; back off while etcd is unreachable
        (each problem logged once, and once more when etcd answers again)."""
        renewing = Trouble(log, "etcd keepalive failed")
        while True:
            lease = self.lease
            if lease is None:
                try:
                    await self._establish()
                    registering.recovered("etcd registration succeeded after failing")
                except BACKEND_ERRORS as exc:
                    delay = min(self.retry.delay(registering.failures), self._ttl / 3)
                    registering.failed(str(exc))
                    await asyncio.sleep(delay)
                continue
            await asyncio.sleep(self._ttl / 3)
            try:
                remaining = await self.client.keepalive(lease)
            except EtcdError as exc:
                if exc.code != NOT_FOUND:
                    renewing.failed(str(exc))
                    continue
                remaining = 0
            except BACKEND_ERRORS as exc:
                renewing.failed(str(exc))
                continue
            renewing.recovered("etcd keepalive answers again")
            if remaining <= 0:
                log.warning("etcd lease lost; registering again", extra={"lease": self.lease})
                self.lease = None

    async def deregister(self) -> None:
        """Stop renewing, delete the key and revoke the lease (logged, not raised, when etcd is down)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        instance, lease = self._instance, self.lease
        self._instance, self.lease = None, None
        if instance is None:
            return
        try:
            await self.client.delete(instance_key(self.prefix, instance))
            if lease is not None:
                await self.client.revoke(lease)
            log.info("deregistered from etcd", extra={"instance_id": instance.id})
        except BACKEND_ERRORS as exc:
            log.warning(
                "etcd deregistration failed; the lease will expire",
                extra={"instance_id": instance.id, "error": str(exc)},
            )

    async def close(self) -> None:
        """Deregister and close the connections."""
        await self.deregister()
        await self.client.close()


class EtcdResolver(Resolver):
    """Reads the instances under <prefix><service>/ and follows them with a watch.

    The watch resumes from the last revision seen after any error; when that history was compacted
    it reads the whole range again. Keys whose value is not an instance are skipped (logged).
    """

    def __init__(
        self,
        endpoints: list[str] | str,
        prefix: str = ETCD_PREFIX,
        retry: RetryPolicy | None = None,
        idle_timeout: float = 60.0,
        timeout: float = 5.0,
    ) -> None:
        super().__init__()
        self.client = EtcdClient([endpoints] if isinstance(endpoints, str) else list(endpoints), timeout)
        self.prefix = prefix
        self.retry = retry or RetryPolicy()
        self.idle_timeout = idle_timeout

    def watch(self, service: str) -> AsyncIterator[list[Instance]]:
        """Yield the registered instances of `service` now and after every change."""
        return self._follow(lambda publish: self._follow_prefix(service, publish))

    @staticmethod
    def _parse(key: str, value: str) -> Instance | None:
        """The instance stored under a key, or None (logged) when the value is not one."""
        try:
            return Instance.from_json(json.loads(value))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("skipping a malformed etcd entry", extra={"key": key, "error": str(exc)})
            return None

    async def _follow_prefix(self, service: str, publish: Publish) -> None:
        """Range, then watch from revision+1; reconnect from the last revision seen; re-range on compaction."""
        prefix = service_prefix(self.prefix, service)
        known: dict[str, Instance] = {}
        revision: int | None = None
        trouble = Trouble(log, "etcd watch failed; keeping the last known instances", dependency=service)
        while True:
            try:
                if revision is None:
                    pairs, revision = await self.client.range_prefix(prefix)
                    known = {kv.key: i for kv in pairs if (i := self._parse(kv.key, kv.value)) is not None}
                    publish(list(known.values()))
                    trouble.recovered("etcd watch recovered")
                seen: int = revision
                async for result in self.client.watch(prefix, seen + 1, self.idle_timeout):
                    trouble.recovered("etcd watch recovered")
                    for event in result.get("events", []):
                        kv = event["kv"]
                        key = _unb64(kv["key"])
                        seen = max(seen, int(kv.get("mod_revision", seen)))
                        revision = seen
                        if event.get("type") == "DELETE":
                            known.pop(key, None)
                        elif (instance := self._parse(key, _unb64(kv.get("value", "")))) is not None:
                            known[key] = instance
                    if result.get("events"):
                        publish(list(known.values()))
            except WatchCompacted as exc:
                log.info("etcd watch history compacted; reading again", extra={"error": str(exc)})
                revision = None
                continue
            except httpx.ReadTimeout:
                continue
            except BACKEND_ERRORS as exc:
                trouble.failed(str(exc))
                await asyncio.sleep(self.retry.delay(trouble.failures - 1))

    async def close(self) -> None:
        """End every watch and close the connections."""
        await super().close()
        await self.client.close()
