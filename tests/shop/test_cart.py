"""Cart over real gRPC, in memory and in a real redis-server: adds, limits, restarts, Redis outages."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from boutique.mesh import StaticEndpoints
from boutique.shop.cart.client import CartClient
from boutique.shop.cart.server import bindings
from boutique.shop.cart.store import MemoryCartStore, RedisCartStore, parse_redis_address, store_from_env
from boutique.shop.errors import InvalidArgument, Unavailable
from tests.support import serving

STARTUP_LIMIT_SECONDS = 30.0
CART_SERVICE = "hipstershop.CartService"


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def redis_answers(port: int) -> bool:
    """True when a Redis on the port answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisProcess:
    """A real redis-server on a free port with append-only persistence in a test directory."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start redis-server and wait until it answers."""
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                "--save", "",
                "--appendonly", "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + STARTUP_LIMIT_SECONDS
        while not redis_answers(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM redis-server (it flushes the append-only file) and wait for it."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=STARTUP_LIMIT_SECONDS)
        self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed: apt-get install redis-server")
    server = RedisProcess(tmp_path / "redis")
    server.directory.mkdir()
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["memory", "redis"])
async def cart(request: pytest.FixtureRequest) -> AsyncIterator[CartClient]:
    """A cart client against a cart server on each kind of store."""
    if request.param == "redis":
        redis: RedisProcess = request.getfixturevalue("redis_server")
        store: MemoryCartStore | RedisCartStore = RedisCartStore(*parse_redis_address(redis.address))
    else:
        store = MemoryCartStore()
    async with serving("cart", bindings(store)) as endpoints:
        client = CartClient(endpoints)
        yield client
        await client.close()
    await store.close()


def lines(items: list) -> dict[str, int]:
    return {item.product_id: item.quantity for item in items}


async def test_add_item_accumulates_and_empty_cart_empties(cart: CartClient) -> None:
    await cart.add_item("alice", "OLJCESPC7Z", 2)
    await cart.add_item("alice", "66VCHSJNUP", 1)
    await cart.add_item("alice", "OLJCESPC7Z", 3)
    await cart.add_item("bob", "OLJCESPC7Z", 10)
    assert lines(await cart.get_cart("alice")) == {"OLJCESPC7Z": 5, "66VCHSJNUP": 1}
    assert lines(await cart.get_cart("bob")) == {"OLJCESPC7Z": 10}
    await cart.empty_cart("alice")
    assert await cart.get_cart("alice") == []
    assert lines(await cart.get_cart("bob")) == {"OLJCESPC7Z": 10}
    await cart.empty_cart("alice")  # emptying an empty cart is fine


async def test_unknown_user_has_an_empty_cart(cart: CartClient) -> None:
    assert await cart.get_cart("nobody-ever") == []


async def test_every_field_is_validated(cart: CartClient) -> None:
    with pytest.raises(InvalidArgument, match="user_id is empty"):
        await cart.add_item("", "OLJCESPC7Z", 1)
    with pytest.raises(InvalidArgument, match="user_id longer than 128"):
        await cart.add_item("u" * 129, "OLJCESPC7Z", 1)
    with pytest.raises(InvalidArgument, match="product_id is empty"):
        await cart.add_item("carol", "", 1)
    with pytest.raises(InvalidArgument, match="product_id longer than 64"):
        await cart.add_item("carol", "P" * 65, 1)
    for quantity in (0, -1, 11, 2**31 - 1):
        with pytest.raises(InvalidArgument, match=f"quantity {quantity} out of range"):
            await cart.add_item("carol", "OLJCESPC7Z", quantity)
    with pytest.raises(InvalidArgument, match="user_id"):
        await cart.get_cart("")
    with pytest.raises(InvalidArgument, match="user_id"):
        await cart.empty_cart("x" * 129)
    assert await cart.get_cart("carol") == []
    # The limits themselves are accepted.
    await cart.add_item("u" * 128, "P" * 64, 1)
    await cart.add_item("u" * 128, "P" * 64, 10)
    assert lines(await cart.get_cart("u" * 128)) == {"P" * 64: 11}


async def test_a_line_is_capped_at_99(cart: CartClient) -> None:
    for _ in range(9):
        await cart.add_item("dave", "9SIQT8TOJO", 10)
    await cart.add_item("dave", "9SIQT8TOJO", 9)
    with pytest.raises(InvalidArgument, match="exceed 99"):
        await cart.add_item("dave", "9SIQT8TOJO", 1)
    assert lines(await cart.get_cart("dave")) == {"9SIQT8TOJO": 99}
    await cart.add_item("dave", "6E92ZMYYFZ", 1)  # other lines are not affected
    assert lines(await cart.get_cart("dave")) == {"9SIQT8TOJO": 99, "6E92ZMYYFZ": 1}


async def test_malformed_protobuf_is_invalid_argument_and_server_survives(cart: CartClient) -> None:
    address = cart.endpoints.addresses[0]
    async with grpc.aio.insecure_channel(address) as channel:
        raw = channel.unary_unary(f"/{CART_SERVICE}/AddItem")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw(b"\x0a\xff\xff\xff\xff\xff", timeout=2)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await cart.add_item("erin", "OLJCESPC7Z", 1)
    assert lines(await cart.get_cart("erin")) == {"OLJCESPC7Z": 1}


