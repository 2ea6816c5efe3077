"""The discovery interfaces (Resolver, Registrar) and the choice of backend by configuration."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import random
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from boutique.mesh.client import StaticEndpoints
from boutique.mesh.instance import Instance

DEFAULT_REGISTRY_URL = "http://127.0.0.1:7600"
DEFAULT_ETCD_ENDPOINTS = "http://127.0.0.1:2379"
ETCD_PREFIX = "/boutique/services/"
BACKENDS = ("registry", "etcd", "dns", "static")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter between attempts to reach a failing discovery backend."""

    base: float = 0.2
    cap: float = 5.0

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number `attempt` (0-based): half fixed, half random, capped."""
        ceiling = min(self.cap, self.base * (2 ** min(attempt, 32)))
        return ceiling / 2 + ceiling / 2 * rand()


Publish = Callable[[list[Instance]], None]


def sorted_set(instances: Iterable[Instance]) -> list[Instance]:
    """Instances in a stable order (by id), so two equal sets compare equal as lists."""
    return sorted(instances, key=lambda instance: instance.id)


class Resolver(ABC):
    """Watches the live instance set of a service.

    `watch(service)` yields the full current set first, then the full set again after every change
    (a slow consumer gets the newest set, not every intermediate one). Backend errors never show up
    as an empty set: the last known set stays, the backend is retried with backoff and the error is
    logged. The iterator ends when the resolver is closed (or, for a set that can never change,
    right after the first set).
    """

    def __init__(self) -> None:
        self._closed = asyncio.Event()
        self._producers: set[asyncio.Task[None]] = set()

    @abstractmethod
    def watch(self, service: str) -> AsyncIterator[list[Instance]]:
        """Yield the instance set of `service` now and after every change."""

    @property
    def closed(self) -> bool:
        """Whether close() was called."""
        return self._closed.is_set()

    async def close(self) -> None:
        """End every watch of this resolver and release its connections."""
        self._closed.set()
        producers = list(self._producers)
        for producer in producers:
            producer.cancel()
        await asyncio.gather(*producers, return_exceptions=True)

    async def _follow(
        self, produce: Callable[[Publish], Coroutine[Any, Any, None]]
    ) -> AsyncIterator[list[Instance]]:
        """Run `produce` (the backend loop, which publishes full sets) in a task and yield each new set.

        Keeping every backend call inside one task of its own lets close() and an abandoned watch
        cancel it cleanly, whatever the backend is waiting on.
        """
        latest: list[Instance] | None = None
        changed = asyncio.Event()

        def publish(instances: list[Instance]) -> None:
            """Offer a full set; only a different one wakes the watch."""
            nonlocal latest
            current = sorted_set(instances)
            if current != latest:
                latest = current
                changed.set()

        if self.closed:
            return
        producer: asyncio.Task[None] = asyncio.create_task(produce(publish))
        self._producers.add(producer)
        producer.add_done_callback(self._producers.discard)
        closing = asyncio.create_task(self._closed.wait())
        sent: list[Instance] | None = None
        try:
            while True:
                waiting = asyncio.create_task(changed.wait())
                try:
                    await asyncio.wait({waiting, producer, closing}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiting.cancel()
                if self.closed:
                    return
                changed.clear()
                if latest is not None and latest != sent:
                    sent = latest
                    yield latest
                if producer.done():
                    if not producer.cancelled():
                        producer.result()
                    return
        finally:
            closing.cancel()
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer


class Registrar(ABC):
    """The server side of discovery: announce this instance and keep it announced until deregistered."""

    @abstractmethod
    async def register(self, instance: Instance, ttl: float) -> None:
        """Announce `instance` with a lease of `ttl` seconds and keep renewing it in the background."""

    @abstractmethod
    async def deregister(self) -> None:
        """Stop renewing and withdraw the registration (best effort when the backend is down)."""


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    """The given mapping, or the process environment."""
    return os.environ if environ is None else environ


def _backend(environ: Mapping[str, str]) -> str:
    """BOUTIQUE_DISCOVERY, validated (default "registry")."""
    backend = environ.get("BOUTIQUE_DISCOVERY", "").strip().lower() or "registry"
    if backend not in BACKENDS:
        raise RuntimeError(f"BOUTIQUE_DISCOVERY={backend!r}: use one of {', '.join(BACKENDS)}")
    return backend


def _is_ip_literal(host: str) -> bool:
    """Whether host is an IPv4 or (bracketed or bare) IPv6 address rather than a name."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def etcd_endpoints(environ: Mapping[str, str] | None = None) -> list[str]:
    """BOUTIQUE_ETCD_ENDPOINTS as a list of base URLs (comma-separated; default the local etcd)."""
    text = _env(environ).get("BOUTIQUE_ETCD_ENDPOINTS", "").strip() or DEFAULT_ETCD_ENDPOINTS
    return [part.strip().rstrip("/") for part in text.split(",") if part.strip()]


