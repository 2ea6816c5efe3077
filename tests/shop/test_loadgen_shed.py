"""`boutique load` against a stand-in shop that sheds: shed answers get rows of their own, not failures."""

from __future__ import annotations

import csv
import itertools
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from boutique.shop.loadgen.shed import retry_after

PROCESS_TIMEOUT = 90.0


class SheddingShop:
    """Answers like an overloaded frontend: every home page and every third product page is shed."""

    def __init__(self) -> None:
        self.counter = itertools.count()
        self.shed = 0
        self.lock = threading.Lock()
        shop = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

            def do_GET(self) -> None:
                number = next(shop.counter)
                if self.path == "/" or (self.path.startswith("/product/") and number % 3 == 0):
                    with shop.lock:
                        shop.shed += 1
                    self._send(503, b"busy", {"Retry-After": "1", "x-boutique-shed": "concurrency-limit"})
                else:
                    self._send(200, b"<html>ok</html>")

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._send(302, b"", {"Location": "/cart"})

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                """Quiet: shoppers hang up when the run ends."""

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def shop() -> Iterator[SheddingShop]:
    server = SheddingShop()
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


def test_shed_requests_are_counted_apart_from_failures(shop: SheddingShop, tmp_path: Path) -> None:
    prefix = tmp_path / "stats"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOADGEN_") and k != "FRONTEND_URL"}
    command = [sys.executable, "-m", "boutique.cli", "load", "--url", shop.url, "--users", "4"]
    command += ["--spawn-rate", "4", "--duration", "6s", "--wait", "0-0.1", "--csv", str(prefix)]
    result = subprocess.run(
        command, env={**env, "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True, timeout=PROCESS_TIMEOUT
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output  # shed requests are not failures
    assert "Traceback" not in output
    with Path(f"{prefix}_stats.csv").open(newline="") as handle:
        rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(handle)}
    print({key: (row["Request Count"], row["Failure Count"]) for key, row in rows.items()})
    assert int(rows[("SHED", "/")]["Request Count"]) > 0
    assert int(rows[("SHED", "/product/[id]")]["Request Count"]) > 0
    assert int(rows[("GET", "/product/[id]")]["Request Count"]) > 0  # the others were served
    assert ("GET", "/") not in rows  # every home page was shed: none counts as a served GET
    assert all(int(row["Failure Count"]) == 0 for row in rows.values())
    shed_rows = sum(int(row["Request Count"]) for (kind, _), row in rows.items() if kind == "SHED")
    assert 0 < shed_rows <= shop.shed  # (a request cut off by the end of the run is in neither)
    assert "SHED" in output.split("Aggregated")[0]  # in the live table, not only in the files


def test_a_shed_is_a_503_with_a_retry_hint() -> None:
    assert retry_after(503, {"retry-after": "2"}) == 2.0
    assert retry_after(503, {"retry-after": "600"}) == 30.0  # capped
    assert retry_after(503, {"x-boutique-shed": "concurrency-limit"}) == 1.0
    assert retry_after(503, {"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"}) == 1.0
    assert retry_after(503, {}) is None  # a plain 503 (a dependency down) is a failure
    assert retry_after(200, {"retry-after": "2"}) is None
    assert retry_after(429, {"retry-after": "2"}) is None