def test_redis_addr_selects_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_ADDR", raising=False)
    assert isinstance(store_from_env(), MemoryCartStore)
    monkeypatch.setenv("REDIS_ADDR", "127.0.0.1:6399")
    assert isinstance(store_from_env(), RedisCartStore)
    for bad in ("localhost", ":6379", "redis:port", "redis:70000"):
        monkeypatch.setenv("REDIS_ADDR", bad)
        with pytest.raises(ValueError, match="REDIS_ADDR"):
            store_from_env()


async def test_cart_survives_a_cart_server_restart_with_redis(
    redis_server: RedisProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_ADDR", redis_server.address)
    first_store = store_from_env()
    async with serving("cart", bindings(first_store)) as endpoints:
        client = CartClient(endpoints)
        await client.add_item("frank", "L9ECAV7KIM", 2)
        await client.add_item("frank", "L9ECAV7KIM", 1)
        await client.add_item("frank", "2ZYFJ3GM2N", 4)
        await client.close()
    await first_store.close()

    second_store = store_from_env()
    assert second_store is not first_store
    async with serving("cart", bindings(second_store)) as endpoints:
        client = CartClient(endpoints)
        assert lines(await client.get_cart("frank")) == {"L9ECAV7KIM": 3, "2ZYFJ3GM2N": 4}
        await client.add_item("frank", "L9ECAV7KIM", 1)
        assert lines(await client.get_cart("frank")) == {"L9ECAV7KIM": 4, "2ZYFJ3GM2N": 4}
        await client.close()
    await second_store.close()


async def health_status(address: str, service: str = CART_SERVICE) -> int:
    """The gRPC health status the server at `address` reports for the cart service."""
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2
        )
        return int(reply.status)


async def test_redis_down_is_unavailable_naming_redis_and_the_server_keeps_serving(
    redis_server: RedisProcess,
) -> None:
    store = RedisCartStore(*parse_redis_address(redis_server.address))
    async with serving("cart", bindings(store)) as endpoints:
        cart = CartClient(endpoints, timeout=1.0)  # the cart retries Redis until this deadline nears
        address = endpoints.addresses[0]
        await cart.add_item("gina", "1YMWWN1N4O", 1)

        await asyncio.to_thread(redis_server.stop)
        down = f"cart store \\(redis {redis_server.address}\\) unavailable: .*(refused|connect)"
        with pytest.raises(Unavailable, match=down):
            await cart.add_item("gina", "1YMWWN1N4O", 1)
        with pytest.raises(Unavailable, match=down):
            await cart.get_cart("gina")
        with pytest.raises(Unavailable, match=down):
            await cart.empty_cart("gina")
        async with grpc.aio.insecure_channel(address) as channel:
            raw = channel.unary_unary(f"/{CART_SERVICE}/GetCart")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await raw(b"\x0a\x04gina", timeout=1)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert f"redis {redis_server.address}" in (info.value.details() or "")
        assert await health_status(address) == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(InvalidArgument):  # validation still answers without Redis
            await cart.add_item("gina", "", 1)

        await asyncio.to_thread(redis_server.start)  # same port and directory: the data is back
        assert lines(await cart.get_cart("gina")) == {"1YMWWN1N4O": 1}
        await cart.add_item("gina", "1YMWWN1N4O", 1)
        assert lines(await cart.get_cart("gina")) == {"1YMWWN1N4O": 2}
        await cart.close()
    await store.close()


class CartProcess:
    """`boutique serve cart` run as its own OS process, the way an operator starts it."""

    def __init__(self, port: int, redis_address: str, log_path: Path) -> None:
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.env = {
            **os.environ,
            "PORT": str(port),
            "BIND_HOST": "127.0.0.1",
            "REDIS_ADDR": redis_address,
            "BOUTIQUE_INSTANCE_ID": "cart-process-test",
        }
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start the process and wait until its health check says SERVING."""
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "boutique.cli", "serve", "cart",
                env=self.env, stdout=log, stderr=log,
            )  # fmt: skip
        deadline = time.monotonic() + STARTUP_LIMIT_SECONDS
        while True:
            if self.process.returncode is not None:
                pytest.fail(
                    f"cart process exited with {self.process.returncode}; log:\n{self.log_path.read_text()}"
                )
            try:
                if await health_status(self.address) == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                await self.stop()
                pytest.fail(f"cart process not SERVING in time; log:\n{self.log_path.read_text()}")
            await asyncio.sleep(0.1)

    async def stop(self) -> int:
        """SIGTERM and wait for a graceful exit; returns the exit status."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), STARTUP_LIMIT_SECONDS)
        except TimeoutError:
            self.process.kill()
            return await self.process.wait()


async def test_cart_command_restarted_as_a_process_keeps_the_cart(
    redis_server: RedisProcess, tmp_path: Path
) -> None:
    cart_process = CartProcess(free_port(), redis_server.address, tmp_path / "cart.log")
    await cart_process.start()
    client = CartClient(StaticEndpoints((cart_process.address,)))
    try:
        await client.add_item("hana", "0PUK6V6EV0", 2)
        await client.add_item("hana", "LS4PSXUNUM", 5)
        await client.add_item("hana", "0PUK6V6EV0", 1)
        assert await cart_process.stop() == 0

        await cart_process.start()
        assert lines(await client.get_cart("hana")) == {"0PUK6V6EV0": 3, "LS4PSXUNUM": 5}
        assert await cart_process.stop() == 0
    finally:
        await client.close()
        if cart_process.process is not None and cart_process.process.returncode is None:
            await cart_process.stop()
