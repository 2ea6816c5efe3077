"""`boutique load` as a real process against a small recording HTTP server standing in for the shop."""

from __future__ import annotations

import csv
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psutil
import pytest

from boutique.shop.loadgen import runner

CATALOG_IDS = {
    "OLJCESPC7Z",
    "66VCHSJNUP",
    "1YMWWN1N4O",
    "L9ECAV7KIM",
    "2ZYFJ3GM2N",
    "0PUK6V6EV0",
    "LS4PSXUNUM",
    "9SIQT8TOJO",
    "6E92ZMYYFZ",
}
CURRENCIES = {"EUR", "USD", "JPY", "CAD", "GBP", "TRY"}
CHECKOUT_FIELDS = {
    "email",
    "street_address",
    "zip_code",
    "city",
    "state",
    "country",
    "credit_card_number",
    "credit_card_expiration_month",
    "credit_card_expiration_year",
    "credit_card_cvv",
}
STATS_HEADER = re.compile(r"^Type\s+Name\s+# reqs\s+# fails\s+\|", re.MULTILINE)
PROCESS_TIMEOUT = 90.0


@dataclass(frozen=True)
class Seen:
    """One request the stand-in shop received."""

    method: str
    path: str
    form: dict[str, str]

    @property
    def route(self) -> tuple[str, str]:
        """Method and route template, product ids folded into /product/[id]."""
        path = "/product/[id]" if self.path.startswith("/product/") else self.path
        return self.method, path


class StandInShop:
    """A threaded HTTP server that answers like the frontend would and records every request."""

    def __init__(self, failing: frozenset[tuple[str, str]] = frozenset()) -> None:
        self.requests: list[Seen] = []
        self.failing = failing
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        shop = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the test reads the record, not the log."""

            def do_GET(self) -> None:
                self._answer({})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                self._answer({k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()})

            def _answer(self, form: dict[str, str]) -> None:
                seen = Seen(self.command, urlsplit(self.path).path, form)
                with shop._lock:
                    shop.requests.append(seen)
                if seen.route in shop.failing:
                    self._send(500, b"boom")
                elif seen.route == ("POST", "/cart"):
                    self._send(302, b"", location="/cart")
                elif seen.route == ("POST", "/setCurrency"):
                    self._send(302, b"", location=self.headers.get("Referer") or "/")
                else:
                    self._send(200, b"<html><body>ok</body></html>")

            def _send(self, status: int, body: bytes, location: str | None = None) -> None:
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Set-Cookie", "shop_session-id=test-session; Path=/")
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def seen(self) -> list[Seen]:
        """A copy of the requests received so far."""
        with self._lock:
            return list(self.requests)

    def __enter__(self) -> StandInShop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def shop() -> Iterator[StandInShop]:
    with StandInShop() as server:
        yield server


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any load generator settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOADGEN_") and k != "FRONTEND_URL"}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def boutique(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `boutique ARGS` to the end and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "boutique.cli", *args],
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
    )


def luhn_ok(number: str) -> bool:
    """The Luhn checksum of a card number (digits only)."""
    digits = [int(d) for d in reversed(number)]
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(digits))
    return total % 10 == 0


def stats_rows(prefix: Path) -> dict[tuple[str, str], int]:
    """Request counts per (method, name) from Locust's CSV stats file."""
    with Path(f"{prefix}_stats.csv").open(newline="") as handle:
        return {(row["Type"], row["Name"]): int(row["Request Count"]) for row in csv.DictReader(handle)}