def pinned_resolver(variable: str, value: str, default_port: int | None = None) -> Resolver:
    """The resolver an address variable pins: one host name -> DNS re-resolution, else static addresses.

    `cart:7070` (a name, not an IP literal) is re-resolved to all its A/AAAA records; an IP literal,
    `localhost` (which never changes) or a comma list of host:port is used as it is.
    """
    from boutique.mesh.discovery.dns import DnsResolver
    from boutique.mesh.discovery.static import StaticResolver

    entries = [part.strip() for part in value.split(",") if part.strip()]
    if len(entries) == 1:
        host, sep, port = entries[0].rpartition(":")
        if not sep or (":" in host and not host.startswith("[")):
            host, port = entries[0], ""
        if not _is_ip_literal(host) and host.lower() != "localhost":
            if not port and default_port is None:
                raise RuntimeError(f"{variable}={value!r}: give host:port")
            if port and not (port.isdigit() and 0 < int(port) < 65536):
                raise RuntimeError(f"{variable}={value!r}: not a port: {port!r}")
            return DnsResolver(host, int(port) if port else int(default_port or 0))
    try:
        endpoints = StaticEndpoints.parse(value)
    except ValueError as exc:
        raise RuntimeError(f"{variable}: {exc}") from exc
    return StaticResolver(list(endpoints.addresses))


def resolver_from_env(
    service: str,
    address_variable: str | None = None,
    default_port: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> Resolver:
    """The resolver for one dependency, chosen by configuration.

    A set `address_variable` (e.g. CART_SERVICE_ADDR) pins the dependency (see pinned_resolver).
    Otherwise BOUTIQUE_DISCOVERY picks the backend: "registry" (default; BOUTIQUE_REGISTRY_URL,
    BOUTIQUE_REGISTRY_TOKEN), "etcd" (BOUTIQUE_ETCD_ENDPOINTS), "dns" (the name `service` plus
    BOUTIQUE_DNS_SUFFIX, port `default_port` or BOUTIQUE_DNS_PORT) or "static" (which needs the
    address variable).
    """
    env = _env(environ)
    pinned = env.get(address_variable, "").strip() if address_variable else ""
    if address_variable and pinned:
        return pinned_resolver(address_variable, pinned, default_port)
    backend = _backend(env)
    if backend == "registry":
        from boutique.mesh.discovery.registry import RegistryResolver

        return RegistryResolver(
            env.get("BOUTIQUE_REGISTRY_URL", "").strip() or DEFAULT_REGISTRY_URL,
            env.get("BOUTIQUE_REGISTRY_TOKEN", "").strip() or None,
        )
    if backend == "etcd":
        from boutique.mesh.discovery.etcd import EtcdResolver

        return EtcdResolver(etcd_endpoints(env), prefix=ETCD_PREFIX)
    if backend == "dns":
        from boutique.mesh.discovery.dns import DnsResolver

        port_text = env.get("BOUTIQUE_DNS_PORT", "").strip()
        if default_port is None and not port_text.isdigit():
            raise RuntimeError(f"BOUTIQUE_DISCOVERY=dns: set BOUTIQUE_DNS_PORT to find {service}")
        port = default_port if default_port is not None else int(port_text)
        return DnsResolver(service + env.get("BOUTIQUE_DNS_SUFFIX", "").strip(), port)
    variable = address_variable or "the service's address variable"
    raise RuntimeError(f"BOUTIQUE_DISCOVERY=static: set {variable} to the host:port of {service}")


def registrar_from_env(environ: Mapping[str, str] | None = None) -> Registrar:
    """The registrar for this process, by BOUTIQUE_DISCOVERY (dns and static register nothing)."""
    env = _env(environ)
    backend = _backend(env)
    if backend == "registry":
        from boutique.mesh.discovery.registry import RegistryRegistrar

        return RegistryRegistrar(
            env.get("BOUTIQUE_REGISTRY_URL", "").strip() or DEFAULT_REGISTRY_URL,
            env.get("BOUTIQUE_REGISTRY_TOKEN", "").strip() or None,
        )
    if backend == "etcd":
        from boutique.mesh.discovery.etcd import EtcdRegistrar

        return EtcdRegistrar(etcd_endpoints(env), prefix=ETCD_PREFIX)
    from boutique.mesh.discovery.static import StaticRegistrar

    return StaticRegistrar()
