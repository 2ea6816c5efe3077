"""Discovery: static addresses, DNS re-resolution, the embedded registry, and the choice by configuration."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grimp
import pytest

from boutique.mesh.discovery import (
    BACKENDS,
    DnsResolver,
    EtcdRegistrar,
    EtcdResolver,
    RegistryRegistrar,
    RegistryResolver,
    Resolver,
    RetryPolicy,
    StaticRegistrar,
    StaticResolver,
    registrar_for,
    resolver_for,
)
from boutique.mesh.instance import Instance
from boutique.mesh.registry import RegistryServer
from boutique.mesh.settings import DISCOVERY_BACKENDS, DiscoverySettings, MeshSettings

WAIT = 30.0  # generous bound on whether something happens, never on how fast
FAST_RETRY = RetryPolicy(base=0.05, cap=0.3)


class Watcher:
    """Collects every set a watch yields, so a test can wait for a condition and inspect the history."""

    def __init__(self, resolver: Resolver, service: str) -> None:
        self.history: list[list[Instance]] = []
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._run(resolver, service))

    async def _run(self, resolver: Resolver, service: str) -> None:
        async for instances in resolver.watch(service):
            async with self._changed:
                self.history.append(instances)
                self._changed.notify_all()

    def ids(self) -> list[set[str]]:
        """The instance ids of every set seen so far."""
        return [{i.id for i in instances} for instances in self.history]

    async def until(self, ids: set[str]) -> list[Instance]:
        """Wait (bounded) until the latest set has exactly these instance ids."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: self.ids()[-1:] == [ids]), WAIT)
        return self.history[-1]

    async def stop(self) -> None:
        """Stop watching."""
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def instance(service: str, instance_id: str, port: int) -> Instance:
    """A test instance on loopback with the metadata every registration carries."""
    return Instance(
        service=service,
        id=instance_id,
        host="127.0.0.1",
        ports={"grpc": port},
        metadata={"pid": "1", "started_at": "2024-01-01T00:00:00+00:00", "version": "test"},
    )


# ---- backoff and configuration -------------------------------------------------------------------


