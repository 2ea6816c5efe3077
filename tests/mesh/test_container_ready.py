"""What a process does in a container: where it says it is reached (never 0.0.0.0), /metrics open to the
network while /mesh/* keep their token, logs on stdout, dependencies that do not resolve yet retried and
logged once, and a stop that stays within its budget whatever is gone already."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import grpc
import httpx
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from boutique.mesh import GrpcServer, Mesh, MeshSettings, ProcessInfo, SettingsError
from boutique.mesh.advertise import advertised_host
from boutique.mesh.discovery import DnsResolver, RetryPolicy
from boutique.mesh.discovery.base import Trouble
from boutique.mesh.logs import log_stream
from boutique.mesh.presence import Presence
from boutique.mesh.registry import RegistryServer
from boutique.mesh.registry.client import RegistryClient
from boutique.mesh.status import StatusServer
from boutique.mesh.stopping import StopClock
from boutique.run.ports import free_port
from boutique.shop.productcatalog.server import bindings
from boutique.shop.proto import demo_pb2 as pb
from boutique.shop.proto import demo_pb2_grpc
from tests.support import ManualClock

# ---- the advertised address ---------------------------------------------------------------------------


def machine_addresses() -> set[str]:
    """Every IPv4 address of this machine's interfaces."""
    return {
        a.address for found in psutil.net_if_addrs().values() for a in found if a.family == socket.AF_INET
    }


def test_the_advertised_address_follows_its_variables_in_order() -> None:
    def advertised(**environ: str) -> str:
        settings = MeshSettings.from_env(environ).process
        return ProcessInfo.from_settings("cart", settings).advertise_host

    assert advertised() == "127.0.0.1"  # one machine: loopback, as before
    assert advertised(BIND_HOST="10.9.8.7") == "10.9.8.7"  # a bind address others can call is the one
    assert advertised(BIND_HOST="0.0.0.0", POD_IP="10.1.0.7") == "10.1.0.7"
    both = {"BIND_HOST": "0.0.0.0", "POD_IP": "10.1.0.7", "BOUTIQUE_ADVERTISE_HOST": "cart-0.cartservice"}
    assert advertised(**both) == "cart-0.cartservice"
    assert advertised(BOUTIQUE_ADVERTISE_HOST="[fd00::7]") == "fd00::7"
    derived = advertised(BIND_HOST="0.0.0.0")
    assert derived not in ("0.0.0.0", ""), "a wildcard is never what others are told"
    assert derived in machine_addresses() | {"127.0.0.1"}, derived


def test_a_wildcard_bind_advertises_the_hostname_address_then_an_interface_address() -> None:
    def derive(bind: str, names: list[str], interfaces: list[str]) -> str:
        return advertised_host(bind, "", lambda: "pod-7", lambda name: names, lambda: interfaces)

    assert derive("0.0.0.0", ["10.4.0.9"], ["192.0.2.1"]) == "10.4.0.9"
    # a host name that resolves to loopback only (/etc/hosts of many machines): the first interface address
    assert derive("0.0.0.0", ["127.0.1.1"], ["127.0.0.1", "fe80::1", "192.0.2.1", "10.0.0.2"]) == "192.0.2.1"
    assert derive("", [], ["169.254.3.3", "10.0.0.2"]) == "10.0.0.2"  # link-local is skipped
    assert derive("::", ["127.0.0.1"], ["::1", "fd00::5", "10.0.0.2"]) == "fd00::5"
    assert derive("::", [], ["10.0.0.2"]) == "10.0.0.2"  # a socket on :: takes IPv4 too
    assert derive("0.0.0.0", [], ["127.0.0.1"]) == "127.0.0.1"  # nothing else: loopback, never 0.0.0.0
    assert derive("127.0.0.1", ["10.4.0.9"], ["192.0.2.1"]) == "127.0.0.1"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("BOUTIQUE_ADVERTISE_HOST", "0.0.0.0"),
        ("BOUTIQUE_ADVERTISE_HOST", "::"),
        ("BOUTIQUE_ADVERTISE_HOST", "http://cart:7070"),
        ("BOUTIQUE_ADVERTISE_HOST", "cart:7070"),
        ("POD_IP", "cart-0"),
        ("POD_IP", "0.0.0.0"),
        ("BIND_HOST", "every interface"),
        ("BOUTIQUE_STOP_TIMEOUT", "0s"),
    ],
)
def test_a_bad_address_is_a_settings_error_naming_its_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=rf"^{variable} must .*{value!r}"):
        MeshSettings.from_env({variable: value})


