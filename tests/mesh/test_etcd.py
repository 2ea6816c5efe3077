"""etcd discovery against a real etcd: registration round trip, lease expiry and loss, restarts, compaction."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from boutique.mesh.discovery import EtcdClient, EtcdRegistrar, EtcdResolver, RetryPolicy
from boutique.mesh.discovery.etcd import prefix_end
from boutique.mesh.instance import Instance
from tests.mesh.test_discovery import Watcher

FAST_RETRY = RetryPolicy(base=0.05, cap=0.5)
WAIT = 30.0  # generous bound on whether something happens, never on how fast


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class EtcdProcess:
    """A real single-member etcd run as a subprocess (optionally under a wrapper such as `ip netns exec`)."""

    data_dir: Path
    host: str = "127.0.0.1"
    client_port: int = 0
    peer_port: int = 0
    wrapper: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.client_port = self.client_port or free_port()
        self.peer_port = self.peer_port or free_port()

    @property
    def url(self) -> str:
        """The client URL."""
        return f"http://{self.host}:{self.client_port}"

    def command(self) -> list[str]:
        """The etcd command line."""
        peer = f"http://{self.host}:{self.peer_port}"
        return [
            *self.wrapper,
            "etcd",
            "--name=default",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.url}",
            f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
        ]

    def start(self, ready_check: bool = True) -> None:
        """Start etcd and (unless it runs somewhere this process cannot reach) wait until it answers."""
        with (self.data_dir.parent / f"{self.data_dir.name}.log").open("ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        if ready_check:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Poll the status endpoint until etcd serves (bounded)."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, "etcd exited"
            try:
                if httpx.post(f"{self.url}/v3/maintenance/status", json={}, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("etcd did not start")

    def stop(self) -> None:
        """Stop etcd (SIGTERM, then SIGKILL) and wait for it."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdProcess]:
    """One real etcd for the whole module."""
    if shutil.which("etcd") is None:
        pytest.skip("etcd not installed: apt-get install etcd-server")
    server = EtcdProcess(tmp_path_factory.mktemp("etcd") / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def instance(service: str, instance_id: str, port: int = 7070) -> Instance:
    """A test instance on loopback."""
    return Instance(
        service=service,
        id=instance_id,
        host="127.0.0.1",
        ports={"grpc": port, "metrics": port + 1},
        metadata={"pid": "1", "started_at": "2024-01-01T00:00:00+00:00", "version": "test"},
    )


@asynccontextmanager
async def watching(url: str, service: str, **options: float) -> AsyncIterator[tuple[EtcdResolver, Watcher]]:
    """A resolver on etcd and a watcher of `service` on it, closed afterwards."""
    resolver = EtcdResolver(url, retry=FAST_RETRY, **options)  # type: ignore[arg-type]
    watcher = Watcher(resolver, service)
    try:
        yield resolver, watcher
    finally:
        await watcher.stop()
        await resolver.close()


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait (bounded by WAIT) until `condition` holds; fail the test otherwise."""
    deadline = time.monotonic() + WAIT
    for _ in itertools.count():
        if condition():
            return
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.05)


def test_prefix_end_is_the_next_key_after_the_prefix() -> None:
    assert prefix_end("/boutique/services/cart/") == "L2JvdXRpcXVlL3NlcnZpY2VzL2NhcnQw"  # .../cart0


async def test_round_trip_register_watch_deregister(etcd: EtcdProcess) -> None:
    async with watching(etcd.url, "cart") as (_, watcher):
        assert await watcher.until(set()) == []
        registrar = EtcdRegistrar(etcd.url, retry=FAST_RETRY)
        await registrar.register(instance("cart", "cart-1"), ttl=5)
        (seen,) = await watcher.until({"cart-1"})
        assert seen == instance("cart", "cart-1"), "the watch returns the instance as registered"
        await registrar.deregister()
        await watcher.until(set())
        await registrar.close()
    # A new watch starts from the stored state.
    other = EtcdRegistrar(etcd.url, retry=FAST_RETRY)
    await other.register(instance("cart", "cart-2", 7072), ttl=5)
    try:
        async with watching(etcd.url, "cart") as (_, watcher):
            assert [i.id for i in await watcher.until({"cart-2"})] == ["cart-2"]
            assert [i.id for i in watcher.history[0]] == ["cart-2"], "first yield is the full current set"
    finally:
        await other.close()


REGISTER_SCRIPT = """
import asyncio, json, sys
from boutique.mesh.discovery import EtcdRegistrar
from boutique.mesh.instance import Instance

async def main() -> None:
    url, ttl, data = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3])
    registrar = EtcdRegistrar(url)
    await registrar.register(Instance.from_json(data), ttl)
    print("registered", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_instance_leaves_when_its_process_dies_and_the_lease_expires(
    etcd: EtcdProcess, tmp_path: Path
) -> None:
    script = tmp_path / "register.py"
    script.write_text(REGISTER_SCRIPT)
    registered = instance("ads", "ads-1")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        etcd.url,
        "2",
        json.dumps(registered.to_json()),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), WAIT)
        assert line.strip() == b"registered"
        async with watching(etcd.url, "ads") as (resolver, watcher):
            await watcher.until({"ads-1"})
            # Outlive the 2 s lease a few times: keepalive must have renewed it.
            await asyncio.sleep(5)
            pairs, _ = await resolver.client.range_prefix("/boutique/services/ads/")
            assert [kv.key for kv in pairs] == ["/boutique/services/ads/ads-1"], "keepalive renews the lease"
            process.kill()
            await process.wait()
            await watcher.until(set())
            assert [len(s) for s in watcher.history] == [1, 0]
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_registrar_registers_again_when_its_lease_is_lost(etcd: EtcdProcess) -> None:
    registrar = EtcdRegistrar(etcd.url, retry=FAST_RETRY)
    await registrar.register(instance("email", "email-1"), ttl=3)
    try:
        async with watching(etcd.url, "email") as (resolver, watcher):
            await watcher.until({"email-1"})
            first_lease = registrar.lease
            assert first_lease is not None
            await resolver.client.revoke(first_lease)  # as if it had expired
            await watcher.until(set())
            await watcher.until({"email-1"})
            await eventually(lambda: registrar.lease is not None)
            assert registrar.lease not in (None, first_lease), "a new lease was granted"
    finally:
        await registrar.close()


