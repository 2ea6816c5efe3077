"""The cart against a real redis-server that restarts, freezes, drops a reply or runs short of connections."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path

import grpc
import pytest
from redis.asyncio import Redis

from boutique.mesh.deadline import deadline_in
from boutique.shop.cart.client import CartClient
from boutique.shop.cart.redis_link import DEFAULT_MAX_CONNECTIONS, max_connections_from_env
from boutique.shop.cart.server import bindings
from boutique.shop.cart.store import RedisCartStore, store_from_env
from boutique.shop.errors import InvalidArgument, Unavailable
from tests.shop.test_cart import CART_SERVICE, RedisProcess, lines
from tests.support import serving

LINK_LOGGER = "boutique.shop.cart.redis_link"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed: apt-get install redis-server")
    server = RedisProcess(tmp_path / "redis")
    server.directory.mkdir()
    server.start()
    yield server
    if server.process is not None and server.process.poll() is None:
        os.kill(server.process.pid, signal.SIGCONT)  # a test that failed while Redis was stopped
    server.stop()


def kill_and_restart(server: RedisProcess, after: float) -> float:
    """kill -9 redis-server, start it again on the same port and directory `after` s later; the outage in s."""
    assert server.process is not None
    started = time.monotonic()
    server.process.kill()
    server.process.wait()
    server.process = None
    time.sleep(after)
    server.start()
    return time.monotonic() - started


async def timed(call: Awaitable[object]) -> float:
    """Await `call` and return how long it took."""
    started = time.monotonic()
    await call
    return time.monotonic() - started


def messages(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == LINK_LOGGER and record.message == event]


async def test_cart_calls_ride_out_a_redis_restart(
    redis_server: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LINK_LOGGER)
    store = RedisCartStore("127.0.0.1", redis_server.port)
    async with serving("cart", bindings(store)) as endpoints:
        cart = CartClient(endpoints)  # a 3 s deadline, as the frontend gives
        await cart.add_item("ivy", "OLJCESPC7Z", 2)
        await cart.add_item("kim", "66VCHSJNUP", 1)

        restart = asyncio.create_task(asyncio.to_thread(kill_and_restart, redis_server, 0.5))
        await asyncio.sleep(0.05)  # the kill has happened: every call below meets a dead Redis
        assert redis_server.process is None
        durations = await asyncio.gather(
            timed(cart.add_item("ivy", "OLJCESPC7Z", 1)),
            timed(cart.add_item("jack", "9SIQT8TOJO", 3)),
            timed(cart.get_cart("kim")),
            timed(cart.empty_cart("kim")),
        )
        outage = await restart

        assert lines(await cart.get_cart("ivy")) == {"OLJCESPC7Z": 3}
        assert lines(await cart.get_cart("jack")) == {"9SIQT8TOJO": 3}
        assert await cart.get_cart("kim") == []
        await cart.close()
    await store.close()
    assert messages(caplog, "cart store answered after retrying"), "no call had to retry: no fault was met"
    print(
        f"redis down {outage:.2f} s; calls made during it took {', '.join(f'{d:.2f}' for d in durations)} s"
    )


async def test_a_frozen_redis_is_unavailable_before_the_callers_deadline(redis_server: RedisProcess) -> None:
    store = RedisCartStore("127.0.0.1", redis_server.port)
    assert redis_server.process is not None
    async with serving("cart", bindings(store)) as endpoints:
        cart = CartClient(endpoints, timeout=1.0)
        await cart.add_item("lena", "L9ECAV7KIM", 1)
        os.kill(redis_server.process.pid, signal.SIGSTOP)
        try:
            async with grpc.aio.insecure_channel(endpoints.addresses[0]) as channel:
                raw = channel.unary_unary(f"/{CART_SERVICE}/GetCart")
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await raw(b"\x0a\x04lena", timeout=1.0)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # not DEADLINE_EXCEEDED
            assert f"cart store (redis {redis_server.address}) unavailable: no answer within" in str(
                info.value.details()
            )
            # Redis, not this cart, failed: callers neither retry another replica nor count it against this one.
            assert ("x-failed-dependency", "redis") in tuple(info.value.trailing_metadata() or ())
            with pytest.raises(Unavailable, match="cart store"):
                await cart.add_item("lena", "L9ECAV7KIM", 1)
        finally:
            os.kill(redis_server.process.pid, signal.SIGCONT)
        # Replies to the abandoned commands arrive on closed connections and never reach a new call.
        quantity = lines(await cart.get_cart("lena"))["L9ECAV7KIM"]
        assert quantity in (1, 2)  # the add cut short by its deadline may or may not have been applied
        await cart.add_item("lena", "2ZYFJ3GM2N", 1)
        assert lines(await cart.get_cart("lena")) == {"L9ECAV7KIM": quantity, "2ZYFJ3GM2N": 1}
        await cart.close()
    await store.close()


async def test_more_concurrent_calls_than_connections_wait_for_one(redis_server: RedisProcess) -> None:
    store = RedisCartStore("127.0.0.1", redis_server.port, max_connections=2)
    assert redis_server.process is not None
    users = [f"crowd-{n}" for n in range(60)]

    async def add(n: int, user: str) -> int:
        with deadline_in(3.0):  # what a served call has
            return await store.add(user, "OLJCESPC7Z", 1 + n % 10, 99, f"add-{n}")

    async def get(user: str) -> dict[str, int]:
        with deadline_in(3.0):
            return await store.get(user)

    # Redis stands still for half a second: both connections hang on a reply, every other call queues.
    os.kill(redis_server.process.pid, signal.SIGSTOP)
    try:
        crowd = asyncio.gather(
            *(add(n, user) for n, user in enumerate(users)), *(get(user) for user in users)
        )
        await asyncio.sleep(0.5)
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    totals = (await crowd)[: len(users)]
    assert totals == [1 + n % 10 for n in range(len(users))]
    for n, user in enumerate(users):
        assert await get(user) == {"OLJCESPC7Z": 1 + n % 10}
    probe = Redis(host="127.0.0.1", port=redis_server.port)
    clients = (await probe.info("clients"))["connected_clients"]
    await probe.aclose()
    await store.close()
    assert clients <= 2 + 1  # the pool's two, and this probe
    print(f"120 concurrent calls over a pool of 2: all answered; Redis saw {clients - 1} cart connections")


class ReplyDropper:
    """A TCP proxy in front of Redis; once armed it lets the next EVALSHA through, then swallows its reply
    and cuts that connection, as when a network or a Redis failover loses an answer after the write."""

    def __init__(self, redis_port: int) -> None:
        self.redis_port = redis_port
        self.armed = False
        self.dropped: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        redis_reader, redis_writer = await asyncio.open_connection("127.0.0.1", self.redis_port)
        doomed = asyncio.Event()

        async def upstream() -> None:
            while chunk := await client_reader.read(65536):
                if self.armed and b"EVALSHA" in chunk:
                    self.armed = False
                    doomed.set()
                redis_writer.write(chunk)
                await redis_writer.drain()

        async def downstream() -> None:
            while chunk := await redis_reader.read(65536):
                if doomed.is_set():
                    self.dropped.append(chunk)
                    return
                client_writer.write(chunk)
                await client_writer.drain()

        pumps = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
        for writer in (client_writer, redis_writer):
            writer.close()


@pytest.fixture
async def dropper(redis_server: RedisProcess) -> AsyncIterator[ReplyDropper]:
    proxy = ReplyDropper(redis_server.port)
    await proxy.start()
    yield proxy
    await proxy.close()


async def test_an_add_whose_reply_is_lost_is_applied_once(
    dropper: ReplyDropper, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LINK_LOGGER)
    store = RedisCartStore("127.0.0.1", dropper.port)
    async with serving("cart", bindings(store)) as endpoints:
        cart = CartClient(endpoints)
        await cart.add_item("mona", "1YMWWN1N4O", 2)  # Redis has the script from here on

        dropper.armed = True
        await cart.add_item("mona", "1YMWWN1N4O", 3)  # applied, answer lost, sent again, answered

        assert len(dropper.dropped) == 1 and dropper.dropped[0].startswith(b":5"), dropper.dropped
        assert lines(await cart.get_cart("mona")) == {"1YMWWN1N4O": 5}
        await cart.close()
    await store.close()
    assert messages(caplog, "cart store answered after retrying")


async def test_a_repeated_add_id_adds_once_and_cannot_name_another_add(redis_server: RedisProcess) -> None:
    store = RedisCartStore("127.0.0.1", redis_server.port)
    async with serving("cart", bindings(store)) as endpoints:
        cart = CartClient(endpoints)
        for _ in range(3):
            await cart.add_item("nora", "0PUK6V6EV0", 4, add_id="add-1")
        await cart.add_item("otto", "0PUK6V6EV0", 4, add_id="add-1")  # ids are per user
        assert lines(await cart.get_cart("nora")) == {"0PUK6V6EV0": 4}
        assert lines(await cart.get_cart("otto")) == {"0PUK6V6EV0": 4}
        with pytest.raises(InvalidArgument, match="add id 'add-1' was already used for another add"):
            await cart.add_item("nora", "0PUK6V6EV0", 5, add_id="add-1")
        with pytest.raises(InvalidArgument, match="add id must be 1 to 128 printable ASCII"):
            await cart.add_item("nora", "0PUK6V6EV0", 1, add_id="x" * 129)
        assert lines(await cart.get_cart("nora")) == {"0PUK6V6EV0": 4}
        await cart.close()
    await store.close()


def test_redis_max_connections_sizes_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_MAX_CONNECTIONS", raising=False)
    assert max_connections_from_env() == DEFAULT_MAX_CONNECTIONS == 64
    monkeypatch.setenv("REDIS_MAX_CONNECTIONS", "8")
    monkeypatch.setenv("REDIS_ADDR", "127.0.0.1:6399")
    store = store_from_env()
    assert isinstance(store, RedisCartStore) and store.link.max_connections == 8
    for bad in ("0", "-3", "many", "2.5"):
        monkeypatch.setenv("REDIS_MAX_CONNECTIONS", bad)
        with pytest.raises(ValueError, match="REDIS_MAX_CONNECTIONS"):
            max_connections_from_env()