def test_serve_refuses_a_bad_pod_ip_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "boutique.cli", "serve", "currency"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "POD_IP": "not-an-ip", "PORT": "0", "BOUTIQUE_METRICS": "off"},
    )
    assert done.returncode == 2
    assert done.stderr.startswith("boutique serve currency: POD_IP must be an IP address"), done.stderr
    assert "Traceback" not in done.stderr


async def test_a_server_on_every_interface_registers_its_advertised_address(registry: RegistryServer) -> None:
    settings = MeshSettings.from_env({"BIND_HOST": "0.0.0.0", "BOUTIQUE_REGISTRY_URL": registry.url})
    info = ProcessInfo.from_settings("productcatalog", settings.process)
    mesh = Mesh("productcatalog", settings)
    server = GrpcServer(info, bindings(), mesh=mesh, register=True, settings=settings, grace=0.5)
    await server.presence.start_status()
    port = await server.start()
    await server.presence.announce({"grpc": port})
    try:
        async with RegistryClient(registry.url) as client:
            (instance,) = (await client.services())["productcatalog"]
        assert instance.host == info.advertise_host != "0.0.0.0"
        # what discovery hands callers answers: gRPC health and /metrics at the advertised address
        async with grpc.aio.insecure_channel(instance.endpoint("grpc")) as channel:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        async with httpx.AsyncClient(timeout=10) as http:
            metrics = await http.get(f"http://{instance.endpoint('metrics')}/metrics")
        assert metrics.status_code == 200 and "boutique_mesh" in metrics.text
    finally:
        await server.stop()
        await server.presence.close()


# ---- /metrics and /healthz open to the network, /mesh/* behind the token ------------------------------


@asynccontextmanager
async def status_on_every_interface(token: str | None) -> AsyncIterator[str]:
    """A status server bound to 0.0.0.0 on a free port, reached at this machine's network address."""
    server = StatusServer(Mesh("status-test"), "0.0.0.0", free_port(), token=token)
    port = await server.start()
    try:
        yield f"http://{advertised_host('0.0.0.0')}:{port}"
    finally:
        await server.stop()


@pytest.fixture
async def open_status() -> AsyncIterator[str]:
    """Off loopback, no BOUTIQUE_STATUS_TOKEN."""
    async with status_on_every_interface(None) as base:
        yield base


@pytest.fixture
async def guarded_status() -> AsyncIterator[str]:
    """Off loopback, BOUTIQUE_STATUS_TOKEN set to 's3cret'."""
    async with status_on_every_interface("s3cret") as base:
        yield base


async def test_off_loopback_metrics_and_health_answer_without_a_token(open_status: str) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        metrics = await client.get(f"{open_status}/metrics")
        health = await client.get(f"{open_status}/healthz")
    assert metrics.status_code == 200 and "# TYPE" in metrics.text
    assert health.status_code == 200 and health.text == "ok"


async def test_off_loopback_without_a_token_the_mesh_routes_refuse_naming_the_variable(
    open_status: str,
) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        for path in ("/mesh/status", "/mesh/stream"):
            refused = await client.get(open_status + path, headers={"authorization": "Bearer guess"})
            assert refused.status_code == 403, path
            assert "BOUTIQUE_STATUS_TOKEN" in refused.json()["error"], path


async def test_off_loopback_the_mesh_routes_need_the_token_and_metrics_do_not(guarded_status: str) -> None:
    right = {"authorization": "Bearer s3cret"}
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(f"{guarded_status}/metrics")).status_code == 200
        assert (await client.get(f"{guarded_status}/healthz")).status_code == 200
        for path in ("/mesh/status", "/mesh/stream"):
            assert (await client.get(guarded_status + path)).status_code == 401, path
            wrong = {"authorization": "Bearer not-it"}
            assert (await client.get(guarded_status + path, headers=wrong)).status_code == 401, path
        status = await client.get(f"{guarded_status}/mesh/status", headers=right)
        assert status.status_code == 200 and status.json()["caller"] == "status-test"
        async with client.stream("GET", f"{guarded_status}/mesh/stream", headers=right) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")