def test_retry_delays_grow_to_the_cap_and_stay_within_jitter_bounds() -> None:
    policy = RetryPolicy(base=0.1, cap=2.0)
    assert [policy.delay(n, rand=lambda: 0.0) for n in range(6)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0]
    assert [policy.delay(n, rand=lambda: 1.0) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
    assert policy.delay(1000, rand=lambda: 1.0) == 2.0


def discovery(**environ: str) -> DiscoverySettings:
    """The discovery part of the settings these variables give."""
    return MeshSettings.from_env(environ).discovery


def test_backend_is_chosen_by_configuration() -> None:
    registry = resolver_for("cart", discovery(BOUTIQUE_REGISTRY_URL="http://127.0.0.1:7999"))
    assert isinstance(registry, RegistryResolver) and registry.client.base_url == "http://127.0.0.1:7999"
    default = resolver_for("cart", discovery())
    assert isinstance(default, RegistryResolver) and default.client.base_url == "http://127.0.0.1:7600"
    etcd = resolver_for(
        "cart",
        discovery(
            BOUTIQUE_DISCOVERY="etcd",
            BOUTIQUE_ETCD_ENDPOINTS="http://127.0.0.1:1,http://127.0.0.1:2",
        ),
    )
    assert isinstance(etcd, EtcdResolver)
    assert etcd.client.endpoints == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    assert etcd.prefix == "/boutique/services/"
    dns = resolver_for(
        "cart",
        discovery(BOUTIQUE_DISCOVERY="dns", BOUTIQUE_DNS_SUFFIX=".shop.svc", BOUTIQUE_DNS_PORT="7070"),
    )
    assert isinstance(dns, DnsResolver) and (dns.name, dns.port) == ("cart.shop.svc", 7070)
    with pytest.raises(RuntimeError, match="CART_SERVICE_ADDR"):
        resolver_for("cart", discovery(BOUTIQUE_DISCOVERY="static"), "CART_SERVICE_ADDR")
    with pytest.raises(ValueError, match="BOUTIQUE_DISCOVERY"):
        discovery(BOUTIQUE_DISCOVERY="zookeeper")


def test_an_address_variable_pins_the_dependency() -> None:
    env = {"BOUTIQUE_DISCOVERY": "etcd"}

    def pinned(value: str) -> Resolver:
        return resolver_for("cart", discovery(**env, CART_SERVICE_ADDR=value), "CART_SERVICE_ADDR")

    listed = pinned("127.0.0.1:7070, 127.0.0.2:7070")
    assert isinstance(listed, StaticResolver) and listed.addresses == ("127.0.0.1:7070", "127.0.0.2:7070")
    assert isinstance(pinned("127.0.0.1:7070"), StaticResolver)
    assert isinstance(pinned("[::1]:7070"), StaticResolver)
    assert isinstance(pinned("localhost:7070"), StaticResolver)
    named = pinned("cartservice:7070")
    assert isinstance(named, DnsResolver) and (named.name, named.port) == ("cartservice", 7070)
    with pytest.raises(RuntimeError, match="CART_SERVICE_ADDR"):
        pinned("cartservice")
    with pytest.raises(RuntimeError, match="CART_SERVICE_ADDR"):
        pinned("127.0.0.1:notaport")
    assert isinstance(resolver_for("cart", discovery(**env), "CART_SERVICE_ADDR"), EtcdResolver)


def test_registrar_is_chosen_by_configuration() -> None:
    assert isinstance(registrar_for(discovery()), RegistryRegistrar)
    assert isinstance(registrar_for(discovery(BOUTIQUE_DISCOVERY="etcd")), EtcdRegistrar)
    assert isinstance(registrar_for(discovery(BOUTIQUE_DISCOVERY="dns")), StaticRegistrar)
    assert isinstance(registrar_for(discovery(BOUTIQUE_DISCOVERY="static")), StaticRegistrar)


def test_one_table_holds_every_backend_and_base_imports_none() -> None:
    assert tuple(BACKENDS) == DISCOVERY_BACKENDS  # the names the settings accept are the table's rows
    made = {name: type(BACKENDS[name].registrar(discovery())).__name__ for name in BACKENDS}
    assert made == {
        "registry": "RegistryRegistrar",
        "etcd": "EtcdRegistrar",
        "dns": "StaticRegistrar",
        "static": "StaticRegistrar",
    }
    graph = grimp.build_graph("boutique", cache_dir=None)
    siblings = {
        module
        for module in graph.find_modules_directly_imported_by("boutique.mesh.discovery.base")
        if module.startswith("boutique.mesh.discovery")
    }
    assert siblings == set()
    assert graph.find_modules_directly_imported_by("boutique.mesh.discovery.backends") >= {
        f"boutique.mesh.discovery.{name}" for name in ("dns", "etcd", "registry", "static")
    }


# ---- static --------------------------------------------------------------------------------------


async def test_static_resolver_yields_the_addresses_once() -> None:
    resolver = StaticResolver(["127.0.0.1:7070", "127.0.0.2:7071"])
    sets = [instances async for instances in resolver.watch("cart")]
    assert len(sets) == 1
    assert [(i.service, i.id, i.endpoint()) for i in sets[0]] == [
        ("cart", "127.0.0.1:7070", "127.0.0.1:7070"),
        ("cart", "127.0.0.2:7071", "127.0.0.2:7071"),
    ]
    registrar = StaticRegistrar()
    await registrar.register(sets[0][0], ttl=5)
    await registrar.deregister()
    with pytest.raises(ValueError):
        StaticResolver(["nohost"])


# ---- DNS -----------------------------------------------------------------------------------------


async def test_dns_resolves_localhost_to_a_loopback_instance() -> None:
    resolver = DnsResolver("localhost", 7070, interval=60)
    stream = resolver.watch("cart")
    first = await asyncio.wait_for(anext(stream), WAIT)
    assert "127.0.0.1:7070" in {i.id for i in first}
    (loopback,) = [i for i in first if i.host == "127.0.0.1"]
    assert loopback.service == "cart" and loopback.endpoint() == "127.0.0.1:7070"
    pending = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.1)
    await resolver.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(pending, WAIT)  # close() ends a watch in progress


DNS_WATCH_SCRIPT = """
import asyncio, json, logging, sys
from boutique.mesh.discovery import DnsResolver

async def main() -> None:
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(message)s")  # repeats are debug
    async for instances in DnsResolver(sys.argv[1], 7070, interval=0.1).watch("cart"):
        print(json.dumps(sorted(i.id for i in instances)), flush=True)

asyncio.run(main())
"""


@asynccontextmanager
async def private_hosts_file(tmp_path: Path) -> AsyncIterator[tuple[Path, asyncio.subprocess.Process]]:
    """Run a DNS watch in a mount namespace whose /etc/hosts is a file this test rewrites.

    /etc/resolv.conf there points at a closed local port, so names not in the file fail at once
    without leaving the machine.
    """
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)")
    hosts, resolv, script = tmp_path / "hosts", tmp_path / "resolv.conf", tmp_path / "watch.py"
    hosts.write_text("127.0.0.1 localhost\n127.0.0.2 cart.boutique.test\n127.0.0.3 cart.boutique.test\n")
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    script.write_text(DNS_WATCH_SCRIPT)
    probe = await asyncio.create_subprocess_exec(
        "unshare", "-m", "sh", "-c", f"mount --bind {hosts} /etc/hosts",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, probe_error = await probe.communicate()
    if probe.returncode != 0:
        pytest.skip(f"cannot bind-mount a private /etc/hosts (needs root): {probe_error.decode().strip()}")
    inner = 'mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf && exec "$3" "$4" "$5"'
    process = await asyncio.create_subprocess_exec(
        "unshare", "-m", "sh", "-c", inner, "sh",
        str(hosts), str(resolv), sys.executable, str(script), "cart.boutique.test",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        yield hosts, process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def next_set(process: asyncio.subprocess.Process) -> list[str]:
    """The next instance set the watching process printed."""
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), WAIT)
    assert line, "the watch process ended"
    return list(json.loads(line))


