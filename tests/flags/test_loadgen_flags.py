"""The load generator steered by flags while it runs: traffic off and on again, and another number of shoppers.

The load generator runs as `boutique up` runs it (`boutique serve loadgen`, configured by environment
variables, the flag file named by FLAGD_OFFLINE_FLAG_SOURCE_PATH) against a small HTTP shop of the
test's own that counts the requests it gets; Locust reports its shoppers in its log and its CSV history.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from boutique.flags import FlagFile
from boutique.run.ports import free_port
from boutique.shop.loadgen.control import TRAFFIC, USERS, ShopperControl, Steering, steering
from tests.e2e.harness import eventually

STARTED_USERS = 3


# ---- the rule, without Locust ---------------------------------------------------------------------------


def test_the_flags_ask_for_none_while_traffic_is_off_and_else_their_number_or_as_started() -> None:
    assert steering(1, 0) == Steering(True, 0) and Steering(True, 0).shoppers(10) == 10
    assert steering(0, 25).shoppers(10) == 0
    assert steering(1, 25).shoppers(10) == 25


def test_each_change_resizes_once_and_traffic_on_resumes_the_count_asked_for() -> None:
    sizes: list[int] = []
    control = ShopperControl(10, sizes.append)
    assert control.apply(Steering()) is None
    assert "traffic off" in (control.apply(Steering(traffic=False)) or "")
    assert control.apply(Steering(traffic=False, users=5)) is None  # still off: nobody shops
    assert "traffic on again: 5 shoppers" in (control.apply(Steering(users=5)) or "")
    assert "5 → 10" in (control.apply(Steering()) or "")
    assert sizes == [0, 5, 10]


# ---- the real load generator against a shop that counts --------------------------------------------------


class Counter:
    """Requests the small shop has answered."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def add(self) -> None:
        """Count one request."""
        with self.lock:
            self.count += 1


@pytest.fixture
def shop() -> Iterator[tuple[str, Counter]]:
    """An HTTP server answering every shopper request with 200 (and a session cookie), counting them."""
    counter = Counter()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            counter.add()
            length = int(self.headers.get("content-length") or 0)
            self.rfile.read(length)
            body = b"<html>ok</html>"
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.send_header("set-cookie", "shop_session-id=test; Path=/")
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", counter
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class LoadGenerator:
    """A running `boutique serve loadgen`, its log and its CSV prefix."""

    process: subprocess.Popen[bytes]
    log: Path
    csv_prefix: Path

    def lines(self, text: str) -> int:
        """How many log lines (JSON, as every process of the shop logs) say `text`."""
        events = [
            json.loads(line)["event"] for line in self.log.read_text(errors="replace").splitlines() if line
        ]
        return sum(text in event for event in events)

    def history_users(self) -> list[int]:
        """The user counts Locust reported in its CSV history, oldest first."""
        path = Path(f"{self.csv_prefix}_stats_history.csv")
        if not path.exists():
            return []
        with path.open() as rows:
            return [int(row["User Count"]) for row in csv.DictReader(rows) if row.get("User Count")]


@pytest.fixture
def loadgen(shop: tuple[str, Counter], tmp_path: Path) -> Iterator[tuple[LoadGenerator, FlagFile, Counter]]:
    """The load generator, started as `boutique up` starts it, with a flag file of its own."""
    url, counter = shop
    flag_file = FlagFile(tmp_path / "flags.json")
    flag_file.seed()
    log = tmp_path / "loadgen.log"
    env = {
        **os.environ,
        "FRONTEND_URL": url,
        "LOADGEN_USERS": str(STARTED_USERS),
        "LOADGEN_SPAWN_RATE": "50",
        "LOADGEN_WAIT_MIN": "0.05",
        "LOADGEN_WAIT_MAX": "0.2",
        "LOADGEN_CSV": str(tmp_path / "loadgen"),
        "FLAGD_OFFLINE_FLAG_SOURCE_PATH": str(flag_file.path),
        "BOUTIQUE_FLAGS_POLL_MS": "200",
        "BOUTIQUE_INSTANCE_ID": "loadgen-0",
        "OTEL_TRACES_EXPORTER": "none",
    }
    for variable in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        env.pop(variable, None)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "boutique.cli", "serve", "loadgen"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    generator = LoadGenerator(process, log, tmp_path / "loadgen")
    try:
        yield generator, flag_file, counter
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def grows(counter: Counter, after: int) -> int | None:
    """The request count once it is above `after` (None before)."""
    return counter.count if counter.count > after else None


def test_traffic_off_stops_every_shopper_and_on_resumes_them(
    loadgen: tuple[LoadGenerator, FlagFile, Counter],
) -> None:
    generator, flag_file, counter = loadgen
    eventually(lambda: grows(counter, 20), "the shoppers to shop", timeout=60)

    flag_file.set(TRAFFIC, "off", by="test")
    eventually(lambda: generator.lines("traffic off"), "the load generator to log traffic off", timeout=20)
    eventually(lambda: generator.lines("(0 total users)"), "Locust to report no users", timeout=20)
    time.sleep(0.5)  # a request already on its way when its shopper stopped is answered still
    quiet_from = counter.count
    time.sleep(3.0)
    print(f"\nrequests while traffic was off for 3 s: {counter.count - quiet_from}")
    assert counter.count == quiet_from, "requests arrived while traffic was off"

    flag_file.set(TRAFFIC, "on", by="test")
    eventually(
        lambda: generator.lines(f"traffic on again: {STARTED_USERS} shoppers"), "traffic on", timeout=20
    )
    eventually(lambda: grows(counter, quiet_from), "the shoppers to shop again", timeout=20)
    assert generator.process.poll() is None


def test_the_number_of_shoppers_changes_while_the_load_runs(
    loadgen: tuple[LoadGenerator, FlagFile, Counter],
) -> None:
    generator, flag_file, counter = loadgen
    eventually(lambda: generator.lines(f"({STARTED_USERS} total users)"), "the shoppers to start", timeout=60)

    flag_file.set(USERS, "5", by="test")
    eventually(
        lambda: generator.lines(f"{STARTED_USERS} → 5 shoppers"), "the change to 5 shoppers", timeout=20
    )
    eventually(lambda: generator.lines("(5 total users)"), "Locust to report 5 users", timeout=20)
    eventually(lambda: 5 in generator.history_users(), "5 users in Locust's CSV history", timeout=30)

    flag_file.reset(by="test")
    eventually(lambda: generator.lines(f"5 → {STARTED_USERS} shoppers"), "back to as started", timeout=20)
    history = generator.history_users()
    print(f"\nusers in Locust's CSV history: {sorted(set(history))}")
    assert {STARTED_USERS, 5} <= set(history)
    assert counter.count > 0 and generator.process.poll() is None
