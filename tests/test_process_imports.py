"""Each process imports what it runs, and no more: the command line, a served service, the HTTP clients.

Start-up is mostly imports, paid by every process `boutique up` starts. These tests look at the modules
real processes end up with (a `boutique serve` reaching SERVING and registering, the command line with
--help), so a change that brings back one of the needless imports fails here rather than in a benchmark.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import boutique
from boutique.http_tls import verify_for
from boutique.mesh.registry.client import RegistryClient
from boutique.run.ports import free_port

SRC = Path(boutique.__file__).parent
# Never needed by the command line itself: each command imports these when it runs.
HEAVY = ("grpc", "google.protobuf", "boutique.mesh", "boutique.observatory", "httpx", "opentelemetry")
HEAVY += ("uvicorn", "starlette", "rich", "jinja2", "redis", "numpy", "duckdb", "locust")
# Never needed by a backend service: HTTPX's command-line client (click comes with uvicorn, alas), trio
# (httpcore imports it when installed), WebSocket support, Redis without REDIS_ADDR, the other commands.
NEEDLESS = (
    "httpx._main",
    "pygments",
    "rich",
    "trio",
    "websockets",
    "wsproto",
    "uvicorn.protocols.websockets",
)
NEEDLESS += ("redis", "opentelemetry.instrumentation.redis", "boutique.observatory", "boutique.run.up")
NEEDLESS += ("boutique.run.supervisor", "boutique.shop.loadgen.locustfile", "locust")
DUMP_ON_SIGNAL = """
import json, os, runpy, signal, sys

path, service = sys.argv[1:3]

def dump(signum, frame):
    with open(path + ".partial", "w") as out:
        json.dump(sorted(name for name, module in sys.modules.items() if module is not None), out)
    os.replace(path + ".partial", path)

