"""Service discovery: one Resolver/Registrar interface over the registry, etcd, DNS and static addresses."""

from boutique.mesh.discovery.backends import BACKENDS, Backend, pinned_resolver, registrar_for, resolver_for
from boutique.mesh.discovery.base import Registrar, Resolver, RetryPolicy
from boutique.mesh.discovery.dns import DnsResolver
from boutique.mesh.discovery.etcd import EtcdClient, EtcdError, EtcdRegistrar, EtcdResolver
from boutique.mesh.discovery.registry import RegistryRegistrar, RegistryResolver
from boutique.mesh.discovery.static import StaticRegistrar, StaticResolver

__all__ = [
    "BACKENDS",
    "Backend",
    "DnsResolver",
    "EtcdClient",
    "EtcdError",
    "EtcdRegistrar",
    "EtcdResolver",
    "Registrar",
    "RegistryRegistrar",
    "RegistryResolver",
    "Resolver",
    "RetryPolicy",
    "StaticRegistrar",
    "StaticResolver",
    "pinned_resolver",
    "registrar_for",
    "resolver_for",
]
