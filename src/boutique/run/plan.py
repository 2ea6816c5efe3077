"""What `boutique up` will start: one entry per process, with its port, environment and command."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from boutique.mesh import StaticEndpoints
from boutique.run.chaos import LOG_FILE as CHAOS_LOG
from boutique.run.ports import free_port
from boutique.shop.services import BACKENDS, SERVICES

MAX_REPLICAS = 16
HOST = "127.0.0.1"


@dataclass
class ProcessPlan:
    """One process to run: which service, which replica, where it listens, how to start it."""

    service: str
    index: int
    kind: str
    port: int
    env: dict[str, str] = field(default_factory=dict)

    @property
    def instance(self) -> str:
        """Instance id, unique within this `up`: service-index."""
        return f"{self.service}-{self.index}"

    @property
    def address(self) -> str:
        """host:port it listens on (empty for the load generator)."""
        return f"{HOST}:{self.port}" if self.port else ""

    data_dir: str = ""
    metrics_port: int = 0
    extra_ports: tuple[int, ...] = ()
    # Its ports were picked free here and callers find it through the registry, so when something
    # else takes one before it binds, a restart may pick again (never for a port the user chose).
    movable: bool = False

    def move_taken_ports(self, taken: Callable[[int], bool], pick: Callable[[], int]) -> list[int]:
        """Replace the service and metrics ports `taken` reports busy; the ports given up."""
        if not self.movable:
            return []
        given_up = []
        if self.port and taken(self.port):
            given_up.append(self.port)
            self.port = pick()
            self.env["PORT"] = str(self.port)
        if self.metrics_port and taken(self.metrics_port):
            given_up.append(self.metrics_port)
            self.metrics_port = pick()
            self.env["METRICS_PORT"] = str(self.metrics_port)
        return given_up

    @property
    def argv(self) -> list[str]:
        """The command line: this Python running `boutique serve <service>` (or the registry, or Redis)."""
        if self.kind == "redis":
            return [
                "redis-server", "--port", str(self.port), "--bind", HOST, "--dir", self.data_dir,
                "--appendonly", "yes", "--save", "", "--protected-mode", "yes",
            ]  # fmt: skip
        if self.kind == "registry":
            return [sys.executable, "-m", "boutique.cli", "registry", "--port", str(self.port)]
        if self.kind == "observatory":
            grpc_port, http_port, zipkin_port = self.extra_ports
            return [
                sys.executable, "-m", "boutique.cli", "observatory", "--port", str(self.port),
                "--otlp-grpc-port", str(grpc_port), "--otlp-http-port", str(http_port),
                "--zipkin-port", str(zipkin_port), "--data-dir", self.data_dir,
                "--chaos-log", str(Path(self.data_dir) / CHAOS_LOG),
            ]  # fmt: skip
        return [sys.executable, "-m", "boutique.cli", "serve", self.service]


@dataclass(frozen=True)
class UpOptions:
    """The choices of `boutique up` that shape the plan."""

    data_dir: Path
    frontend_port: int = 8080
    replicas: dict[str, int] = field(default_factory=dict)
    load: bool = True
    users: int = 10
    spawn_rate: float = 1.0
    discovery: str = "registry"
    registry_port: int = 7600
    redis: bool = False
    observatory_ports: tuple[int, int, int, int] | None = (4317, 4318, 9411, 16686)
    # Backends the user pinned with their *_SERVICE_ADDR variable (service -> address): every process
    # is handed that address, whatever the discovery mode, and `up` starts none of their own.
    external: dict[str, str] = field(default_factory=dict)
    # The flag file every process evaluates (None: the user pointed them at a flagd server instead).
    flag_file: Path | None = None

    @property
    def observatory_url(self) -> str | None:
        """Where the observatory's UI and query API listen, when it runs."""
        return f"http://{HOST}:{self.observatory_ports[3]}" if self.observatory_ports else None

    @property
    def registry_url(self) -> str | None:
        """Where the registry listens, when discovery goes through it."""
        return f"http://{HOST}:{self.registry_port}" if self.discovery == "registry" else None