signal.signal(signal.SIGUSR1, dump)
sys.argv = ["boutique", "serve", service]
runpy.run_module("boutique.cli", run_name="__main__", alter_sys=True)
"""


def loaded(names: list[str], prefixes: tuple[str, ...]) -> list[str]:
    """The modules among `names` that are one of `prefixes` or inside one of them."""
    return sorted(n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes))


def modules_after(code: str) -> list[str]:
    """The modules a fresh interpreter holds after running `code` (which may print to stdout)."""
    dump = (
        "import json, sys; print(json.dumps(sorted(n for n, m in sys.modules.items() if m)), file=sys.stderr)"
    )
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\n{dump}"], capture_output=True, text=True, timeout=60, check=True
    )
    return list(json.loads(done.stderr.strip().splitlines()[-1]))


def test_importing_the_command_line_imports_no_mesh_and_no_grpc() -> None:
    names = modules_after("import boutique.cli")
    print(f"import boutique.cli: {len(names)} modules")
    assert loaded(names, HEAVY) == []


def test_help_imports_no_mesh_and_no_grpc() -> None:
    code = (
        "import contextlib\nfrom boutique.cli import main\n"
        "with contextlib.suppress(SystemExit):\n    main(['--help'])\n"
        "with contextlib.suppress(SystemExit):\n    main(['up', '--help'])\n"
    )
    names = modules_after(code)
    print(f"boutique --help and up --help: {len(names)} modules")
    assert loaded(names, HEAVY) == []
    assert "boutique.cli" in names  # the help did come from the command line


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `boutique registry` on a free port; its URL."""
    port = free_port()
    log = (tmp_path_factory.mktemp("registry") / "registry.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "boutique.cli", "registry", "--port", str(port)], stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/v1/health", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def serving(port: int) -> bool:
    """Whether the gRPC server on the port answers its health check with SERVING."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def registered(registry: str, service: str) -> bool:
    """Whether an instance of the service is in the registry."""
    services = httpx.get(f"{registry}/v1/services", timeout=2).json()["services"]
    return bool(services.get(service))


def serve_and_list_modules(service: str, registry: str, directory: Path) -> list[str]:
    """Run `boutique serve <service>` as `up` does, until SERVING and registered; the modules it holds."""
    port, out = free_port(), directory / f"{service}.modules.json"
    flags = directory / "flags.json"
    shutil.copy(SRC / "flags" / "default.flagd.json", flags)
    env = {
        **{k: v for k, v in os.environ.items() if k != "REDIS_ADDR"},
        "PORT": str(port),
        "METRICS_PORT": str(free_port()),
        "BIND_HOST": "127.0.0.1",
        "BOUTIQUE_INSTANCE_ID": f"{service}-0",
        "BOUTIQUE_DATA_DIR": str(directory),
        "EMAIL_OUTBOX_DIR": str(directory / "outbox"),
        "BOUTIQUE_DISCOVERY": "registry",
        "BOUTIQUE_REGISTRY_URL": registry,
        "FLAGD_OFFLINE_FLAG_SOURCE_PATH": str(flags),
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # nobody there: spans wait
    }
    log = (directory / f"{service}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", DUMP_ON_SIGNAL, str(out), service], env=env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 90
        while not (serving(port) and registered(registry, service)):
            assert process.poll() is None, (directory / f"{service}.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"{service} did not serve and register in time"
            time.sleep(0.1)
        process.send_signal(signal.SIGUSR1)
        while not out.exists():
            assert time.monotonic() < deadline, f"{service} did not list its modules"
            time.sleep(0.05)
        return list(json.loads(out.read_text()))
    finally:
        process.terminate()
        process.wait(30)
        log.close()


@pytest.mark.parametrize("service", ["cart", "checkout", "email", "ad"])
def test_a_served_service_holds_none_of_the_needless_modules(
    service: str, registry: str, tmp_path: Path
) -> None:
    names = serve_and_list_modules(service, registry, tmp_path)
    print(f"boutique serve {service}: {len(names)} modules once SERVING and registered")
    assert {"grpc", "httpx", "boutique.mesh.server", "boutique.mesh.registry.client"} <= set(names)
    assert loaded(names, NEEDLESS) == []
    # the frontend renders pages with Jinja2; a backend does not, and the email service only per mail
    assert loaded(names, ("jinja2",)) == []


def test_plain_http_clients_load_no_ca_bundle_and_https_ones_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[object] = []
    original = ssl.SSLContext.load_verify_locations

    def counted(context: ssl.SSLContext, *args: object, **kwargs: object) -> None:
        loads.append(args or kwargs)
        original(context, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counted)
    RegistryClient("http://127.0.0.1:7600")
    assert loads == []
    RegistryClient("https://registry.example:7600")
    assert len(loads) == 1  # certificates checked against the CA bundle, as httpx does by default


def test_verify_is_off_only_when_every_url_is_plain_http() -> None:
    assert verify_for("http://127.0.0.1:7600") is False
    assert verify_for("http://a:2379", "HTTP://b:2379") is False
    assert verify_for("http://a:2379", "https://b:2379") is True
    assert verify_for("https://registry:7600") is True
    assert verify_for("registry:7600") is True  # no scheme: nothing known, checks stay on
    assert verify_for() is True


def environment_reads_at_import(source: str) -> list[int]:
    """Lines where `source` reads os.environ / os.getenv when the module is imported: at module level,
    in class bodies, in default values and decorators (function bodies run later, and may)."""
    found: list[int] = []

    def reads(node: ast.AST) -> None:
        for inner in ast.walk(node):
            name = inner.attr if isinstance(inner, ast.Attribute) else getattr(inner, "id", None)
            if isinstance(inner, ast.Attribute | ast.Name) and name in ("environ", "getenv"):
                found.append(inner.lineno)

    def statements(body: list[ast.stmt]) -> None:
        for statement in body:
            if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
                arguments = statement.args
                for node in [*arguments.defaults, *arguments.kw_defaults, *statement.decorator_list]:
                    if node is not None:
                        reads(node)
            elif isinstance(statement, ast.ClassDef):
                for node in [*statement.bases, *statement.keywords, *statement.decorator_list]:
                    reads(node)
                statements(statement.body)
            else:
                reads(statement)

    statements(ast.parse(source).body)
    return found


def test_the_import_time_scan_finds_each_kind_of_read() -> None:
    source = (
        "import os\nfrom os import environ, getenv\n"
        "A = os.environ.get('A')\n"
        "def f(b=os.getenv('B')): return os.environ['F']\n"
        "class C:\n    c = environ.get('C')\n    def m(self): return getenv('M')\n"
        "if getenv('D'):\n    pass\n"
    )
    assert environment_reads_at_import(source) == [3, 4, 6, 8]


def test_no_module_of_ours_reads_the_environment_when_it_is_imported() -> None:
    """A module imported once and used by many (a fork server's children, tests) must read the settings of
    the process it runs in, when it runs: never values frozen by whichever process imported it first."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if not path.name.endswith("_pb2.py") and not path.name.endswith("_pb2_grpc.py"):
            offenders += [
                f"{path.relative_to(SRC)}:{line}" for line in environment_reads_at_import(path.read_text())
            ]
    assert offenders == []