# ---- logs: stdout in a container ---------------------------------------------------------------------


def test_logs_go_to_stdout_in_a_container_and_stderr_elsewhere() -> None:
    def nothing(path: str) -> bool:
        return False

    assert log_stream({}, nothing) == "stderr"
    assert log_stream({}, lambda path: path == "/run/.containerenv") == "stdout"  # podman
    assert log_stream({}, lambda path: path == "/.dockerenv") == "stdout"  # Docker
    assert log_stream({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, nothing) == "stdout"
    assert log_stream({"BOUTIQUE_LOG_STREAM": "stderr", "KUBERNETES_SERVICE_HOST": "10.96.0.1"}, nothing) == (
        "stderr"
    )
    assert log_stream({"BOUTIQUE_LOG_STREAM": " STDOUT "}, nothing) == "stdout"
    with pytest.raises(SettingsError, match="BOUTIQUE_LOG_STREAM must be stdout or stderr, got 'journal'"):
        log_stream({"BOUTIQUE_LOG_STREAM": "journal"}, nothing)


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_a_process_writes_its_json_lines_where_the_variable_says(stream: str) -> None:
    code = (
        "import logging\n"
        "from boutique.mesh import configure_logging\n"
        "configure_logging('cart', 'cart-0')\n"
        "logging.getLogger('test').warning('hello', extra={'n': 1})\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "BOUTIQUE_LOG_STREAM": stream},
    )
    assert done.returncode == 0, done.stderr
    chosen, other = (done.stdout, done.stderr) if stream == "stdout" else (done.stderr, done.stdout)
    entry = json.loads(chosen.strip().splitlines()[-1])
    assert (entry["event"], entry["service"], entry["n"]) == ("hello", "cart", 1)
    assert "hello" not in other


def test_a_bad_log_stream_stops_a_command_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "boutique.cli", "registry", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "BOUTIQUE_LOG_STREAM": "journal"},
    )
    assert done.returncode == 2
    assert done.stderr == "boutique registry: BOUTIQUE_LOG_STREAM must be stdout or stderr, got 'journal'\n"


# ---- dependencies that do not resolve yet: retried, logged once -------------------------------------


async def test_a_name_that_does_not_resolve_is_retried_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="boutique.mesh.discovery.dns")
    resolver = DnsResolver("no-such-service.invalid", 7070, interval=0.05, retry=RetryPolicy(0.01, 0.02))
    stream = resolver.watch("cart")
    pending = asyncio.ensure_future(anext(stream))

    def failures() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage().startswith("dns lookup failed")]

    deadline = time.monotonic() + 30
    while len(failures()) < 4:
        assert time.monotonic() < deadline, "the lookup was not retried"
        await asyncio.sleep(0.05)
    await resolver.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(pending, 10)  # no empty set was ever published
    levels = [r.levelno for r in failures()]
    assert levels[0] == logging.WARNING and set(levels[1:]) == {logging.DEBUG}, levels


