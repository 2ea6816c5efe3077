"""Start `boutique up` as a real process, the way a person does, and wait until it reports ready."""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil

from boutique.run.ports import free_port

READY_LINE = "Boutique is up"
T = TypeVar("T")


@dataclass
class Up:
    """A running `boutique up` and what it printed."""

    process: subprocess.Popen[str]
    data_dir: Path
    url: str
    output: list[str] = field(default_factory=list)

    def state(self) -> dict:
        """The parsed up.json state file."""
        return json.loads((self.data_dir / "up.json").read_text())

    def descendants(self) -> list[psutil.Process]:
        """Every process started under this `up` (children, grandchildren)."""
        return psutil.Process(self.process.pid).children(recursive=True)

    def text(self) -> str:
        """Everything printed so far."""
        return "".join(self.output)

    def stop(self, timeout: float = 40.0) -> int:
        """SIGINT (what Ctrl-C sends), then wait; kills the group if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


def start_up(data_dir: Path, *extra: str, timeout: float = 120.0, env: dict[str, str] | None = None) -> Up:
    """Run `boutique up --plain --no-load` on a free frontend port; return once it says it is up."""
    port = free_port()
    command = [sys.executable, "-m", "boutique.cli", "up", "--plain", "--frontend-port", str(port)]
    command += ["--data-dir", str(data_dir), "--registry-port", str(free_port()), *extra]
    if "--no-observatory" not in extra and "--observatory-ports" not in extra:
        command += ["--observatory-ports", ",".join(str(free_port()) for _ in range(4))]
    if "--load" not in extra:
        command.append("--no-load")
    else:
        command.remove("--load")
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    up = Up(process, data_dir, f"http://127.0.0.1:{port}")
    ready = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            up.output.append(line)
            if READY_LINE in line:
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.is_set() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    if not ready.is_set():
        up.stop()
        raise AssertionError(f"boutique up did not get ready:\n{up.text()[-4000:]}")
    return up


def eventually(probe: Callable[[], T | None], what: str, timeout: float = 45.0, every: float = 0.3) -> T:
    """Poll until `probe` returns something truthy and return it; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def log_events(data_dir: Path, instance: str, event: str) -> list[dict]:
    """The JSON log entries of one process whose event is `event`, oldest first."""
    path = data_dir / "logs" / f"{instance}.log"
    entries = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("event") == event:
                entries.append(entry)
    return entries


def read_logs(data_dir: Path) -> dict[str, str]:
    """Every process log under the data directory, by file name."""
    return {path.name: path.read_text(errors="replace") for path in sorted((data_dir / "logs").glob("*.log"))}


def observatory_api(up: Up, path: str, **params: Any) -> Any:
    """GET a JSON document from the query API of the observatory of `up`."""
    answer = httpx.get(up.state()["observatory_url"] + path, params=params, timeout=20)
    answer.raise_for_status()
    return answer.json()


def checkout_form(email: str, street_address: str, card: str, cvv: str) -> dict[str, str]:
    """The frontend's checkout form for a San Francisco address and a card that expires in two years."""
    return {
        "email": email,
        "street_address": street_address,
        "zip_code": "94107",
        "city": "San Francisco",
        "state": "CA",
        "country": "United States",
        "credit_card_number": card,
        "credit_card_expiration_month": "4",
        "credit_card_expiration_year": str(datetime.date.today().year + 2),
        "credit_card_cvv": cvv,
    }