def parse_observatory_ports(text: str) -> tuple[int, int, int, int]:
    """Parse 'GRPC,HTTP,ZIPKIN,UI' port numbers; ValueError says what is wrong."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 4 or not all(p.isdigit() and 1 <= int(p) <= 65535 for p in parts):
        raise ValueError(f"--observatory-ports: expected four ports GRPC,HTTP,ZIPKIN,UI, got {text!r}")
    ports = tuple(int(p) for p in parts)
    if len(set(ports)) != 4:
        raise ValueError(f"--observatory-ports: the four ports must differ, got {text!r}")
    return ports  # type: ignore[return-value]


def parse_replicas(text: str) -> dict[str, int]:
    """Parse 'cart=3,currency=2' into counts; ValueError names the bad entry."""
    counts: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, number = part.partition("=")
        if not sep or not number.strip().isdigit():
            raise ValueError(f"--replicas: expected service=count, got {part!r}")
        name, count = name.strip(), int(number)
        if name not in SERVICES or SERVICES[name].kind == "load":
            raise ValueError(f"--replicas: no service named {name!r} (choose from {', '.join(_scalable())})")
        if not 1 <= count <= MAX_REPLICAS:
            raise ValueError(f"--replicas: {name}={count} is outside 1..{MAX_REPLICAS}")
        counts[name] = count
    return counts


def external_services(environ: Mapping[str, str]) -> dict[str, str]:
    """Backends whose *_SERVICE_ADDR the user set (service -> address); ValueError names a malformed one."""
    external: dict[str, str] = {}
    for name in BACKENDS:
        variable = SERVICES[name].address_variable
        value = environ.get(variable, "").strip() if variable else ""
        if variable and value:
            try:
                StaticEndpoints.parse(value)
            except ValueError as exc:
                raise ValueError(f"{variable}={value!r}: {exc}") from None
            external[name] = value
    return external


def check_replicas_against_external(replicas: dict[str, int], external: dict[str, str]) -> None:
    """ValueError when --replicas asks for instances of a service the user pinned elsewhere."""
    for name in replicas:
        if name in external:
            variable = SERVICES[name].address_variable
            raise ValueError(
                f"--replicas {name}={replicas[name]}: {variable} is set, so `up` starts no {name} "
                f"of its own (unset {variable} to run its replicas)"
            )


def _scalable() -> list[str]:
    return [name for name, spec in SERVICES.items() if spec.kind != "load"]


def telemetry_env(options: UpOptions, load: bool = False) -> dict[str, str]:
    """Where every process sends its spans: the observatory `up` starts, else the user's OTEL_* settings.

    With no observatory and no OTLP endpoint of the user's, export is off rather than retrying a port
    nothing listens on.
    """
    if options.observatory_ports and options.observatory_url:
        # Spans a process could not deliver before it stopped (the observatory away) wait on disk for
        # the next process of the same instance.
        spool = {"BOUTIQUE_EXPORT_SPOOL_DIR": str(options.data_dir / "spool")}
        if load:  # Locust runs under gevent, where OTLP over HTTP is the exporter that fits
            return {
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{HOST}:{options.observatory_ports[1]}",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                **spool,
            }
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{HOST}:{options.observatory_ports[0]}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OBSERVATORY_URL": options.observatory_url,
            **spool,
        }
    if any(os.environ.get(v) for v in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return {}
    return {"OTEL_TRACES_EXPORTER": os.environ.get("OTEL_TRACES_EXPORTER", "none")}


def build_plan(options: UpOptions) -> list[ProcessPlan]:
    """Every process in start order: backends, frontend replicas, then the load generator.

    A backend in `options.external` gets no process; every process is handed the user's address for it.
    """
    plans: list[ProcessPlan] = []
    taken = {options.frontend_port, options.registry_port, *(options.observatory_ports or ())}

    def fresh_port() -> int:
        """A free port not handed out yet in this plan (the kernel may offer one twice)."""
        while (port := free_port(HOST)) in taken:
            pass
        taken.add(port)
        return port

    if options.registry_url:
        plans.append(ProcessPlan("registry", 0, "registry", options.registry_port))
    if options.observatory_ports:
        *ingest, ui = options.observatory_ports
        plans.append(
            ProcessPlan(
                "observatory", 0, "observatory", ui, data_dir=str(options.data_dir), extra_ports=tuple(ingest)
            )
        )
    if options.redis and "cart" not in options.external:
        redis_dir = options.data_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        plans.append(ProcessPlan("redis", 0, "redis", fresh_port(), data_dir=str(redis_dir)))
    for name in [*BACKENDS, "frontend"]:
        if name in options.external:  # every caller is handed the user's address: nothing would call ours
            continue
        for index in range(options.replicas.get(name, 1)):
            chosen = name == "frontend" and index == 0
            port = options.frontend_port if chosen else fresh_port()
            plan = ProcessPlan(name, index, SERVICES[name].kind, port, metrics_port=fresh_port())
            plan.movable = not chosen and options.discovery == "registry"
            plans.append(plan)
    if options.load:
        plans.append(ProcessPlan("loadgen", 0, "load", 0))

    addresses = {
        SERVICES[name].address_variable: options.external.get(name)
        or ",".join(p.address for p in plans if p.service == name)
        for name in BACKENDS
        if options.discovery == "static" or name in options.external
    }
    outbox = options.data_dir / "outbox"
    for plan in plans:
        plan.env = {
            **{k: v for k, v in addresses.items() if k},
            "PORT": str(plan.port),
            "BIND_HOST": HOST,
            "BOUTIQUE_INSTANCE_ID": plan.instance,
            "BOUTIQUE_DATA_DIR": str(options.data_dir),
            "EMAIL_OUTBOX_DIR": str(outbox),
            "PYTHONUNBUFFERED": "1",
            "BOUTIQUE_DISCOVERY": options.discovery,
            "METRICS_PORT": str(plan.metrics_port),
        }
        if options.registry_url:
            plan.env["BOUTIQUE_REGISTRY_URL"] = options.registry_url
        if options.flag_file:
            plan.env["FLAGD_OFFLINE_FLAG_SOURCE_PATH"] = str(options.flag_file)
        plan.env |= telemetry_env(options, load=plan.kind == "load")
        if options.redis and plan.service == "cart":
            plan.env["REDIS_ADDR"] = next(p.address for p in plans if p.kind == "redis")
        if plan.kind == "load":
            plan.env |= {
                "FRONTEND_URL": f"http://{HOST}:{options.frontend_port}",
                "LOADGEN_USERS": str(options.users),
                "LOADGEN_SPAWN_RATE": str(options.spawn_rate),
                "LOADGEN_CSV": str(options.data_dir / "loadgen"),
            }
    return plans
