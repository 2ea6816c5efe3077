"""The shop as separate processes, each started on its own the way a container starts it: a registry,
an observatory, Redis and every service with its own environment, no `boutique up` supervising them.

What a container platform does when it stops everything at once is done here for real: SIGTERM to
every process in the same instant (or in an order), and the time each one takes to exit is measured.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from boutique.run.ports import free_port
from boutique.shop.services import BACKENDS

HOST = "127.0.0.1"
BOUTIQUE = [sys.executable, "-m", "boutique.cli"]


@dataclass
class Member:
    """One process of the shop: its name, its process and where its output goes."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    signalled_at: float = 0.0
    exited_at: float = 0.0

    @property
    def exit_seconds(self) -> float:
        """Seconds from its SIGTERM to its exit."""
        return self.exited_at - self.signalled_at


@dataclass
class ProcessShop:
    """Every process of one shop, started from `data_dir`; `stop` them in any order."""

    data_dir: Path
    members: dict[str, Member] = field(default_factory=dict)
    frontend_url: str = ""
    registry_url: str = ""
    observatory_ui: str = ""

    def _start(self, name: str, command: list[str], env: dict[str, str]) -> Member:
        log = self.data_dir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
                start_new_session=True,  # a signal to the test's terminal group never reaches it
            )
        member = self.members[name] = Member(name, process, log)
        return member

    def start(self, timeout: float = 120.0) -> ProcessShop:
        """Start Redis, the registry, the observatory and every service; return once the frontend serves."""
        registry_port, frontend_port = free_port(), free_port()
        ingest, ui = free_port(), free_port()
        self.registry_url = f"http://{HOST}:{registry_port}"
        self.frontend_url = f"http://{HOST}:{frontend_port}"
        self.observatory_ui = f"http://{HOST}:{ui}"
        redis_port = free_port()
        redis_dir = self.data_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        redis = shutil.which("redis-server")
        assert redis is not None
        redis_args = ["--bind", HOST, "--save", "", "--appendonly", "no", "--dir", str(redis_dir)]
        self._start("redis", [redis, "--port", str(redis_port), *redis_args], {})
        self._start("registry", [*BOUTIQUE, "registry", "--port", str(registry_port)], {})
        self._start(
            "observatory",
            [
                *BOUTIQUE, "observatory", "--data-dir", str(self.data_dir),
                "--otlp-grpc-port", str(ingest), "--otlp-http-port", str(free_port()),
                "--zipkin-port", str(free_port()), "--port", str(ui),
            ],
            {},
        )  # fmt: skip
        common = {
            "BIND_HOST": HOST,
            "BOUTIQUE_DATA_DIR": str(self.data_dir),
            "EMAIL_OUTBOX_DIR": str(self.data_dir / "outbox"),
            "BOUTIQUE_REGISTRY_URL": self.registry_url,
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{HOST}:{ingest}",
            "OBSERVATORY_URL": self.observatory_ui,
        }
        for name in [*BACKENDS, "frontend"]:
            env = {**common, "PORT": str(frontend_port if name == "frontend" else free_port())}
            if name == "cart":
                env["REDIS_ADDR"] = f"{HOST}:{redis_port}"
            self._start(name, [*BOUTIQUE, "serve", name], env)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Until every service is registered and the home page answers 200 (a dead member fails at once)."""
        wanted = {*BACKENDS, "frontend"}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [m.name for m in self.members.values() if m.process.poll() is not None]
            assert not dead, f"exited while starting: {dead}\n{self.tails(dead)}"
            try:
                services = httpx.get(f"{self.registry_url}/v1/services", timeout=2).json()["services"]
                home = httpx.get(self.frontend_url + "/", timeout=5)
            except (httpx.HTTPError, ValueError, KeyError):
                time.sleep(0.3)
                continue
            if wanted <= {name for name, found in services.items() if found} and home.status_code == 200:
                return
            time.sleep(0.3)
        raise AssertionError(
            f"the shop did not get ready in {timeout:.0f} s\n{self.tails(list(self.members))}"
        )

    def stop(self, groups: Iterable[Iterable[str]], bound: float, between: float = 0.0) -> dict[str, float]:
        """SIGTERM each group of members at one instant (the groups one after another, `between` s apart);
        wait up to `bound` s after its signal for each to exit. Seconds to exit by member; a member still
        running at its bound is left running (the caller's `kill` ends it) and is absent from the result."""
        signalled: list[Member] = []

        def note_exits(until: float) -> None:
            """Poll the signalled members until `until` or until each exited or passed its bound."""
            while True:
                now = time.monotonic()
                for member in signalled:
                    if not member.exited_at and member.process.poll() is not None:
                        member.exited_at = now
                if now >= until or all(m.exited_at or now > m.signalled_at + bound for m in signalled):
                    return
                time.sleep(0.01)

        for number, group in enumerate(groups):
            if number and between:
                note_exits(time.monotonic() + between)
            members = [self.members[name] for name in group]
            now = time.monotonic()
            for member in members:  # one instant for the group: nothing else happens in between
                member.signalled_at = now
                member.process.send_signal(signal.SIGTERM)
            signalled.extend(members)
        note_exits(float("inf"))
        return {m.name: m.exit_seconds for m in signalled if m.exited_at}

    def kill(self) -> None:
        """SIGKILL whatever of this shop still runs (its own processes only, by pid)."""
        for member in self.members.values():
            if member.process.poll() is None:
                member.process.kill()
                member.process.wait()

    def tails(self, names: Iterable[str], lines: int = 15) -> str:
        """The last lines each named member wrote."""
        parts = []
        for name in names:
            text = self.members[name].log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {name}\n" + "\n".join(line[:400] for line in text))
        return "\n".join(parts)