async def test_dns_follows_every_record_of_a_name_and_keeps_the_set_when_it_stops_resolving(
    tmp_path: Path,
) -> None:
    async with private_hosts_file(tmp_path) as (hosts, process):
        assert await next_set(process) == ["127.0.0.2:7070", "127.0.0.3:7070"]
        # In place (same inode), so the bind mount sees it.
        hosts.write_text("127.0.0.1 localhost\n127.0.0.2 cart.boutique.test\n127.0.0.4 cart.boutique.test\n")
        assert await next_set(process) == ["127.0.0.2:7070", "127.0.0.4:7070"]
        hosts.write_text("127.0.0.1 localhost\n")
        assert process.stderr is not None
        for _ in range(2):  # two failed re-resolutions at least
            while b"dns lookup failed" not in await asyncio.wait_for(process.stderr.readline(), WAIT):
                pass
        assert process.returncode is None, "an unresolvable name does not crash the watch"
        hosts.write_text("127.0.0.1 localhost\n127.0.0.5 cart.boutique.test\n")
        assert await next_set(process) == ["127.0.0.5:7070"], "no empty set was yielded in between"


# ---- the embedded registry -----------------------------------------------------------------------


@asynccontextmanager
async def registry(port: int = 0) -> AsyncIterator[RegistryServer]:
    """The real registry server on loopback."""
    server = RegistryServer("127.0.0.1", port)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_registry_watch_sees_instances_come_and_go() -> None:
    async with registry() as server:
        resolver = RegistryResolver(server.url, retry=FAST_RETRY)
        watcher = Watcher(resolver, "cart")
        registrar = RegistryRegistrar(server.url)
        try:
            await watcher.until(set())
            await registrar.register(instance("cart", "cart-1", 7070), ttl=5)
            (seen,) = await watcher.until({"cart-1"})
            assert seen.endpoint() == "127.0.0.1:7070" and seen.metadata["version"] == "test"
            await registrar.deregister()
            await watcher.until(set())
            assert watcher.ids() == [set(), {"cart-1"}, set()]
        finally:
            await watcher.stop()
            await resolver.close()
            await registrar.close()


async def test_registry_watch_keeps_its_set_while_the_registry_is_down_and_resumes() -> None:
    server = RegistryServer("127.0.0.1", 0)
    port = await server.start()
    url = server.url
    first, gone, late = (RegistryRegistrar(url, first_wait=WAIT) for _ in range(3))
    resolver = RegistryResolver(url, retry=FAST_RETRY, recovery_grace=4.0)
    watcher = Watcher(resolver, "cart")
    try:
        await first.register(instance("cart", "cart-1", 7071), ttl=6)
        await gone.register(instance("cart", "cart-2", 7072), ttl=6)
        await watcher.until({"cart-1", "cart-2"})
        await server.stop()
        assert gone.keepalive is not None
        await gone.keepalive.stop(deregister=False)  # cart-2 dies while the registry is down
        await asyncio.sleep(2)  # the watch fails and retries meanwhile
        assert watcher.ids()[-1] == {"cart-1", "cart-2"}, "the last set stays while the registry is down"
        # Restarted with an empty memory on the same port: cart-1's renewal registers it again,
        # cart-2 never comes back and is dropped once the grace has passed.
        server = RegistryServer("127.0.0.1", port)
        await server.start()
        await watcher.until({"cart-1"})
        await late.register(instance("cart", "cart-3", 7073), ttl=6)
        await watcher.until({"cart-1", "cart-3"})
        assert all(watcher.ids()), f"never an empty set: {watcher.ids()}"
    finally:
        await watcher.stop()
        await resolver.close()
        for registrar in (first, gone, late):
            await registrar.close()
        await server.stop()


async def test_registry_resolver_uses_the_token() -> None:
    server = RegistryServer("127.0.0.1", 0, token="s3cret")
    await server.start()
    registrar = RegistryRegistrar(server.url, token="s3cret")
    resolver = RegistryResolver(server.url, token="s3cret", retry=FAST_RETRY)
    try:
        await registrar.register(instance("ads", "ads-1", 7074), ttl=5)
        first = await asyncio.wait_for(anext(resolver.watch("ads")), WAIT)
        assert [i.id for i in first] == ["ads-1"]
    finally:
        await resolver.close()
        await registrar.close()
        await server.stop()
