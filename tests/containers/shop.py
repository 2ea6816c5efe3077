"""The shop as pods: play the `local` overlay with deploy/containers/play.py, wait until it serves, and
talk to it the way a user would (the frontend and the observatory on loopback ports, gRPC health from
inside the network)."""

from __future__ import annotations

import base64
import importlib.util
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import httpx

ROOT = Path(__file__).resolve().parents[2]
PORTS = range(18000, 19000)  # loopback ports the container tests may publish on
REDIS = ("redis:7.4-alpine", "localhost/debian-redis:bookworm")  # no registry here: Debian's Redis instead
T = TypeVar("T")

# Run inside a container of the shop: asks every target's grpc.health.v1 and prints their states as JSON.
HEALTH = """
import json, sys
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
states = {}
for target in sys.argv[1:]:
    try:
        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
            states[target] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    except grpc.RpcError as exc:
        states[target] = exc.code().name
print(json.dumps(states))
"""


def load_play() -> ModuleType:
    """deploy/containers/play.py as a module (it is a script, not part of the package)."""
    path = ROOT / "deploy" / "containers" / "play.py"
    spec = importlib.util.spec_from_file_location("boutique_play", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def free_ports(count: int) -> list[int]:
    """`count` ports of PORTS nobody listens on at 127.0.0.1 now."""
    found: list[int] = []
    for port in PORTS:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise RuntimeError(f"no {count} free ports in {PORTS}")


def eventually(probe: Callable[[], T | None], what: str, timeout: float = 180.0, pause: float = 1.0) -> T:
    """Poll until `probe` returns something; fail naming `what` (and the last error) after `timeout`."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            found = probe()
            if found is not None:
                return found
        except (httpx.HTTPError, subprocess.SubprocessError, ValueError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s {last}")
        time.sleep(pause)


@dataclass
class ContainerShop:
    """A running shop of pods: where to reach it and how to look inside."""

    plan: Any  # play.Plan
    frontend: str  # http://127.0.0.1:PORT
    observatory: str
    token: str  # the observatory's bearer token (from the overlay's Secret)
    grpc_targets: list[str]  # "service:port" of every gRPC Service
    started: float  # seconds `podman kube play` took for all pods
    ready: float  # seconds from the first play until everything answered

    def container(self, workload: str) -> str:
        """podman's name of a workload's main container."""
        return str(self.plan.unit(workload).container())

    def health(self) -> dict[str, str]:
        """Every backend's grpc.health.v1 state, asked from inside the network (the frontend's container)."""
        asked = subprocess.run(
            ["podman", "exec", self.container("frontend"), "python", "-c", HEALTH, *self.grpc_targets],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if asked.returncode != 0:
            raise ValueError(asked.stderr.strip()[-300:])
        return dict(json.loads(asked.stdout))

    def api(self, path: str, **params: Any) -> Any:
        """GET a JSON document from the observatory's query API (with its token)."""
        answer = httpx.get(
            self.observatory + path,
            params=params,
            headers={"authorization": f"Bearer {self.token}"},
            timeout=20,
        )
        answer.raise_for_status()
        return answer.json()

    def inspect(self, container: str, template: str) -> str:
        """One field of `podman inspect`."""
        done = subprocess.run(
            ["podman", "inspect", "--format", template, container], capture_output=True, text=True, timeout=60
        )
        return done.stdout.strip()


def _token(plan: Any) -> str:
    for data in plan.secrets.values():
        if "observatory-token" in data:
            return base64.b64decode(data["observatory-token"]).decode()
    raise AssertionError("the overlay has no Secret with an observatory-token")


def _grpc_targets(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(
        f"{doc['metadata']['name']}:{port['port']}"
        for doc in docs
        if doc["kind"] == "Service"
        for port in doc["spec"].get("ports", [])
        if port.get("name") == "grpc"
    )


def start_shop(play: ModuleType, prefix: str, workdir: Path) -> ContainerShop:
    """Render the `local` overlay, play it under `prefix` and wait until every part answers."""
    frontend_port, observatory_port = free_ports(2)
    docs = play.render()
    plan = play.adapt(
        docs,
        prefix,
        images=dict([REDIS]),
        publish={"frontend:8080": frontend_port, "observatory:16686": observatory_port},
    )
    print(
        f"\nplaying {len(plan.units)} pods on {plan.network}; adapted: {'; '.join(sorted(set(plan.adapted)))}"
    )
    began = time.monotonic()
    play.up(plan, workdir)
    started = time.monotonic() - began
    shop = ContainerShop(
        plan,
        f"http://127.0.0.1:{frontend_port}",
        f"http://127.0.0.1:{observatory_port}",
        _token(plan),
        _grpc_targets(docs),
        started,
        0.0,
    )
    assert shop.grpc_targets, "the overlay has no gRPC Services"

    def serving() -> dict[str, str] | None:
        states = shop.health()
        return states if set(states.values()) == {"SERVING"} else None

    eventually(serving, "every backend SERVING on grpc.health.v1")
    eventually(
        lambda: True if httpx.get(shop.frontend + "/", timeout=10).status_code == 200 else None,
        "the frontend's home page",
    )
    eventually(lambda: shop.api("/api/services"), "the observatory's API")
    shop.ready = time.monotonic() - began
    print(f"{len(plan.units)} pods played in {started:.1f} s, all ready after {shop.ready:.1f} s")
    return shop
