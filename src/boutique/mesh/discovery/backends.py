"""The discovery backends by name, in one table: each makes a resolver (for a dependency) and a registrar.

`BOUTIQUE_DISCOVERY` names the row; an address variable (e.g. CART_SERVICE_ADDR) pins one dependency
past the table, to fixed addresses or a DNS name. This module sits above the backends, so none of them
(nor `base`) imports another: adding a backend is a module beside them and a row here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from boutique.mesh.advertise import is_ip
from boutique.mesh.client import StaticEndpoints
from boutique.mesh.discovery.base import ETCD_PREFIX, Registrar, Resolver
from boutique.mesh.discovery.dns import DnsResolver
from boutique.mesh.discovery.etcd import EtcdRegistrar, EtcdResolver
from boutique.mesh.discovery.registry import RegistryRegistrar, RegistryResolver
from boutique.mesh.discovery.static import StaticRegistrar, StaticResolver
from boutique.mesh.settings import DiscoverySettings


@dataclass(frozen=True)
class Wanted:
    """The dependency a resolver is for: its service name, its address variable and a default port."""

    service: str
    address_variable: str | None = None
    default_port: int | None = None


@dataclass(frozen=True)
class Backend:
    """How one backend resolves a dependency and announces this process."""

    resolver: Callable[[Wanted, DiscoverySettings], Resolver]
    registrar: Callable[[DiscoverySettings], Registrar]


def _registry_resolver(wanted: Wanted, settings: DiscoverySettings) -> Resolver:
    return RegistryResolver(settings.registry_url, settings.registry_token)


def _registry_registrar(settings: DiscoverySettings) -> Registrar:
    return RegistryRegistrar(settings.registry_url, settings.registry_token)


def _etcd_resolver(wanted: Wanted, settings: DiscoverySettings) -> Resolver:
    return EtcdResolver(list(settings.etcd_endpoints), prefix=ETCD_PREFIX)


def _etcd_registrar(settings: DiscoverySettings) -> Registrar:
    return EtcdRegistrar(list(settings.etcd_endpoints), prefix=ETCD_PREFIX)


def _dns_resolver(wanted: Wanted, settings: DiscoverySettings) -> Resolver:
    """The service's name plus BOUTIQUE_DNS_SUFFIX, on the default port or BOUTIQUE_DNS_PORT."""
    port = wanted.default_port if wanted.default_port is not None else settings.dns_port
    if port is None:
        raise RuntimeError(f"BOUTIQUE_DISCOVERY=dns: set BOUTIQUE_DNS_PORT to find {wanted.service}")
    return DnsResolver(wanted.service + settings.dns_suffix, port)


def _static_resolver(wanted: Wanted, settings: DiscoverySettings) -> Resolver:
    """Static discovery has nothing to look up: only an address variable (handled before) can say where."""
    variable = wanted.address_variable or "the service's address variable"
    raise RuntimeError(f"BOUTIQUE_DISCOVERY=static: set {variable} to the host:port of {wanted.service}")


def _no_registrar(settings: DiscoverySettings) -> Registrar:
    """With DNS or static addresses the platform, not the process, publishes where it is."""
    return StaticRegistrar()


BACKENDS: dict[str, Backend] = {
    "registry": Backend(_registry_resolver, _registry_registrar),
    "etcd": Backend(_etcd_resolver, _etcd_registrar),
    "dns": Backend(_dns_resolver, _no_registrar),
    "static": Backend(_static_resolver, _no_registrar),
}


def pinned_resolver(variable: str, value: str, default_port: int | None = None) -> Resolver:
    """The resolver an address variable pins: one host name -> DNS re-resolution, else static addresses.

    `cart:7070` (a name, not an IP literal) is re-resolved to all its A/AAAA records; an IP literal,
    `localhost` (which never changes) or a comma list of host:port is used as it is.
    """
    entries = [part.strip() for part in value.split(",") if part.strip()]
    if len(entries) == 1:
        host, sep, port = entries[0].rpartition(":")
        if not sep or (":" in host and not host.startswith("[")):
            host, port = entries[0], ""
        if not is_ip(host) and host.lower() != "localhost":
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


def resolver_for(
    service: str,
    settings: DiscoverySettings,
    address_variable: str | None = None,
    default_port: int | None = None,
) -> Resolver:
    """The resolver of one dependency: pinned by its address variable when that is set, else the backend's."""
    pinned = settings.address(address_variable) if address_variable else ""
    if address_variable and pinned:
        return pinned_resolver(address_variable, pinned, default_port)
    return BACKENDS[settings.backend].resolver(Wanted(service, address_variable, default_port), settings)


def registrar_for(settings: DiscoverySettings) -> Registrar:
    """This process's registrar (dns and static register nothing)."""
    return BACKENDS[settings.backend].registrar(settings)