async def test_malformed_entries_are_skipped(etcd: EtcdProcess) -> None:
    client = EtcdClient([etcd.url])
    registrar = EtcdRegistrar(etcd.url, retry=FAST_RETRY)
    try:
        await client.put("/boutique/services/quote/garbage", "{not json")
        await registrar.register(instance("quote", "quote-1"), ttl=5)
        async with watching(etcd.url, "quote") as (_, watcher):
            await watcher.until({"quote-1"})
            await client.put("/boutique/services/quote/more-garbage", '{"id": "x"}')
            await registrar.deregister()
            await watcher.until(set())
            assert all(i.id == "quote-1" for s in watcher.history for i in s)
    finally:
        await client.delete("/boutique/services/quote/garbage")
        await client.delete("/boutique/services/quote/more-garbage")
        await registrar.close()
        await client.close()


async def test_watch_reads_the_range_again_after_compaction(
    etcd: EtcdProcess, caplog: pytest.LogCaptureFixture
) -> None:
    client = EtcdClient([etcd.url])
    registrar = EtcdRegistrar(etcd.url, retry=FAST_RETRY)
    caplog.set_level(logging.INFO, logger="boutique.mesh.discovery.etcd")
    try:
        # A short idle timeout makes the watch reconnect from its last revision while we compact.
        async with watching(etcd.url, "shipping", idle_timeout=0.5) as (_, watcher):
            await watcher.until(set())
            for n in range(5):
                revision = await client.put(f"/elsewhere/{n}", "x")
            await client.call("kv/compaction", {"revision": str(revision), "physical": True})
            await eventually(lambda: "compacted" in caplog.text)  # the reconnect found its revision compacted
            await registrar.register(instance("shipping", "shipping-1"), ttl=5)
            await watcher.until({"shipping-1"})
    finally:
        await registrar.close()
        await client.close()


async def test_resolver_keeps_its_set_across_an_etcd_restart(etcd: EtcdProcess) -> None:
    first = EtcdRegistrar(etcd.url, retry=FAST_RETRY)
    second = EtcdRegistrar(etcd.url, retry=FAST_RETRY)
    await first.register(instance("currency", "currency-1"), ttl=10)
    try:
        async with watching(etcd.url, "currency") as (_, watcher):
            await watcher.until({"currency-1"})
            etcd.stop()
            late = EtcdResolver(etcd.url, retry=FAST_RETRY)
            late_watch = late.watch("currency")
            late_first = asyncio.ensure_future(anext(late_watch))
            await asyncio.sleep(2)  # both resolvers fail and retry meanwhile
            assert not late_first.done(), "a resolver that never reached etcd yields nothing yet"
            assert [{i.id for i in s} for s in watcher.history] == [{"currency-1"}], "no empty set on errors"
            etcd.start()
            assert [i.id for i in await asyncio.wait_for(late_first, WAIT)] == ["currency-1"]
            await second.register(instance("currency", "currency-2", 7072), ttl=10)
            await watcher.until({"currency-1", "currency-2"})
            assert all(watcher.history), "never an empty set"
            await late.close()
            with pytest.raises(StopAsyncIteration):
                await anext(late_watch)
    finally:
        if etcd.process is None:
            etcd.start()
        await first.close()
        await second.close()


async def test_close_ends_a_watch_in_progress(etcd: EtcdProcess) -> None:
    resolver = EtcdResolver(etcd.url, retry=FAST_RETRY)
    stream = resolver.watch("nobody")
    assert await anext(stream) == []
    pending = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.2)
    await resolver.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(pending, WAIT)


async def test_client_finds_the_api_prefix_the_installed_etcd_serves(etcd: EtcdProcess) -> None:
    client = EtcdClient(["http://127.0.0.1:1", etcd.url])  # the first endpoint is down: fail over
    try:
        await client.put("/probe", "x")
        assert await client.api_prefix() == "/v3/"  # etcd 3.4 and later; 3.3 served /v3beta/
        pairs, revision = await client.range_prefix("/probe")
        assert [(kv.key, kv.value) for kv in pairs] == [("/probe", "x")] and revision >= pairs[0].mod_revision
    finally:
        await client.delete("/probe")
        await client.close()