def test_trouble_warns_once_per_problem_and_once_when_it_is_over(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.trouble")
    caplog.set_level(logging.DEBUG, logger="test.trouble")
    trouble = Trouble(log, "backend failed", backend="etcd")
    for error in ("no such host", "no such host", "connection refused", "connection refused"):
        trouble.failed(error)
    trouble.recovered("backend answers again")
    trouble.recovered("backend answers again")  # nothing failed since: nothing to say
    seen = [(r.levelname, r.getMessage(), getattr(r, "error", None)) for r in caplog.records]
    assert seen == [
        ("WARNING", "backend failed", "no such host"),
        ("DEBUG", "backend failed", "no such host"),
        ("WARNING", "backend failed", "connection refused"),
        ("DEBUG", "backend failed", "connection refused"),
        ("INFO", "backend answers again", None),
    ]
    assert caplog.records[-1].failures == 4  # type: ignore[attr-defined]


PLACE_ORDER = pb.PlaceOrderRequest(
    user_id="u-1",
    user_currency="USD",
    email="someone@example.com",
    address=pb.Address(
        street_address="1 Main St", city="Springfield", state="IL", country="US", zip_code=62701
    ),
    credit_card=pb.CreditCardInfo(
        credit_card_number="4432801561520454",
        credit_card_cvv=672,
        credit_card_expiration_year=2039,
        credit_card_expiration_month=1,
    ),
)


def test_a_service_whose_dependencies_do_not_resolve_keeps_serving() -> None:
    """checkout in a pod started before its dependencies' Services exist: it serves (health SERVING), its
    calls fail with UNAVAILABLE, the lookups go on, and each name's failure is a warning once."""
    port = free_port()
    environ = {
        **os.environ,
        "BIND_HOST": "0.0.0.0",
        "PORT": str(port),
        "METRICS_PORT": str(free_port()),
        "BOUTIQUE_DISCOVERY": "dns",
        "BOUTIQUE_DNS_PORT": "7000",
        "BOUTIQUE_DNS_SUFFIX": ".invalid",  # a name that never resolves, for every dependency
        "OTEL_SDK_DISABLED": "true",
        "BOUTIQUE_LOG_STREAM": "stderr",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "boutique.cli", "serve", "checkout"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=60, wait_for_ready=True)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
            checkout = demo_pb2_grpc.CheckoutServiceStub(channel)
            for _ in range(2):
                with pytest.raises(grpc.RpcError) as refused:
                    checkout.PlaceOrder(PLACE_ORDER, timeout=20)
                assert refused.value.code() is grpc.StatusCode.UNAVAILABLE, refused.value.details()
            time.sleep(2)  # more lookups fail meanwhile
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        assert process.poll() is None, "names that do not resolve do not end the process"
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=30)
    assert process.returncode == 0, errors[-2000:]
    failed = [json.loads(line) for line in errors.splitlines() if '"dns lookup failed' in line]
    assert failed, errors[-2000:]
    said: dict[str, list[str]] = {}
    for entry in failed:
        said.setdefault(entry["dns_name"], []).append(entry["error"])
    assert "cart.invalid" in said, said
    repeated = {name: errors for name, errors in said.items() if len(errors) != len(set(errors))}
    assert not repeated, f"the same problem warned more than once: {repeated}"


# ---- the stop budget ---------------------------------------------------------------------------------


def test_the_stop_clock_hands_out_what_is_left_keeping_back_what_later_steps_need() -> None:
    now = ManualClock(100.0)
    clock = StopClock(4.0, now)
    assert clock.left() == 4.0 and not clock.started
    clock.start()
    clock.start(9.0)  # a second signal grants nothing more
    assert clock.budget == 4.0
    assert clock.allow(1.0, keep=1.5) == 1.0
    now.now += 2.0
    assert clock.allow(5.0, keep=1.5) == pytest.approx(0.5)
    now.now += 1.0
    assert clock.allow(5.0, keep=1.5) == 0.0 and clock.left() == pytest.approx(1.0)
    now.now += 5.0
    assert clock.left() == 0.0


@contextmanager
def registry_process() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`boutique registry` on a free loopback port, as its own process (stopped and killed afterwards)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "boutique.cli", "registry", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "the registry did not start"
            time.sleep(0.1)
        yield process, url
    finally:
        process.send_signal(signal.SIGCONT)
        process.kill()
        process.wait()


async def test_leaving_a_registry_that_no_longer_answers_gives_up_at_its_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The registry takes connections but never answers (stopped, like a container that is going away):
    deregistering waits for it no longer than its share of the stop, and says so."""
    with registry_process() as (registry, url):
        settings = MeshSettings.from_env({"BOUTIQUE_REGISTRY_URL": url})
        presence = Presence(ProcessInfo("cart", "cart-0", port=1), register=True, settings=settings)
        await presence.announce({"grpc": 1})
        async with RegistryClient(url) as client:
            assert [i.id for i in (await client.services())["cart"]] == ["cart-0"]
        registry.send_signal(signal.SIGSTOP)
        await asyncio.wait_for(presence.withdraw(within=0.3), 10)
        assert presence.registrar is None
    unanswered = [r for r in caplog.records if r.getMessage().startswith("deregistration unanswered")]
    assert unanswered and unanswered[0].waited_seconds == 0.3  # type: ignore[attr-defined]