def test_a_timed_run_drives_the_whole_task_mix(shop: StandInShop, tmp_path: Path) -> None:
    prefix = tmp_path / "stats"
    result = boutique(
        "load",
        "--url",
        shop.url,
        "--users",
        "5",
        "--spawn-rate",
        "5",
        "--duration",
        "8s",
        "--wait",
        "0-0.2",
        "--csv",
        str(prefix),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output

    seen = shop.seen()
    routes = Counter(request.route for request in seen)
    expected = {
        ("GET", "/"),
        ("POST", "/setCurrency"),
        ("GET", "/product/[id]"),
        ("POST", "/cart"),
        ("GET", "/cart"),
        ("POST", "/cart/checkout"),
    }
    assert set(routes) == expected
    browse = routes[("GET", "/product/[id]")]
    assert all(browse > count for route, count in routes.items() if route != ("GET", "/product/[id]"))

    assert {
        r.path.removeprefix("/product/") for r in seen if r.route == ("GET", "/product/[id]")
    } <= CATALOG_IDS
    adds = [r.form for r in seen if r.route == ("POST", "/cart")]
    assert all(f["product_id"] in CATALOG_IDS and 1 <= int(f["quantity"]) <= 10 for f in adds)
    currencies = {r.form["currency_code"] for r in seen if r.route == ("POST", "/setCurrency")}
    assert currencies and currencies <= CURRENCIES

    orders = [r.form for r in seen if r.route == ("POST", "/cart/checkout")]
    this_year = datetime.date.today().year
    for form in orders:
        assert set(form) == CHECKOUT_FIELDS
        assert form["email"] == "someone@example.com"
        assert all(form[name].strip() for name in ("street_address", "city", "state", "country"))
        assert form["zip_code"].isdigit()
        card = form["credit_card_number"].replace("-", "")
        assert card.isdigit() and len(card) == 16 and card.startswith("4") and luhn_ok(card)
        assert 1 <= int(form["credit_card_expiration_month"]) <= 12
        assert int(form["credit_card_expiration_year"]) > this_year
        assert form["credit_card_cvv"] == "672"

    counts = stats_rows(prefix)
    names = {
        ("GET", "/"),
        ("POST", "/setCurrency"),
        ("GET", "/product/[id]"),
        ("POST", "/cart"),
        ("GET", "/cart"),
        ("POST", "/cart/checkout"),
        ("", "Aggregated"),
    }
    assert set(counts) == names
    assert all(count > 0 for count in counts.values())
    # Redirects followed after POST /cart and /setCurrency reach the server but count under the POST.
    assert counts[("GET", "/product/[id]")] <= browse
    assert counts[("GET", "/product/[id]")] == max(v for k, v in counts.items() if k[1] != "Aggregated")
    assert counts[("", "Aggregated")] == sum(v for k, v in counts.items() if k[1] != "Aggregated")

    assert len(STATS_HEADER.findall(output)) >= 2, "no live stats table before the final summary"


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_a_running_load_cleanly(
    shop: StandInShop, tmp_path: Path, stop: signal.Signals
) -> None:
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "boutique.cli",
                "load",
                *("--url", shop.url, "--users", "3", "--wait", "0-0.2"),
            ],
            env=clean_env(),
            stdout=stdout,
            stderr=stderr,
        )
        try:
            deadline = time.monotonic() + PROCESS_TIMEOUT
            while not (shop.seen() and STATS_HEADER.search(err.read_text())):
                assert process.poll() is None, err.read_text()
                assert time.monotonic() < deadline, "load generator never started"
                time.sleep(0.1)
            locust = psutil.Process(process.pid).children()
            process.send_signal(stop)
            code = process.wait(timeout=PROCESS_TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
    errors = err.read_text()
    assert code == 0, errors
    assert "Traceback" not in errors
    assert "Shutting down (exit code 0)" in errors
    assert locust and not any(child.is_running() for child in locust)


def test_bad_options_are_usage_errors() -> None:
    bad_url = boutique("load", "--url", "localhost:8080", "--duration", "1s")
    assert bad_url.returncode == 2
    assert "--url" in bad_url.stderr and "not an http(s) URL" in bad_url.stderr
    assert "Traceback" not in bad_url.stderr
    for option, value, message in [
        ("--url", "http://127.0.0.1:99999", "not a number from 1 to 65535"),
        ("--users", "0", "at least 1"),
        ("--spawn-rate", "fast", "spawn rate"),
        ("--duration", "ten minutes", "not a duration"),
        ("--wait", "5-1", "MIN <= MAX"),
    ]:
        result = boutique("load", option, value)
        assert result.returncode == 2, (option, value)
        assert option in result.stderr and message in result.stderr, result.stderr


def test_serve_loadgen_reads_the_environment_and_keeps_locusts_exit_code(tmp_path: Path) -> None:
    with StandInShop(failing=frozenset({("GET", "/")})) as shop:
        env = clean_env(
            FRONTEND_URL=shop.url,
            LOADGEN_USERS="2",
            LOADGEN_SPAWN_RATE="2",
            LOADGEN_DURATION="6s",
            LOADGEN_WAIT_MIN="0",
            LOADGEN_WAIT_MAX="0.2",
            LOADGEN_CSV=str(tmp_path / "loadgen"),
        )
        result = boutique("serve", "loadgen", env=env)
    # Locust's rule: 1 when any request failed (here every GET / answered 500).
    assert result.returncode == 1, result.stderr
    counts = stats_rows(tmp_path / "loadgen")
    assert counts[("GET", "/")] >= 2 and counts[("", "Aggregated")] > counts[("GET", "/")]
    # Its log is JSON lines like every other process's: Locust's lines, and figures instead of the table.
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]
    assert {entry["service"] for entry in entries} == {"loadgen"}
    assert any("total users" in entry["event"] for entry in entries)  # Locust's own line, as JSON
    (totals,) = [entry for entry in entries if entry["event"] == "load finished"]
    assert totals["requests"] >= counts[("", "Aggregated")] and totals["failures"] >= counts[("GET", "/")]
    assert [entry for entry in entries if entry["event"] == "load"], "a `load` line every few seconds"

    bad = boutique("serve", "loadgen", env=clean_env(FRONTEND_URL="ftp://shop", LOADGEN_DURATION="1s"))
    assert bad.returncode == 2
    assert "FRONTEND_URL" in bad.stderr and "Traceback" not in bad.stderr
    bad = boutique("serve", "loadgen", env=clean_env(LOADGEN_USERS="many"))
    assert bad.returncode == 2 and "LOADGEN_USERS" in bad.stderr


def test_option_parsers() -> None:
    assert runner.parse_url(" http://127.0.0.1:8080/ ") == "http://127.0.0.1:8080"
    assert runner.parse_run_time("90") == 90
    assert runner.parse_run_time("1h30m") == 5400
    assert runner.parse_run_time("5m") == 300
    assert runner.parse_wait("0-0.2") == (0.0, 0.2)
    for parse, text in [
        (runner.parse_url, "http://"),
        (runner.parse_run_time, "0s"),
        (runner.parse_run_time, "1.5s"),
        (runner.parse_wait, "-1-2"),
        (runner.parse_wait, "3"),
        (runner.parse_spawn_rate, "0"),
        (runner.parse_users, "2.5"),
    ]:
        with pytest.raises(ValueError):
            parse(text)
    settings = runner.LoadSettings(url="http://shop:80", users=4, spawn_rate=0.5, duration=30, quiet=True)
    command = runner.locust_command(settings)
    assert command[command.index("--host") + 1] == "http://shop:80"
    assert command[command.index("--run-time") + 1] == "30s"
    assert "--headless" in command and "--only-summary" in command
