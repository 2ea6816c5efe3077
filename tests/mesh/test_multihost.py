"""Two hosts as network namespaces: a server on host B registers in etcd on host A; a client on A finds and calls it."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.mesh.test_etcd import WAIT, EtcdProcess

SUBNET = "10.231.0"

# A trivial generic service (google.protobuf.StringValue in and out) served by the mesh's GrpcServer on
# host B, registered in etcd through EtcdRegistrar; it deregisters and drains on SIGTERM.
SERVER_SCRIPT = """
import asyncio, signal, sys
from google.protobuf import descriptor_pb2, descriptor_pool, wrappers_pb2
from boutique.mesh import GrpcServer, ProcessInfo, ServiceBinding
from boutique.mesh.discovery import EtcdRegistrar
from boutique.mesh.instance import Instance

def echo_binding(instance_id):
    proto = descriptor_pb2.FileDescriptorProto(
        name="boutique_test_echo.proto", package="boutique.test",
        dependency=[wrappers_pb2.DESCRIPTOR.name],
    )
    method = proto.service.add(name="Echo").method.add(name="Say")
    method.input_type = method.output_type = ".google.protobuf.StringValue"
    pool = descriptor_pool.Default()
    pool.Add(proto)

    class Echo:
        async def Say(self, request, context):
            return wrappers_pb2.StringValue(value=f"{request.value} from {instance_id}")

    return ServiceBinding(pool.FindServiceByName("boutique.test.Echo"), Echo())

async def main():
    etcd_url, host, instance_id = sys.argv[1:4]
    server = GrpcServer(ProcessInfo("echo", instance_id, host=host, port=0), [echo_binding(instance_id)], grace=1.0)
    port = await server.start()
    registrar = EtcdRegistrar(etcd_url)
    await registrar.register(
        Instance("echo", instance_id, host, {"grpc": port}, {"pid": "0", "started_at": "-", "version": "test"}),
        ttl=5,
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("serving", port, flush=True)
    await stop.wait()
    await registrar.deregister()
    await server.stop()

asyncio.run(main())
"""

# On host A: discover "echo" through etcd, call it across the veth, then report when it leaves.
CLIENT_SCRIPT = """
import asyncio, json, sys
import grpc
from google.protobuf import wrappers_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from boutique.mesh.discovery import EtcdResolver, RetryPolicy

async def main():
    resolver = EtcdResolver(sys.argv[1], retry=RetryPolicy(base=0.1, cap=1.0))
    watch = resolver.watch("echo")
    async for instances in watch:
        if instances:
            break
    (instance,) = instances
    async with grpc.aio.insecure_channel(instance.endpoint()) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        say = channel.unary_unary(
            "/boutique.test.Echo/Say",
            request_serializer=wrappers_pb2.StringValue.SerializeToString,
            response_deserializer=wrappers_pb2.StringValue.FromString,
        )
        call = say(wrappers_pb2.StringValue(value="hello"), timeout=10)
        reply = await call
        served_by = dict(await call.trailing_metadata()).get("x-served-by")
    print(json.dumps({
        "instance": instance.to_json(), "health": health.status, "reply": reply.value, "served_by": served_by,
    }), flush=True)
    async for instances in watch:
        if not instances:
            print(json.dumps({"gone": True}), flush=True)
            break
    await resolver.close()

asyncio.run(main())
"""


@dataclass(frozen=True)
class Host:
    """One simulated host: a network namespace and its address on the shared link."""

    namespace: str
    address: str

    def exec(self, *command: str) -> list[str]:
        """A command line that runs `command` inside this host's namespace."""
        return ["ip", "netns", "exec", self.namespace, *command]


def ip(*args: str) -> subprocess.CompletedProcess[str]:
    """Run an iproute2 command, capturing its output."""
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


def must(result: subprocess.CompletedProcess[str]) -> None:
    """Fail the test with iproute2's own message when a setup step failed."""
    assert result.returncode == 0, f"{' '.join(map(str, result.args))}: {result.stderr.strip()}"


@pytest.fixture
def two_hosts() -> Iterator[tuple[Host, Host]]:
    """Hosts A and B: fresh namespaces joined by a veth pair; always deleted afterwards."""
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2 (`ip`)")
    suffix = uuid.uuid4().hex[:8]
    a, b = Host(f"boutique-a-{suffix}", f"{SUBNET}.1"), Host(f"boutique-b-{suffix}", f"{SUBNET}.2")
    link_a, link_b = f"bqa{suffix}", f"bqb{suffix}"
    created: list[str] = []
    try:
        for host in (a, b):
            result = ip("netns", "add", host.namespace)
            if result.returncode != 0:
                pytest.skip(f"cannot create network namespaces (needs root): {result.stderr.strip()}")
            created.append(host.namespace)
        must(ip("link", "add", link_a, "type", "veth", "peer", "name", link_b))
        for host, link in ((a, link_a), (b, link_b)):
            must(ip("link", "set", link, "netns", host.namespace))
            must(ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", link))
            must(ip("-n", host.namespace, "link", "set", link, "up"))
            must(ip("-n", host.namespace, "link", "set", "lo", "up"))
        yield a, b
    finally:
        ip("link", "del", link_a)  # only exists here if moving it into a namespace failed
        for namespace in created:
            ip("netns", "del", namespace)


async def read_line(process: asyncio.subprocess.Process, what: str) -> bytes:
    """The next stdout line of a helper, failing with its stderr when it ended instead."""
    assert process.stdout is not None and process.stderr is not None
    line = await asyncio.wait_for(process.stdout.readline(), WAIT)
    if not line:
        error = (await process.stderr.read()).decode(errors="replace")[-2000:]
        raise AssertionError(f"{what} ended without output:\n{error}")
    return line


async def test_client_on_host_a_discovers_and_calls_a_server_on_host_b_through_etcd(
    two_hosts: tuple[Host, Host], tmp_path: Path
) -> None:
    if shutil.which("etcd") is None:
        pytest.skip("etcd not installed: apt-get install etcd-server")
    a, b = two_hosts
    (tmp_path / "server.py").write_text(SERVER_SCRIPT)
    (tmp_path / "client.py").write_text(CLIENT_SCRIPT)
    etcd = EtcdProcess(tmp_path / "etcd", host=a.address, client_port=2379, peer_port=2380, wrapper=a.exec())
    etcd.start(ready_check=False)  # reachable only from inside host A: the helpers retry until it serves
    helpers: list[asyncio.subprocess.Process] = []
    try:

        async def spawn(host: Host, script: str, *args: str) -> asyncio.subprocess.Process:
            """Run a helper script with this interpreter inside a host's namespace."""
            process = await asyncio.create_subprocess_exec(
                *host.exec(sys.executable, str(tmp_path / script), *args),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            helpers.append(process)
            return process

        server = await spawn(b, "server.py", etcd.url, b.address, "echo-b")
        assert (await read_line(server, "the server on host B")).startswith(b"serving")
        client = await spawn(a, "client.py", etcd.url)
        found = json.loads(await read_line(client, "the client on host A"))
        assert found["instance"]["id"] == "echo-b" and found["instance"]["address"] == b.address
        assert found["health"] == 1, "SERVING"
        assert found["reply"] == "hello from echo-b" and found["served_by"] == "echo-b"

        server.terminate()  # deregisters on SIGTERM
        assert json.loads(await read_line(client, "the client on host A")) == {"gone": True}
        assert await asyncio.wait_for(server.wait(), WAIT) == 0
        assert await asyncio.wait_for(client.wait(), WAIT) == 0
    finally:
        for process in helpers:
            if process.returncode is None:
                process.kill()
                await process.wait()
        etcd.stop()
